// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.packed_matmul over 4-bit codes [128 channels, 128 tokens], 4 warps.

!f32s = memref<512xf32, #gpu.address_space<workgroup>>
!codes = memref<128x64xi8, #gpu.address_space<workgroup>>
gpu.module @m {
  // Four query heads (getPackedMatmulLayout: 16-bit pieces of 4 codes, 16
  // sums a thread, the 32 column groups on the 32 lanes, K split across the
  // 4 warps, 32 rows a thread).
  // ROUNDTRIP-LABEL: gpu.func @four_heads
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}}, %{{.*}} bits 4 into %{{.*}} scratch %{{.*}} :
  // CHECK-LABEL: gpu.func @four_heads
  gpu.func @four_heads() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : !f32s
    %codes = kvgpu.shared_buffer 2048 : !codes
    %out = kvgpu.shared_buffer 10240 : !f32s
    %partials = kvgpu.shared_buffer 12288 : memref<1536xf32, #gpu.address_space<workgroup>>
    // The codes are read as i16 pieces of the same shared bytes.
    // CHECK: memref.view %{{.*}}[%{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<4096xi16, #gpu.address_space<workgroup>>
    // One row a loop iteration, 32 iterations, 16 sums carried.
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c32 step %c1 iter_args({{.*}}) -> (f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32) {
    // CHECK: memref.load %{{.*}} : memref<4096xi16
    // CHECK: arith.extui %{{.*}} : i16 to i32
    // Codes widened through the 2^23 magic number, no integer conversion.
    // CHECK: arith.ori %{{.*}}, %c1258291200_i32
    // CHECK: arith.bitcast %{{.*}} : i32 to f32
    // CHECK: arith.subf
    // CHECK-NOT: arith.uitofp
    // CHECK: llvm.intr.fma
    // CHECK: scf.yield
    // No lane splits: no shuffles. The first warp split writes out, the
    // other three their partials; after a barrier every thread adds them.
    // CHECK-NOT: gpu.shuffle
    // CHECK: gpu.barrier
    // CHECK: arith.addf
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %partials
        : !f32s, !codes, !f32s, memref<1536xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // One query head: 32-bit pieces of 8 codes, 16 column groups on 16 lanes,
  // K split 2 ways across lanes (one xor shuffle at lane distance 16 a sum)
  // and 4 across warps.
  // CHECK-LABEL: gpu.func @one_head
  gpu.func @one_head() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<128xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : !codes
    %out = kvgpu.shared_buffer 10240 : memref<128xf32, #gpu.address_space<workgroup>>
    %partials = kvgpu.shared_buffer 12288 : memref<384xf32, #gpu.address_space<workgroup>>
    // CHECK: to memref<2048xi32, #gpu.address_space<workgroup>>
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c16 step %c1
    // CHECK-COUNT-8: gpu.shuffle  xor %{{.*}}, %c16_i32, %c32_i32 : f32
    // CHECK-NOT: gpu.shuffle
    // CHECK: gpu.barrier
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %partials
        : memref<128xf32, #gpu.address_space<workgroup>>, !codes,
          memref<128xf32, #gpu.address_space<workgroup>>,
          memref<384xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
