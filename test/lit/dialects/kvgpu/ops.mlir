// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s
// Every kvgpu op round-trips.

!smem_t = memref<4x128xf32, #gpu.address_space<workgroup>>

// CHECK-LABEL: gpu.func @all_ops
gpu.module @m {
  gpu.func @all_ops(%p: !llvm.ptr<1>, %off: i64, %s0: i64, %s1: i64) kernel
      attributes {kvgpu.num_warps = 4 : i64} {
    // CHECK: kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %a = kvgpu.shared_buffer 0 : !smem_t
    %b = kvgpu.shared_buffer 2048 : !smem_t
    %h = kvgpu.shared_buffer 4096 : memref<4x128xf16, #gpu.address_space<workgroup>>
    %sum = kvgpu.shared_buffer 5120 : memref<4xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 5136 : memref<4x128xi8, #gpu.address_space<workgroup>>
    %packed = kvgpu.shared_buffer 5648 : memref<4x64xi8, #gpu.address_space<workgroup>>
    // CHECK: kvgpu.copy_in %{{.*}}[%{{.*}}] strides(%{{.*}}, %{{.*}}) to %{{.*}} : memref<4x128xf16
    kvgpu.copy_in %p[%off] strides(%s0, %s1) to %h : memref<4x128xf16, #gpu.address_space<workgroup>>
    // CHECK: kvgpu.barrier
    kvgpu.barrier
    // CHECK: kvgpu.barrier in_flight 1
    kvgpu.barrier in_flight 1
    // CHECK: kvgpu.commit_copies
    kvgpu.commit_copies
    // CHECK: kvgpu.shared_buffer 6144 slot %{{.*}} of 1024 : memref<1000xi8
    %slot = arith.constant 1 : index
    %ring = kvgpu.shared_buffer 6144 slot %slot of 1024 : memref<1000xi8, #gpu.address_space<workgroup>>
    // CHECK: kvgpu.prefetch %{{.*}}[%{{.*}}] bytes 13824
    kvgpu.prefetch %p[%off] bytes 13824
    // CHECK: kvgpu.prefetch %{{.*}}[%{{.*}}] bytes 256 rows 128 stride %{{.*}}
    kvgpu.prefetch %p[%off] bytes 256 rows 128 stride %off
    // CHECK: kvgpu.foreach [4, 128] (%{{.*}}, %{{.*}}) {
    kvgpu.foreach [4, 128] (%r, %c) {
      %x = memref.load %h[%r, %c] : memref<4x128xf16, #gpu.address_space<workgroup>>
      %y = arith.extf %x : f16 to f32
      memref.store %y, %a[%r, %c] : !smem_t
    }
    // CHECK: kvgpu.fwht %{{.*}} chunks 1 x 128 at 0 scale 0.0883883461
    kvgpu.fwht %a chunks 1 x 128 at 0 scale 0.0883883461 : !smem_t
    // CHECK: kvgpu.dense_mix %{{.*}} to %{{.*}} transpose scale 1.000000e+00 matrix [1, 1, 1, -1]
    kvgpu.dense_mix %a to %b transpose scale 1.0 matrix [1, 1, 1, -1] : !smem_t, !smem_t
    // CHECK: kvgpu.reduce <max> [4, 128] (%{{.*}}, %{{.*}}) into %{{.*}} : memref<4xf32
    kvgpu.reduce <max> [4, 128] (%r, %c) into %sum : memref<4xf32, #gpu.address_space<workgroup>> {
      %x = memref.load %b[%r, %c] : !smem_t
      kvgpu.yield %x : f32
    }
    // CHECK: kvgpu.pack_bits %{{.*}} to %{{.*}} bits 4
    kvgpu.pack_bits %codes to %packed bits 4 : memref<4x128xi8, #gpu.address_space<workgroup>>, memref<4x64xi8, #gpu.address_space<workgroup>>
    // CHECK: kvgpu.unpack_bits %{{.*}} to %{{.*}} bits 4
    kvgpu.unpack_bits %packed to %codes bits 4 : memref<4x64xi8, #gpu.address_space<workgroup>>, memref<4x128xi8, #gpu.address_space<workgroup>>
    // CHECK: kvgpu.copy_out %{{.*}} to %{{.*}}[%{{.*}}] strides(%{{.*}}, %{{.*}}) : memref<4x128xf16
    kvgpu.copy_out %h to %p[%off] strides(%s0, %s1) : memref<4x128xf16, #gpu.address_space<workgroup>>
    // CHECK: kvgpu.global_load %{{.*}}[%{{.*}}] : i32
    %v = kvgpu.global_load %p[%off] : i32
    // CHECK: kvgpu.global_store %{{.*}}, %{{.*}}[%{{.*}}] : i32
    kvgpu.global_store %v, %p[%off] : i32
    %f = arith.constant 1.0 : f32
    // CHECK: kvgpu.warp_reduce <add> %{{.*}} : f32
    %w = kvgpu.warp_reduce <add> %f : f32
    // CHECK: kvgpu.fragment_load %{{.*}}[%{{.*}}] stride %{{.*}} warp 3 : vector<4xf16>
    %row = kvgpu.fragment_load %p[%off] stride %s1 warp 3 : vector<4xf16>
    %wide = arith.extf %row : vector<4xf16> to vector<4xf32>
    // CHECK: kvgpu.fragment_fwht %{{.*}} scale 0.0883883461 warp 3 : vector<4xf32>
    %rot = kvgpu.fragment_fwht %wide scale 0.0883883461 warp 3 : vector<4xf32>
    // CHECK: kvgpu.fragment_store %{{.*}}, %{{.*}}[%{{.*}}] stride %{{.*}} warp 3 : vector<4xf32>
    kvgpu.fragment_store %rot, %p[%off] stride %s1 warp 3 : vector<4xf32>
    gpu.return
  }
}
