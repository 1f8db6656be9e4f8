// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.mma_f16 is one mma.sync m16n8k16 (row A, col B, f16 operands, f32
// accumulators): each operand register reinterpreted as an f16 pair, the
// four sums back out as a vector; nothing else.

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @mma
  // ROUNDTRIP: kvgpu.mma_f16 %{{.*}}, %{{.*}}, %{{.*}} : vector<4xi32>, vector<2xi32>, vector<4xf32>
  // CHECK-LABEL: gpu.func @mma
  // CHECK-NOT: kvgpu.mma_f16
  // CHECK-COUNT-6: llvm.bitcast %{{.*}} : i32 to vector<2xf16>
  // CHECK: %[[D:.*]] = nvvm.mma.sync A[%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] B[%{{.*}}, %{{.*}}] C[%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>
  // CHECK-COUNT-4: llvm.extractvalue %[[D]]
  // CHECK: vector.from_elements
  // CHECK-NOT: nvvm.mma.sync
  gpu.func @mma(%a: vector<4xi32>, %b: vector<2xi32>, %acc: vector<4xf32>, %out: memref<4xf32>) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %d = kvgpu.mma_f16 %a, %b, %acc : vector<4xi32>, vector<2xi32>, vector<4xf32>
    %c0 = arith.constant 0 : index
    vector.store %d, %out[%c0] : memref<4xf32>, vector<4xf32>
    gpu.return
  }
}
