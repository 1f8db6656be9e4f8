// RUN: kvarn-opt %s -pass-pipeline="builtin.module(func.func(kvt-sink-into-branches),kvt-select-launch,convert-kvt-to-kvgpu)" | FileCheck %s
// Tiles carried by scf.for live in fixed buffers (the yield copies into
// them); an scf.if whose tiles feed one pure op gets that op in each branch,
// so the branches yield its small results and the big tiles stay lazy.

// CHECK-LABEL: gpu.func @decode_like
// The loop-carried state: m, l [4] and acc [4, 128], initialized by copies.
// CHECK: %[[M:.*]] = kvgpu.shared_buffer {{.*}} : memref<4xf32
// CHECK: %[[L:.*]] = kvgpu.shared_buffer {{.*}} : memref<4xf32
// CHECK: %[[ACC:.*]] = kvgpu.shared_buffer {{.*}} : memref<4x128xf32
// CHECK: scf.for
// The sunk attend's results, carried out of the if in their own buffers,
// which do not overlap the loop's.
// CHECK-NOT: kvgpu.shared_buffer 0 :
// Pool branch: the fp16 rows staged, attended in registers.
// CHECK: scf.if
// CHECK: kvgpu.copy_in
// CHECK: kvgpu.attend_rows q
// CHECK: } else {
// Record branch: packed codes staged (8 KiB). The scores run on them in
// registers; V here is K's tile, quantized per channel (the transpose of a
// dequantized [D, G]), so its product takes the same bytes as
// packed_matmul's transposed operand ([N = channels, K = tokens]).
// CHECK: %[[CODES:.*]] = kvgpu.shared_buffer {{.*}} : memref<128x64xi8
// CHECK: kvgpu.packed_matmul %{{.*}}, %[[CODES]] bits 4 into
// CHECK-NOT: kvgpu.reduce <add> [512, 128]
// CHECK: kvgpu.packed_matmul %{{.*}}, %[[CODES]] bits 4 transposed into
// CHECK: }
// The yield copies into the carried buffers.
// CHECK: memref.store %{{.*}}, %[[ACC]]
// After the loop, attend_finish divides by the sums.
// CHECK: arith.divf
func.func @decode_like(%cache: !kvt.ptr<i8>, %pool: !kvt.ptr<f16>, %n: i32, %o: i64, %s: i64, %scale: f32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 4>} {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.0 : f32
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %nb = arith.index_cast %n : i32 to index
  %q0 = kvt.splat %scale : !kvt.tile<4x128xf32>
  %m0 = kvt.splat %ninf : !kvt.tile<4xf32>
  %l0 = kvt.splat %zero : !kvt.tile<4xf32>
  %a0 = kvt.splat %zero : !kvt.tile<4x128xf32>
  %valid = kvt.splat %n : !kvt.tile<4xi32>
  %m, %l, %acc = scf.for %i = %c0 to %nb step %c1 iter_args(%m1 = %m0, %l1 = %l0, %a1 = %a0)
      -> (!kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>) {
    %in_pool = arith.cmpi sgt, %n, %n : i32
    %k, %v = scf.if %in_pool -> (!kvt.tile<128x128xf32>, !kvt.tile<128x128xf32>) {
      %k16 = kvt.load_tile %pool[%o] strides(%s, %s) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
      %kf = kvt.convert %k16 : !kvt.tile<128x128xf16> -> !kvt.tile<128x128xf32>
      scf.yield %kf, %kf : !kvt.tile<128x128xf32>, !kvt.tile<128x128xf32>
    } else {
      %p = kvt.load_field %cache[%o] <k_codes> : !kvt.ptr<i8> -> !kvt.tile<128x64xi8>
      %c = kvt.unpack %p bits = 4 : !kvt.tile<128x64xi8>
      %sc = kvt.load_field %cache[%o] <k_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
      %z = kvt.load_field %cache[%o] <k_zero> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
      %t = kvt.load_field %cache[%o] <k_token_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
      %d = kvt.dequantize %c, %sc, %z, %t : !kvt.tile<128x128xi8>
      %dt = kvt.transpose %d : !kvt.tile<128x128xf32>
      scf.yield %dt, %dt : !kvt.tile<128x128xf32>, !kvt.tile<128x128xf32>
    }
    %m2, %l2, %a2 = kvt.attend %q0, %k, %v state(%m1, %l1, %a1) valid %valid scale %scale : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
    scf.yield %m2, %l2, %a2 : !kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>
  }
  %out, %lse = kvt.attend_finish %m, %l, %acc : !kvt.tile<4x128xf32>
  %o16 = kvt.convert %out : !kvt.tile<4x128xf32> -> !kvt.tile<4x128xf16>
  kvt.store_tile %o16, %pool[%o] strides(%s, %s) : !kvt.tile<4x128xf16>, !kvt.ptr<f16>
  return
}
