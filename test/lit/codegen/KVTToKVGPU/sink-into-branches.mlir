// RUN: kvarn-opt %s -pass-pipeline="builtin.module(func.func(kvt-sink-into-branches))" | FileCheck %s
// The users of a tile-valued scf.if go into both branches; the if then
// yields nothing, and the [4, 128] tile never needs a buffer of its own.

// CHECK-LABEL: func.func @pool_or_splat
// CHECK: scf.if %{{.*}} {
// CHECK:   kvt.load_tile
// CHECK:   kvt.convert %{{.*}} : !kvt.tile<4x128xf16> -> !kvt.tile<4x128xf32>
// CHECK:   kvt.convert %{{.*}} : !kvt.tile<4x128xf32> -> !kvt.tile<4x128xf16>
// CHECK:   kvt.store_tile
// CHECK: } else {
// CHECK:   kvt.splat
// CHECK:   kvt.convert %{{.*}} : !kvt.tile<4x128xf32> -> !kvt.tile<4x128xf16>
// CHECK:   kvt.store_tile
// CHECK: }
// CHECK-NEXT: return
func.func @pool_or_splat(%pool: !kvt.ptr<f16>, %n: i32, %o: i64, %s: i64, %x: f32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 4>} {
  %c = arith.cmpi sgt, %n, %n : i32
  %t = scf.if %c -> (!kvt.tile<4x128xf32>) {
    %h = kvt.load_tile %pool[%o] strides(%s, %s) : !kvt.ptr<f16> -> !kvt.tile<4x128xf16>
    %f = kvt.convert %h : !kvt.tile<4x128xf16> -> !kvt.tile<4x128xf32>
    scf.yield %f : !kvt.tile<4x128xf32>
  } else {
    %f = kvt.splat %x : !kvt.tile<4x128xf32>
    scf.yield %f : !kvt.tile<4x128xf32>
  }
  %h16 = kvt.convert %t : !kvt.tile<4x128xf32> -> !kvt.tile<4x128xf16>
  kvt.store_tile %h16, %pool[%o] strides(%s, %s) : !kvt.tile<4x128xf16>, !kvt.ptr<f16>
  return
}

// Outside a kvt.kernel nothing moves.
// CHECK-LABEL: func.func @not_a_kernel
// CHECK: %[[T:.*]] = scf.if
// CHECK: kvt.convert %[[T]]
func.func @not_a_kernel(%pool: !kvt.ptr<f16>, %c: i1, %o: i64, %s: i64, %x: f32) {
  %t = scf.if %c -> (!kvt.tile<4x128xf32>) {
    %f = kvt.splat %x : !kvt.tile<4x128xf32>
    scf.yield %f : !kvt.tile<4x128xf32>
  } else {
    %f = kvt.splat %x : !kvt.tile<4x128xf32>
    scf.yield %f : !kvt.tile<4x128xf32>
  }
  %h16 = kvt.convert %t : !kvt.tile<4x128xf32> -> !kvt.tile<4x128xf16>
  kvt.store_tile %h16, %pool[%o] strides(%s, %s) : !kvt.tile<4x128xf16>, !kvt.ptr<f16>
  return
}
