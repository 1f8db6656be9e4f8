// RUN: kvarn-opt %s --pass-pipeline='builtin.module(gpu.module(kvgpu-eliminate-barriers))' | FileCheck %s

!buf = memref<128xf16, #gpu.address_space<workgroup>>

module attributes {gpu.container_module} {
gpu.module @kernels {

// Copies into disjoint buffers need no barrier between them; the barrier
// before the loop that reads one of them stays, and so does the closing one.
// CHECK-LABEL: gpu.func @disjoint_copies
// CHECK: kvgpu.copy_in
// CHECK-NEXT: kvgpu.copy_in
// CHECK-NEXT: kvgpu.barrier
// CHECK-NEXT: kvgpu.foreach
// CHECK: kvgpu.barrier
// CHECK-NEXT: gpu.return
gpu.func @disjoint_copies(%p: !llvm.ptr<1>, %o: i64) kernel {
  %c2 = arith.constant 2 : i64
  %a = kvgpu.shared_buffer 0 : !buf
  %b = kvgpu.shared_buffer 256 : !buf
  kvgpu.copy_in %p[%o] strides(%c2) to %a : !buf
  kvgpu.barrier
  kvgpu.copy_in %p[%o] strides(%c2) to %b : !buf
  kvgpu.barrier
  kvgpu.foreach [128] (%i) {
    %x = memref.load %a[%i] : !buf
    memref.store %x, %b[%i] : !buf
  }
  kvgpu.barrier
  gpu.return
}

// Overlapping bytes (a write, then a read of the last byte of it) keep the
// barrier; two reads of one buffer do not need one.
// CHECK-LABEL: gpu.func @overlap
// CHECK: kvgpu.copy_in
// CHECK-NEXT: kvgpu.barrier
// CHECK-NEXT: kvgpu.foreach
// CHECK-NOT: kvgpu.barrier
// CHECK: kvgpu.foreach
// CHECK: kvgpu.barrier
// CHECK-NEXT: gpu.return
gpu.func @overlap(%p: !llvm.ptr<1>, %o: i64) kernel {
  %c2 = arith.constant 2 : i64
  %a = kvgpu.shared_buffer 0 : !buf
  %tail = kvgpu.shared_buffer 255 : memref<1xi8, #gpu.address_space<workgroup>>
  %b = kvgpu.shared_buffer 256 : memref<128xi8, #gpu.address_space<workgroup>>
  %c = kvgpu.shared_buffer 384 : memref<128xi8, #gpu.address_space<workgroup>>
  kvgpu.copy_in %p[%o] strides(%c2) to %a : !buf
  kvgpu.barrier
  kvgpu.foreach [128] (%i) {
    %c0 = arith.constant 0 : index
    %x = memref.load %tail[%c0] : memref<1xi8, #gpu.address_space<workgroup>>
    memref.store %x, %b[%i] : memref<128xi8, #gpu.address_space<workgroup>>
  }
  kvgpu.barrier
  kvgpu.foreach [128] (%i) {
    %c0 = arith.constant 0 : index
    %x = memref.load %tail[%c0] : memref<1xi8, #gpu.address_space<workgroup>>
    memref.store %x, %c[%i] : memref<128xi8, #gpu.address_space<workgroup>>
  }
  kvgpu.barrier
  gpu.return
}

// In a loop, the next iteration's copy overwrites what this iteration read:
// the barrier closing the body stays, and the one at the top of the body
// stays too (the body's end reads the buffer the top writes).
// CHECK-LABEL: gpu.func @loop
// CHECK: scf.for
// CHECK-NEXT: kvgpu.copy_in
// CHECK-NEXT: kvgpu.barrier
// CHECK-NEXT: kvgpu.foreach
// CHECK: kvgpu.barrier
// CHECK-NEXT: }
gpu.func @loop(%p: !llvm.ptr<1>, %o: i64, %n: index) kernel {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : i64
  %a = kvgpu.shared_buffer 0 : !buf
  %b = kvgpu.shared_buffer 256 : !buf
  scf.for %it = %c0 to %n step %c1 {
    kvgpu.copy_in %p[%o] strides(%c2) to %a : !buf
    kvgpu.barrier
    kvgpu.foreach [128] (%i) {
      %x = memref.load %a[%i] : !buf
      memref.store %x, %b[%i] : !buf
    }
    kvgpu.barrier
  }
  gpu.return
}

// A prefetch (decode's next record, into L2) changes no value: the two
// copies after it still go out together, the barrier between them removed.
// CHECK-LABEL: gpu.func @prefetch_orders_nothing
// CHECK: kvgpu.prefetch
// CHECK-NEXT: kvgpu.copy_in
// CHECK-NEXT: kvgpu.copy_in
// CHECK-NEXT: kvgpu.barrier
gpu.func @prefetch_orders_nothing(%p: !llvm.ptr<1>, %o: i64) kernel {
  %c2 = arith.constant 2 : i64
  %a = kvgpu.shared_buffer 0 : !buf
  %b = kvgpu.shared_buffer 256 : !buf
  kvgpu.prefetch %p[%o] bytes 4096
  kvgpu.copy_in %p[%o] strides(%c2) to %a : !buf
  kvgpu.barrier
  kvgpu.copy_in %p[%o] strides(%c2) to %b : !buf
  kvgpu.barrier
  gpu.return
}

// A global store and a later global load of the same kernel: kept.
// CHECK-LABEL: gpu.func @global_order
// CHECK: kvgpu.global_store
// CHECK-NEXT: kvgpu.barrier
// CHECK-NEXT: kvgpu.global_load
gpu.func @global_order(%p: !llvm.ptr<1>, %o: i64) kernel {
  %x = arith.constant 1 : i32
  kvgpu.global_store %x, %p[%o] : i32
  kvgpu.barrier
  %y = kvgpu.global_load %p[%o] : i32
  kvgpu.global_store %y, %p[%o] : i32
  kvgpu.barrier
  gpu.return
}

}
}
