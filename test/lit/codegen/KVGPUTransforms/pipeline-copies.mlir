// RUN: kvarn-opt %s --pass-pipeline='builtin.module(gpu.module(kvgpu-pipeline-copies))' | FileCheck %s

!rec = memref<1024xi8, #gpu.address_space<workgroup>>
!codes = memref<16x32xi8, #gpu.address_space<workgroup>>
!rows = memref<256xf16, #gpu.address_space<workgroup>>

module attributes {gpu.container_module} {
gpu.module @kernels {

// decode's block loop in small: the step's block id comes in as an
// iteration argument (looked up a step ahead), a record block's record is
// copied (1024 bytes at block * 1024), read, and the step ends with a
// barrier; a pool block copies rows instead. The record's copy moves to
// the step before: step 0's before the loop into slot 0, step k + 1's at
// the top of step k into slot (k + 1) % 2 (an empty group on the last
// step), the views after the copy become views of slot k % 2, the loop's
// prefetch of the next record goes, and the barriers no other copy
// precedes leave one group in flight. The ring (2 x 1024 bytes from 2048)
// keeps the 4 CTAs an SM planned.
// CHECK-LABEL: gpu.func @records
// CHECK-SAME: kvgpu.shared_bytes = 4096
// CHECK-SAME: nvvm.minctasm = 4
// CHECK: %[[ANY:.*]] = arith.cmpi slt, %[[LB:.*]], %[[UB:.*]] : i32
// CHECK-NEXT: scf.if %[[ANY]] {
// CHECK: %[[FIRST:.*]] = arith.muli %{{.*}}, %c1024_i64 : i64
// CHECK-NEXT: %[[SLOT0:.*]] = kvgpu.shared_buffer 2048 : memref<1024xi8
// CHECK-NEXT: kvgpu.copy_in %arg0[%[[FIRST]]] strides(%c1_i64) to %[[SLOT0]]
// CHECK: scf.for %[[K:.*]] = %[[LB]] to %[[UB]] step %c1_i32 iter_args(%[[BLOCK:.*]] = %{{.*}}, %[[NEXT:.*]] = %{{.*}})
// CHECK-NEXT: %[[K1:.*]] = arith.addi %[[K]], %c1_i32
// CHECK-NEXT: %[[STEPS:.*]] = arith.subi %[[K]], %[[LB]]
// CHECK: %[[PARITY:.*]] = arith.andi
// CHECK-NEXT: %[[SLOT:.*]] = arith.index_cast %[[PARITY]] : i32 to index
// CHECK-NEXT: %[[OTHER:.*]] = arith.xori %[[PARITY]]
// CHECK-NEXT: %[[NEXTSLOT:.*]] = arith.index_cast %[[OTHER]] : i32 to index
// CHECK-NEXT: %[[MORE:.*]] = arith.cmpi slt, %[[K1]], %[[UB]]
// CHECK-NEXT: scf.if %[[MORE]] {
// CHECK-NEXT: %[[N64:.*]] = arith.extsi %[[NEXT]] : i32 to i64
// CHECK-NEXT: %[[NOFF:.*]] = arith.muli %[[N64]], %c1024_i64
// CHECK-NEXT: %[[RING:.*]] = kvgpu.shared_buffer 2048 slot %[[NEXTSLOT]] of 1024 : memref<1024xi8
// CHECK-NEXT: kvgpu.copy_in %arg0[%[[NOFF]]] strides(%c1_i64) to %[[RING]]
// CHECK-NEXT: } else {
// CHECK-NEXT: kvgpu.commit_copies
// CHECK-NEXT: }
// CHECK-NOT: kvgpu.prefetch
// CHECK: scf.if
// The pool branch: its own copies keep their full waits, the barrier in
// front of them needs none.
// CHECK: kvgpu.barrier in_flight 1
// CHECK-NEXT: kvgpu.copy_in %arg1
// CHECK-NEXT: kvgpu.barrier{{$}}
// CHECK: kvgpu.barrier{{$}}
// CHECK: } else {
// CHECK-NOT: kvgpu.copy_in
// CHECK: %[[CODES:.*]] = kvgpu.shared_buffer 2048 slot %[[SLOT]] of 1024 : memref<16x32xi8
// CHECK-NEXT: %[[TAIL:.*]] = kvgpu.shared_buffer 2560 slot %[[SLOT]] of 1024 : memref<256xf16
// CHECK-NEXT: kvgpu.barrier in_flight 1
// CHECK: memref.load %[[CODES]]
// CHECK: memref.load %[[TAIL]]
// CHECK: kvgpu.barrier in_flight 1
gpu.func @records(%cache: !llvm.ptr<1>, %pool: !llvm.ptr<1>, %table: !llvm.ptr<1>,
                  %lb: i32, %ub: i32, %b0: i32, %b1: i32) kernel
    attributes {kvgpu.num_warps = 4 : i64, kvgpu.shared_bytes = 2000 : i64,
                nvvm.minctasm = 4 : i32} {
  %c1 = arith.constant 1 : i64
  %c2 = arith.constant 2 : i64
  %c4 = arith.constant 4 : i64
  %c1024 = arith.constant 1024 : i64
  %c0_i32 = arith.constant 0 : i32
  %c1_i32 = arith.constant 1 : i32
  %out = kvgpu.shared_buffer 1536 : memref<4xf16, #gpu.address_space<workgroup>>
  %r:2 = scf.for %k = %lb to %ub step %c1_i32 iter_args(%block = %b0, %next = %b1) -> (i32, i32) : i32 {
    %n64 = arith.extsi %next : i32 to i64
    %at = arith.muli %n64, %c4 : i64
    %later = kvgpu.global_load %table[%at] : i32
    %noff = arith.muli %n64, %c1024 : i64
    kvgpu.prefetch %cache[%noff] bytes 1024
    %inpool = arith.cmpi slt, %block, %c0_i32 : i32
    scf.if %inpool {
      %rows = kvgpu.shared_buffer 0 : !rows
      kvgpu.barrier
      kvgpu.copy_in %pool[%c1] strides(%c2) to %rows : !rows
      kvgpu.barrier
      kvgpu.foreach [4] (%i) {
        %x = memref.load %rows[%i] : !rows
        memref.store %x, %out[%i] : memref<4xf16, #gpu.address_space<workgroup>>
      }
      kvgpu.barrier
    } else {
      %b64 = arith.extsi %block : i32 to i64
      %off = arith.muli %b64, %c1024 : i64
      %rec = kvgpu.shared_buffer 0 : !rec
      kvgpu.copy_in %cache[%off] strides(%c1) to %rec : !rec
      kvgpu.barrier
      %codes = kvgpu.shared_buffer 0 : !codes
      %tail = kvgpu.shared_buffer 512 : !rows
      kvgpu.foreach [4] (%i) {
        %c = memref.load %codes[%i, %i] : !codes
        %t = memref.load %tail[%i] : !rows
        memref.store %t, %out[%i] : memref<4xf16, #gpu.address_space<workgroup>>
      }
      kvgpu.barrier
    }
    scf.yield %next, %later : i32, i32
  }
  gpu.return
}

// The offset is read from memory inside the step (not known a step
// ahead): left as it is.
// CHECK-LABEL: gpu.func @offset_loaded
// CHECK-SAME: kvgpu.shared_bytes = 2000
// CHECK: scf.for
// CHECK: kvgpu.copy_in %arg0
// CHECK-NEXT: kvgpu.barrier{{$}}
gpu.func @offset_loaded(%cache: !llvm.ptr<1>, %table: !llvm.ptr<1>, %lb: i32, %ub: i32) kernel
    attributes {kvgpu.num_warps = 4 : i64, kvgpu.shared_bytes = 2000 : i64,
                nvvm.minctasm = 4 : i32} {
  %c1 = arith.constant 1 : i64
  %c1024 = arith.constant 1024 : i64
  %c1_i32 = arith.constant 1 : i32
  scf.for %k = %lb to %ub step %c1_i32 : i32 {
    %k64 = arith.extsi %k : i32 to i64
    %id = kvgpu.global_load %table[%k64] : i64
    %off = arith.muli %id, %c1024 : i64
    %rec = kvgpu.shared_buffer 0 : !rec
    kvgpu.copy_in %cache[%off] strides(%c1) to %rec : !rec
    kvgpu.barrier
    kvgpu.foreach [4] (%i) {
      %x = memref.load %rec[%i] : !rec
    }
    kvgpu.barrier
  }
  gpu.return
}

// The ring would leave 2 CTAs an SM of the 4 planned: left as it is.
// CHECK-LABEL: gpu.func @too_large
// CHECK-SAME: kvgpu.shared_bytes = 70000
// CHECK: kvgpu.copy_in %arg0
// CHECK-NEXT: kvgpu.barrier{{$}}
gpu.func @too_large(%cache: !llvm.ptr<1>, %lb: i32, %ub: i32) kernel
    attributes {kvgpu.num_warps = 4 : i64, kvgpu.shared_bytes = 70000 : i64,
                nvvm.minctasm = 4 : i32} {
  %c1 = arith.constant 1 : i64
  %c16384 = arith.constant 16384 : i64
  %c1_i32 = arith.constant 1 : i32
  scf.for %k = %lb to %ub step %c1_i32 : i32 {
    %k64 = arith.extsi %k : i32 to i64
    %off = arith.muli %k64, %c16384 : i64
    %rec = kvgpu.shared_buffer 0 : memref<16384xi8, #gpu.address_space<workgroup>>
    kvgpu.copy_in %cache[%off] strides(%c1) to %rec : memref<16384xi8, #gpu.address_space<workgroup>>
    kvgpu.barrier
    kvgpu.foreach [4] (%i) {
      %x = memref.load %rec[%i] : memref<16384xi8, #gpu.address_space<workgroup>>
    }
    kvgpu.barrier
  }
  gpu.return
}

}
}
