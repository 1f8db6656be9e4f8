// RUN: kvarn-opt %s -split-input-file -kvt-select-launch -convert-kvt-to-kvgpu | FileCheck %s
// kvt.rotate picks kvarn's rotation for the head_dim: one Walsh-Hadamard
// transform (Sylvester), chunked transforms plus a dense mix (Kronecker with
// a Paley matrix), or one transform per block (block-diagonal).

// CHECK-LABEL: gpu.func @sylvester
// (Two rows go through shared memory; one row stays in registers,
// register-rows.mlir.)
// The widening convert is a view: the rotation's copy reads f16 and extends.
// CHECK: kvgpu.foreach [2, 128]
// CHECK: arith.extf
// CHECK: kvgpu.fwht %{{.*}} chunks 1 x 128 at 0 scale 0.0883883461
// CHECK-NOT: kvgpu.dense_mix
// The narrowing convert is a view too: the store rounds as it writes.
// CHECK: kvgpu.foreach [2, 128]
// CHECK: arith.truncf
// CHECK: llvm.store
func.func @sylvester(%p: !kvt.ptr<f16>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%s, %s) : !kvt.ptr<f16> -> !kvt.tile<2x128xf16>
  %f = kvt.convert %x : !kvt.tile<2x128xf16> -> !kvt.tile<2x128xf32>
  %r = kvt.rotate %f : !kvt.tile<2x128xf32>
  %h = kvt.convert %r : !kvt.tile<2x128xf32> -> !kvt.tile<2x128xf16>
  kvt.store_tile %h, %p[%o] strides(%s, %s) : !kvt.tile<2x128xf16>, !kvt.ptr<f16>
  return
}

// -----

// 96 = paley1(12) x sylvester(8): twelve chunks of 8, then the 12x12 mix
// (transposed for the inverse).
// CHECK-LABEL: gpu.func @kronecker
// CHECK: kvgpu.fwht %{{.*}} chunks 12 x 8 at 0 scale 1.000000e+00
// CHECK: kvgpu.dense_mix %{{.*}} to %{{.*}} scale 0.102062076 matrix [1, 1, 1,
// CHECK: kvgpu.fwht %{{.*}} chunks 12 x 8 at 0 scale 1.000000e+00
// CHECK: kvgpu.dense_mix %{{.*}} to %{{.*}} transpose scale 0.102062076
func.func @kronecker(%p: !kvt.ptr<f32>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 96, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%s, %s) : !kvt.ptr<f32> -> !kvt.tile<2x96xf32>
  %r = kvt.rotate %x : !kvt.tile<2x96xf32>
  %u = kvt.rotate %r inverse : !kvt.tile<2x96xf32>
  kvt.store_tile %u, %p[%o] strides(%s, %s) : !kvt.tile<2x96xf32>, !kvt.ptr<f32>
  return
}

// -----

// 368 = 256 + 64 + 32 + 16, each block normalized by its own size.
// CHECK-LABEL: gpu.func @block_diagonal
// CHECK: kvgpu.fwht %{{.*}} chunks 1 x 256 at 0 scale 6.250000e-02
// CHECK: kvgpu.fwht %{{.*}} chunks 1 x 64 at 256 scale 1.250000e-01
// CHECK: kvgpu.fwht %{{.*}} chunks 1 x 32 at 320 scale 0.176776692
// CHECK: kvgpu.fwht %{{.*}} chunks 1 x 16 at 352 scale 2.500000e-01
func.func @block_diagonal(%p: !kvt.ptr<f32>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 368, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%s) : !kvt.ptr<f32> -> !kvt.tile<368xf32>
  %r = kvt.rotate %x : !kvt.tile<368xf32>
  kvt.store_tile %r, %p[%o] strides(%s) : !kvt.tile<368xf32>, !kvt.ptr<f32>
  return
}
