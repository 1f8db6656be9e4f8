// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.f16_code_pair: the codes at `shift` of both 16-bit halves, OR-ed
// into 1024.0's mantissa, then 1024 subtracted: a shift (none at 0), one
// lop3 whose immediates are the two halves' mask and 0x64006400, and one
// f16x2 subtraction.

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @pairs
  // ROUNDTRIP: kvgpu.f16_code_pair %{{.*}} shift 0 bits 4 : i32
  // ROUNDTRIP: kvgpu.f16_code_pair %{{.*}} shift 12 bits 4 : i32
  // ROUNDTRIP: kvgpu.f16_code_pair %{{.*}} shift 6 bits 2 : i32
  // CHECK-LABEL: gpu.func @pairs
  // CHECK-NOT: kvgpu.f16_code_pair
  // Masks 0x000F000F (4-bit codes) and 0x00030003 (2-bit), 0x64006400.
  // CHECK: %[[K:.*]] = llvm.mlir.constant(dense<1.024000e+03> : vector<2xf16>)
  // Shift 0: no shift.
  // CHECK-NOT: arith.shrui
  // CHECK: %[[A:.*]] = llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %arg0, %c983055_i32, %c1677747200_i32 : (i32, i32, i32) -> i32
  // CHECK-NEXT: %[[AH:.*]] = llvm.bitcast %[[A]] : i32 to vector<2xf16>
  // CHECK-NEXT: %[[AC:.*]] = llvm.fsub %[[AH]], %[[K]] : vector<2xf16>
  // CHECK-NEXT: llvm.bitcast %[[AC]] : vector<2xf16> to i32
  // CHECK-NEXT: %[[S12:.*]] = arith.shrui %arg0, %c12_i32
  // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S12]], %c983055_i32, %c1677747200_i32
  // CHECK: %[[S6:.*]] = arith.shrui %arg0, %c6_i32
  // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S6]], %c196611_i32, %c1677747200_i32
  gpu.func @pairs(%pair: i32, %out: memref<3xi32>) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %a = kvgpu.f16_code_pair %pair shift 0 bits 4 : i32
    %b = kvgpu.f16_code_pair %pair shift 12 bits 4 : i32
    %c = kvgpu.f16_code_pair %pair shift 6 bits 2 : i32
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    memref.store %a, %out[%c0] : memref<3xi32>
    memref.store %b, %out[%c1] : memref<3xi32>
    memref.store %c, %out[%c2] : memref<3xi32>
    gpu.return
  }
}
