// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.sinkhorn and kvgpu.quantize_tile hold the tile in registers; the
// in-register fwht pairs lanes with shuffles and has no barrier inside.

!tile = memref<128x128xf16, #gpu.address_space<workgroup>>
!vec = memref<128xf32, #gpu.address_space<workgroup>>
!half = memref<128xf16, #gpu.address_space<workgroup>>
!scratch = memref<4160xf32, #gpu.address_space<workgroup>>

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @sinkhorn
  // ROUNDTRIP: kvgpu.sinkhorn %{{.*}} transpose iters 8 into
  // ROUNDTRIP: kvgpu.quantize_tile %{{.*}} transpose scales %{{.*}}, %{{.*}} bits 4 into
  // CHECK-LABEL: gpu.func @sinkhorn
  // The tile is read once (16 x 16 threads of 8 x 8 elements)...
  // CHECK-COUNT-64: memref.load {{.*}} : memref<128x128xf16
  // ...then the iterations touch only the scratch buffer and the outputs.
  // CHECK: scf.for
  // CHECK-NOT: memref<128x128xf16
  // CHECK: gpu.shuffle xor
  // CHECK: gpu.barrier
  // CHECK: scf.yield
  gpu.func @sinkhorn() kernel attributes {kvgpu.num_warps = 8 : i64} {
    %m = kvgpu.shared_buffer 0 : !tile
    %c = kvgpu.shared_buffer 32768 : !vec
    %r = kvgpu.shared_buffer 33280 : !vec
    %s = kvgpu.shared_buffer 33792 : !scratch
    kvgpu.sinkhorn %m transpose iters 8 into %c, %r scratch %s : !tile, !vec, !vec, !scratch
    kvgpu.barrier
    %codes = kvgpu.shared_buffer 50432 : memref<128x128xi8, #gpu.address_space<workgroup>>
    %sc = kvgpu.shared_buffer 66816 : !half
    %z = kvgpu.shared_buffer 67072 : !half
    %o = kvgpu.shared_buffer 67328 : !half
    kvgpu.quantize_tile %m transpose scales %c, %r bits 4 into %codes, %sc, %z, %o scratch %s : !tile, !vec, !vec, memref<128x128xi8, #gpu.address_space<workgroup>>, !half, !half, !half, !scratch
    gpu.return
  }

  // CHECK-LABEL: gpu.func @fwht
  // CHECK-NOT: gpu.barrier
  // CHECK-COUNT-20: gpu.shuffle xor
  // CHECK-NOT: gpu.barrier
  // CHECK: gpu.return
  gpu.func @fwht() kernel attributes {kvgpu.num_warps = 1 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<1x128xf32, #gpu.address_space<workgroup>>
    kvgpu.fwht %a chunks 1 x 128 at 0 scale 0.0883883461 : memref<1x128xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
