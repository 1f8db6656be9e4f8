// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// Shared buffers are views of the dynamic shared memory; global copies
// move 16 bytes per access when the address and strides allow it (checked at
// run time), element by element otherwise. Copies into shared memory are
// asynchronous (cp.async.cg, then one commit), and every barrier of a
// function that copies in first waits for them.

gpu.module @m {
  // CHECK-LABEL: gpu.func @copy_in
  // CHECK: %[[SMEM:.*]] = gpu.dynamic_shared_memory
  // CHECK: memref.view %[[SMEM]][%c1024][]
  // CHECK: llvm.ptrtoint
  // CHECK: arith.andi %{{.*}}, %c15_i64
  // CHECK: scf.if
  // CHECK: memref.extract_aligned_pointer_as_index
  // CHECK: llvm.inttoptr %{{.*}} : i64 to !llvm.ptr<3>
  // CHECK: nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache = cg : !llvm.ptr<3>, !llvm.ptr<1>
  // CHECK-NOT: llvm.extractelement
  // CHECK: nvvm.cp.async.commit.group
  // CHECK: } else {
  // CHECK: llvm.load %{{.*}} : !llvm.ptr<1> -> f16
  // CHECK: nvvm.cp.async.wait.group 0
  // CHECK-NEXT: gpu.barrier
  gpu.func @copy_in(%p: !llvm.ptr<1>, %off: i64, %s0: i64, %s1: i64) kernel
      attributes {kvgpu.num_warps = 1 : i64} {
    %a = kvgpu.shared_buffer 1024 : memref<4x64xf16, #gpu.address_space<workgroup>>
    kvgpu.copy_in %p[%off] strides(%s0, %s1) to %a : memref<4x64xf16, #gpu.address_space<workgroup>>
    kvgpu.barrier
    gpu.return
  }

  // A ring slot is the view at offset + slot * N; a barrier that leaves a
  // group in flight waits with wait_group 1; commit_copies closes an empty
  // group.
  // CHECK-LABEL: gpu.func @ring
  // CHECK: %[[SMEM:.*]] = gpu.dynamic_shared_memory
  // CHECK: %[[SCALED:.*]] = arith.muli %arg2, %c1024
  // CHECK: %[[AT:.*]] = arith.addi %[[SCALED]], %c2048
  // CHECK: memref.view %[[SMEM]][%[[AT]]][]
  // CHECK: nvvm.cp.async.commit.group
  // CHECK: } else {
  // The scalar fallback closes a group too.
  // CHECK: nvvm.cp.async.commit.group
  // CHECK: }
  // CHECK: nvvm.cp.async.commit.group
  // CHECK-NEXT: nvvm.cp.async.wait.group 1
  // CHECK-NEXT: gpu.barrier
  // CHECK: nvvm.cp.async.wait.group 0
  // CHECK-NEXT: gpu.barrier
  gpu.func @ring(%p: !llvm.ptr<1>, %off: i64, %slot: index) kernel
      attributes {kvgpu.num_warps = 1 : i64} {
    %c1 = arith.constant 1 : i64
    %a = kvgpu.shared_buffer 2048 slot %slot of 1024 : memref<1024xi8, #gpu.address_space<workgroup>>
    kvgpu.copy_in %p[%off] strides(%c1) to %a : memref<1024xi8, #gpu.address_space<workgroup>>
    kvgpu.commit_copies
    kvgpu.barrier in_flight 1
    kvgpu.barrier
    gpu.return
  }

  // swizzled_rows: bytes [256, 768) are two 256-byte rows. The vector copy
  // takes one loop a span (before, in, after the region); the region's
  // chunks move by swizzled(low) - low, `low` their place in a swizzle
  // period (8 rows: 2048 bytes), rowSwizzle(row) << 4 XOR-ed into it. The
  // scalar copy moves each byte by a select against the plain one.
  // CHECK-LABEL: gpu.func @swizzled
  // CHECK: scf.for %{{.*}} = %{{.*}} to %c16 step %c32
  // CHECK: nvvm.cp.async.shared.global
  // CHECK: scf.for %{{.*}} = %{{.*}} to %c32 step %c32
  // CHECK: %[[LOW:.*]] = arith.remui %{{.*}}, %c2048
  // CHECK: arith.divui %[[LOW]], %c256
  // CHECK: %[[SWZ:.*]] = arith.xori %[[LOW]]
  // CHECK: arith.subi %[[SWZ]], %[[LOW]]
  // CHECK: nvvm.cp.async.shared.global
  // CHECK: scf.for %{{.*}} = %{{.*}} to %c16 step %c32
  // CHECK: arith.addi %{{.*}}, %c768
  // CHECK: nvvm.cp.async.shared.global
  // CHECK: } else {
  // CHECK: arith.xori
  // CHECK: arith.select
  // CHECK: memref.store
  gpu.func @swizzled(%p: !llvm.ptr<1>, %off: i64) kernel
      attributes {kvgpu.num_warps = 1 : i64} {
    %c1 = arith.constant 1 : i64
    %a = kvgpu.shared_buffer 0 : memref<1024xi8, #gpu.address_space<workgroup>>
    kvgpu.copy_in %p[%off] strides(%c1) to %a {swizzled_rows = array<i64: 256, 768, 256>} : memref<1024xi8, #gpu.address_space<workgroup>>
    kvgpu.barrier
    gpu.return
  }

  // Rows of 64 bytes, two a line: the line's chunks XOR lineSwizzle(line)
  // = 3 (line & 1) ^ ((line >> 1) & 1), a period of 4 lines (512 bytes).
  // CHECK-LABEL: gpu.func @swizzled_short_rows
  // CHECK: scf.for %{{.*}} = %{{.*}} to %c64 step %c32
  // CHECK: %[[LOW:.*]] = arith.remui %{{.*}}, %c512
  // CHECK: %[[LINE:.*]] = arith.shrui %[[LOW]], %c7
  // CHECK-DAG: arith.shrui %[[LINE]], %c1
  // CHECK-DAG: arith.andi %[[LINE]], %c1
  // CHECK: arith.muli %{{.*}}, %c3
  // CHECK: %[[SWZ:.*]] = arith.xori %[[LOW]]
  // CHECK: arith.subi %[[SWZ]], %[[LOW]]
  // CHECK: nvvm.cp.async.shared.global
  gpu.func @swizzled_short_rows(%p: !llvm.ptr<1>, %off: i64) kernel
      attributes {kvgpu.num_warps = 1 : i64} {
    %c1 = arith.constant 1 : i64
    %a = kvgpu.shared_buffer 0 : memref<1024xi8, #gpu.address_space<workgroup>>
    kvgpu.copy_in %p[%off] strides(%c1) to %a {swizzled_rows = array<i64: 0, 1024, 64>} : memref<1024xi8, #gpu.address_space<workgroup>>
    kvgpu.barrier
    gpu.return
  }

  // A prefetch of 13824 bytes (a k4v2 record at head_dim 128): 108 lines of
  // 128 bytes, thread t the lines t, t + 128, ... (one here), each one
  // prefetch.global.L2 (inline PTX: upstream's intrinsic needs PTX 8.0).
  // CHECK-LABEL: gpu.func @prefetch
  // CHECK: %[[TID:.*]] = gpu.thread_id x
  // CHECK: scf.for %[[LINE:.*]] = %[[TID]] to %c108 step %c128
  // CHECK: arith.muli %{{.*}}, %c128_i64
  // CHECK: %[[ADDR:.*]] = llvm.getelementptr
  // CHECK: %[[BITS:.*]] = llvm.ptrtoint %[[ADDR]] : !llvm.ptr<1> to i64
  // CHECK: llvm.inline_asm has_side_effects "prefetch.global.L2 [$0];", "l" %[[BITS]] : (i64) -> ()
  gpu.func @prefetch(%p: !llvm.ptr<1>, %off: i64) kernel
      attributes {kvgpu.num_warps = 4 : i64} {
    kvgpu.prefetch %p[%off] bytes 13824
    gpu.return
  }

  // 128 rows of 256 bytes, `stride` bytes apart (one KV head's rows of a
  // pool block): 256 lines numbered row by row, two a row; thread t the
  // lines t and t + 128, line k at stride * (k / 2) + 128 * (k mod 2).
  // CHECK-LABEL: gpu.func @prefetch_rows
  // CHECK: %[[TID:.*]] = gpu.thread_id x
  // CHECK: scf.for %[[LINE:.*]] = %[[TID]] to %c256 step %c128
  // CHECK: %[[K:.*]] = arith.index_cast %[[LINE]] : index to i64
  // CHECK: %[[ROW:.*]] = arith.divui %[[K]], %c2_i64
  // CHECK: arith.muli %[[ROW]], %arg2
  // CHECK: arith.remui %[[K]], %c2_i64
  // CHECK: arith.muli %{{.*}}, %c128_i64
  // CHECK: llvm.inline_asm has_side_effects "prefetch.global.L2 [$0];"
  gpu.func @prefetch_rows(%p: !llvm.ptr<1>, %off: i64, %stride: i64) kernel
      attributes {kvgpu.num_warps = 4 : i64} {
    kvgpu.prefetch %p[%off] bytes 256 rows 128 stride %stride
    gpu.return
  }

  // A scalar store is made by thread 0 alone.
  // CHECK-LABEL: gpu.func @store
  // CHECK: %[[TID:.*]] = gpu.thread_id x
  // CHECK: %[[FIRST:.*]] = arith.cmpi eq, %[[TID]], %c0
  // CHECK: scf.if %[[FIRST]]
  // CHECK: llvm.store
  gpu.func @store(%p: !llvm.ptr<1>, %off: i64, %v: i32) kernel
      attributes {kvgpu.num_warps = 1 : i64} {
    kvgpu.global_store %v, %p[%off] : i32
    gpu.return
  }
}
