// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.packed_matmul: scores[h, t] = sum_d a[d, h] code[d, t] over 4-bit
// codes [128 channels, 128 tokens] for 4 query heads and 4 warps
// (getPackedMatmulLayout: 32-bit pieces of 8 codes, 16 column groups on 16
// lanes, K split 2 ways across lanes and 4 across warps, 16 rows a thread).

!f32s = memref<512xf32, #gpu.address_space<workgroup>>
gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @scores
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}}, %{{.*}} bits 4 into %{{.*}} scratch %{{.*}} :
  // CHECK-LABEL: gpu.func @scores
  gpu.func @scores() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : !f32s
    %codes = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 10240 : !f32s
    %partials = kvgpu.shared_buffer 12288 : memref<1536xf32, #gpu.address_space<workgroup>>
    // The codes are read as i32 pieces of the same shared bytes.
    // CHECK: memref.view %{{.*}}[%{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<2048xi32, #gpu.address_space<workgroup>>
    // One row a loop iteration, 16 iterations, 32 sums carried.
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c16 step %c1 iter_args(
    // CHECK: memref.load %{{.*}} : memref<2048xi32
    // Codes widened through the 2^23 magic number, no integer conversion.
    // CHECK: arith.ori %{{.*}}, %c1258291200_i32
    // CHECK: arith.bitcast %{{.*}} : i32 to f32
    // CHECK: arith.subf %{{.*}}, %cst
    // CHECK-NOT: arith.uitofp
    // CHECK: llvm.intr.fma
    // CHECK: scf.yield
    // The two lane splits meet by one xor shuffle (lane distance 16) a sum.
    // CHECK-COUNT-32: gpu.shuffle  xor %{{.*}}, %c16_i32, %c32_i32 : f32
    // CHECK-NOT: gpu.shuffle
    // The first warp split writes out, the other three their partials;
    // after a barrier every thread adds them.
    // CHECK: gpu.barrier
    // CHECK: arith.addf
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %partials
        : !f32s, memref<128x64xi8, #gpu.address_space<workgroup>>, !f32s,
          memref<1536xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
