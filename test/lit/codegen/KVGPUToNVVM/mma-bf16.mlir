// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.mma_bf16 is one mma.sync m16n8k16 (row A, col B, bf16 operands, f32
// accumulators): the fragments' registers in, the four sums back out as a
// vector; nothing else.

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @mma
  // ROUNDTRIP: kvgpu.mma_bf16 %{{.*}}, %{{.*}}, %{{.*}} : vector<4xi32>, vector<2xi32>, vector<4xf32>
  // CHECK-LABEL: gpu.func @mma
  // CHECK-NOT: kvgpu.mma_bf16
  // CHECK: %[[D:.*]] = nvvm.mma.sync A[%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] B[%{{.*}}, %{{.*}}] C[%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<bf16>, multiplicandBPtxType = #nvvm.mma_type<bf16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (i32, i32, f32) -> !llvm.struct<(f32, f32, f32, f32)>
  // CHECK-COUNT-4: llvm.extractvalue %[[D]]
  // CHECK: vector.from_elements
  // CHECK-NOT: nvvm.mma.sync
  gpu.func @mma(%a: vector<4xi32>, %b: vector<2xi32>, %acc: vector<4xf32>, %out: memref<4xf32>) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %d = kvgpu.mma_bf16 %a, %b, %acc : vector<4xi32>, vector<2xi32>, vector<4xf32>
    %c0 = arith.constant 0 : index
    vector.store %d, %out[%c0] : memref<4xf32>, vector<4xf32>
    gpu.return
  }
}
