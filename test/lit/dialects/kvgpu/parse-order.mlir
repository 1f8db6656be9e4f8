// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s
// A kvgpu op whose pointer operand's type (!llvm.ptr<1>) is implicit in its
// assembly may come before any !llvm type of the file: the kvgpu dialect
// loads the LLVM dialect itself (parsing it used to crash).

// CHECK-LABEL: func.func @load_before_any_llvm_type
func.func @load_before_any_llvm_type(%o: i64) -> (i32, vector<4xf16>) {
  cf.br ^define
^use:
  // CHECK: kvgpu.global_load %{{.*}}[%{{.*}}] : i32
  %v = kvgpu.global_load %p[%o] : i32
  // CHECK: kvgpu.fragment_load %{{.*}}[%{{.*}}] stride %{{.*}} warp 0 : vector<4xf16>
  %row = kvgpu.fragment_load %p[%o] stride %o warp 0 : vector<4xf16>
  return %v, %row : i32, vector<4xf16>
^define:
  %p = llvm.mlir.zero : !llvm.ptr<1>
  cf.br ^use
}
