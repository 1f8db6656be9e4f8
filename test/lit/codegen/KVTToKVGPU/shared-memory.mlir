// RUN: kvarn-opt %s -kvt-select-launch -convert-kvt-to-kvgpu | FileCheck %s
// The planner reuses the bytes of tiles that are no longer needed, and views
// (convert, transpose) cost no shared memory.

// Two 32 KiB f16 tiles, the second loaded after the first is dead: both at
// offset 0. The transposed, widened view is read in place.
// CHECK-LABEL: gpu.func @reuse
// CHECK: kvgpu.shared_buffer 0 : memref<128x128xf16
// CHECK: kvgpu.reduce <max> [128, 128]
// CHECK: memref.load %{{.*}}[%{{.*}}, %{{.*}}] : memref<128x128xf16
// CHECK: kvgpu.shared_buffer 0 : memref<128x128xf16
func.func @reuse(%p: !kvt.ptr<f16>, %cache: !kvt.ptr<i8>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %a = kvt.load_tile %p[%o] strides(%s, %s) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
  %af = kvt.convert %a : !kvt.tile<128x128xf16> -> !kvt.tile<128x128xf32>
  %at = kvt.transpose %af : !kvt.tile<128x128xf32>
  %one = arith.constant 1.0 : f32
  %ones = kvt.splat %one : !kvt.tile<128xf32>
  %c, %sc, %z, %t = kvt.quantize %at, %ones, %ones bits = 4 : !kvt.tile<128x128xf32>
  kvt.store_field %sc, %cache[%o] <k_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  %b = kvt.load_tile %p[%s] strides(%s, %s) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
  kvt.store_tile %b, %p[%o] strides(%s, %s) : !kvt.tile<128x128xf16>, !kvt.ptr<f16>
  return
}

// Codes packed along the other dimension (an MLA record's token-major codes
// of a per-channel quantized tile) are packed through the transposed view,
// byte by byte, not copied into a transposed buffer first: the codes [64,
// 128] and the packed [128, 32] are the only i8 buffers.
// CHECK-LABEL: gpu.func @pack_transposed
// CHECK-NOT: kvgpu.pack_bits
// CHECK: kvgpu.shared_buffer {{[0-9]+}} : memref<64x128xi8
// CHECK-NOT: memref<128x64xi8
// CHECK: kvgpu.shared_buffer {{[0-9]+}} : memref<128x32xi8
// CHECK: kvgpu.foreach
// CHECK: arith.shli
// CHECK: arith.shli
// CHECK-NOT: kvgpu.pack_bits
func.func @pack_transposed(%p: !kvt.ptr<f16>, %out: !kvt.ptr<i8>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 64, gqa = 1>} {
  %a = kvt.load_tile %p[%o] strides(%s, %s) : !kvt.ptr<f16> -> !kvt.tile<64x128xf16>
  %af = kvt.convert %a : !kvt.tile<64x128xf16> -> !kvt.tile<64x128xf32>
  %one = arith.constant 1.0 : f32
  %cols = kvt.splat %one : !kvt.tile<128xf32>
  %rows = kvt.splat %one : !kvt.tile<64xf32>
  %c, %sc, %z, %t = kvt.quantize %af, %cols, %rows bits = 4 : !kvt.tile<64x128xf32>
  %ct = kvt.transpose %c : !kvt.tile<64x128xi8>
  %packed = kvt.pack %ct bits = 4 : !kvt.tile<128x64xi8>
  kvt.store_tile %packed, %out[%o] strides(%s, %s) : !kvt.tile<128x32xi8>, !kvt.ptr<i8>
  return
}
