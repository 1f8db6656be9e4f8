// RUN: kvarn-opt %s -pass-pipeline='builtin.module(gpu.module(convert-scf-to-cf))' > %t.upstream
// RUN: kvarn-opt %s -pass-pipeline='builtin.module(gpu.module(kvarn-lower-scf-in-reverse))' > %t.reverse
// RUN: diff %t.upstream %t.reverse
// RUN: FileCheck %s < %t.reverse
// kvarn-lower-scf-in-reverse gives upstream convert-scf-to-cf's CFG, block
// for block: ifs in a row, ifs with results, loops carrying values, and
// ifs and loops nested in each other.

// CHECK-LABEL: gpu.func @k
// CHECK-NOT: scf.
// CHECK: gpu.return
gpu.module @m {
  gpu.func @k(%p: memref<64xf32>, %n: index, %c: i1) kernel {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %f0 = arith.constant 0.0 : f32
    %f1 = arith.constant 1.0 : f32
    scf.if %c {
      memref.store %f1, %p[%c0] : memref<64xf32>
    }
    scf.if %c {
      memref.store %f1, %p[%c1] : memref<64xf32>
    } else {
      memref.store %f0, %p[%c1] : memref<64xf32>
    }
    %sum = scf.for %i = %c0 to %n step %c1 iter_args(%acc = %f0) -> (f32) {
      %x = memref.load %p[%i] : memref<64xf32>
      %y = scf.if %c -> (f32) {
        %inner = scf.for %j = %c0 to %i step %c1 iter_args(%a = %x) -> (f32) {
          %z = arith.addf %a, %f1 : f32
          scf.yield %z : f32
        }
        scf.yield %inner : f32
      } else {
        scf.if %c {
          memref.store %x, %p[%i] : memref<64xf32>
        }
        scf.yield %x : f32
      }
      %s = arith.addf %acc, %y : f32
      scf.yield %s : f32
    }
    scf.if %c {
      memref.store %sum, %p[%c0] : memref<64xf32>
    }
    gpu.return
  }
}
