// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// Collective ops become thread- and warp-strided loops.

gpu.module @m {
  // 4 warps: 128 threads. foreach over 512 points: start at the thread
  // index, step 128.
  // CHECK-LABEL: gpu.func @foreach
  // CHECK: %[[TID:.*]] = gpu.thread_id x
  // CHECK: scf.for %[[P:.*]] = %[[TID]] to %c512 step %c128
  // CHECK: arith.remui %[[P]], %c128
  // CHECK: arith.divui %[[P]], %c128
  // CHECK: memref.store
  gpu.func @foreach() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    kvgpu.foreach [4, 128] (%r, %c) {
      %x = arith.constant 1.0 : f32
      memref.store %x, %a[%r, %c] : memref<4x128xf32, #gpu.address_space<workgroup>>
    }
    gpu.return
  }

  // Lanes along a row, a warp taking two adjacent rows at once (4 warps, 8
  // rows: rows 2w and 2w + 1, step 8), a lane's two columns of each in
  // straight-line code (all four loads in flight together), then five
  // butterfly shuffles a row and the stores by lane 0.
  // CHECK-LABEL: gpu.func @reduce
  // CHECK: scf.for %[[ROW:.*]] = %{{.*}} to %c8 step %c8
  // CHECK: %[[NEXT:.*]] = arith.addi %[[ROW]], %c1
  // CHECK-NOT: scf.for
  // (The first column's max with -inf folds away.)
  // CHECK: memref.load
  // CHECK: memref.load
  // CHECK: memref.load
  // CHECK: arith.maximumf
  // CHECK: memref.load
  // CHECK: arith.maximumf
  // CHECK-NOT: memref.load
  // CHECK-COUNT-10: gpu.shuffle  xor
  // CHECK: scf.if
  // CHECK: memref.store %{{.*}}, %{{.*}}[%[[ROW]]]
  // CHECK: memref.store %{{.*}}, %{{.*}}[%[[NEXT]]]
  gpu.func @reduce() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<8x64xf32, #gpu.address_space<workgroup>>
    %o = kvgpu.shared_buffer 2048 : memref<8xf32, #gpu.address_space<workgroup>>
    kvgpu.reduce <max> [8, 64] (%r, %c) into %o : memref<8xf32, #gpu.address_space<workgroup>> {
      %x = memref.load %a[%r, %c] : memref<8x64xf32, #gpu.address_space<workgroup>>
      kvgpu.yield %x : f32
    }
    gpu.return
  }

  // log2(16) = 4 butterfly stages in registers: chunks of 16 go to groups
  // of 4 lanes with 4 channels each, so stages 1 and 2 stay in a lane and
  // stages 4 and 8 shuffle (xor 1 and 2); no barrier between stages, the
  // scale folded into the last.
  // CHECK-LABEL: gpu.func @fwht
  // CHECK-NOT: gpu.barrier
  // CHECK: gpu.shuffle xor %{{.*}}, %c1_i32
  // CHECK: gpu.shuffle xor %{{.*}}, %c2_i32
  // CHECK: arith.mulf
  // CHECK-NOT: gpu.barrier
  // CHECK: gpu.return
  gpu.func @fwht() kernel attributes {kvgpu.num_warps = 1 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<2x16xf32, #gpu.address_space<workgroup>>
    kvgpu.fwht %a chunks 1 x 16 at 0 scale 0.25 : memref<2x16xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
