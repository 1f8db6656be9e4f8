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
