// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s
// Every kvt op round-trips through the printer and the parser.

// CHECK-LABEL: func.func @flush_tile
// CHECK-SAME: kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>
func.func @flush_tile(%pool: !kvt.ptr<f16>, %cache: !kvt.ptr<i8>, %slots: !kvt.ptr<i32>,
                      %base: i64, %row: i64, %one: i64, %rec: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  // CHECK: kvt.program_id 0
  %t = kvt.program_id 0
  // CHECK: kvt.num_programs 1
  %n = kvt.num_programs 1
  // CHECK: kvt.load %{{.*}}[%{{.*}}] : !kvt.ptr<i32>, i32
  %slot = kvt.load %slots[%t] : !kvt.ptr<i32>, i32
  // CHECK: kvt.load_tile %{{.*}}[%{{.*}}] strides(%{{.*}}, %{{.*}}) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
  %k16 = kvt.load_tile %pool[%base] strides(%row, %one) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
  // CHECK: kvt.prefetch %{{.*}}[%{{.*}}] bytes 32768 : !kvt.ptr<f16>
  kvt.prefetch %pool[%base] bytes 32768 : !kvt.ptr<f16>
  // CHECK: kvt.prefetch %{{.*}}[%{{.*}}] bytes 256 rows 128 stride %{{.*}} : !kvt.ptr<f16>
  kvt.prefetch %pool[%base] bytes 256 rows 128 stride %row : !kvt.ptr<f16>
  // CHECK: kvt.convert %{{.*}} : !kvt.tile<128x128xf16> -> !kvt.tile<128x128xf32>
  %k = kvt.convert %k16 : !kvt.tile<128x128xf16> -> !kvt.tile<128x128xf32>
  // CHECK: kvt.rotate %{{.*}} : !kvt.tile<128x128xf32>
  %kr = kvt.rotate %k : !kvt.tile<128x128xf32>
  // CHECK: kvt.rotate %{{.*}} inverse : !kvt.tile<128x128xf32>
  %ku = kvt.rotate %kr inverse : !kvt.tile<128x128xf32>
  // CHECK: kvt.transpose %{{.*}} : !kvt.tile<128x128xf32>
  %kt = kvt.transpose %ku : !kvt.tile<128x128xf32>
  // CHECK: kvt.normalize %{{.*}} iters = 8 : !kvt.tile<128x128xf32>
  %cs, %rs = kvt.normalize %kt iters = 8 : !kvt.tile<128x128xf32>
  // CHECK: kvt.quantize %{{.*}}, %{{.*}}, %{{.*}} bits = 4 : !kvt.tile<128x128xf32>
  %codes, %scale, %zero, %tok = kvt.quantize %kt, %cs, %rs bits = 4 : !kvt.tile<128x128xf32>
  // CHECK: kvt.pack %{{.*}} bits = 4 : !kvt.tile<128x128xi8>
  %packed = kvt.pack %codes bits = 4 : !kvt.tile<128x128xi8>
  // CHECK: kvt.store_field %{{.*}}, %{{.*}}[%{{.*}}] <k_codes> : !kvt.tile<128x64xi8>, !kvt.ptr<i8>
  kvt.store_field %packed, %cache[%rec] <k_codes> : !kvt.tile<128x64xi8>, !kvt.ptr<i8>
  kvt.store_field %scale, %cache[%rec] <k_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %zero, %cache[%rec] <k_zero> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %tok, %cache[%rec] <k_token_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  // CHECK: kvt.load_field %{{.*}}[%{{.*}}] <v_codes> : !kvt.ptr<i8> -> !kvt.tile<128x32xi8>
  %vp = kvt.load_field %cache[%rec] <v_codes> : !kvt.ptr<i8> -> !kvt.tile<128x32xi8>
  // CHECK: kvt.unpack %{{.*}} bits = 2 : !kvt.tile<128x32xi8>
  %vc = kvt.unpack %vp bits = 2 : !kvt.tile<128x32xi8>
  %vs = kvt.load_field %cache[%rec] <v_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  %vz = kvt.load_field %cache[%rec] <v_zero> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  %vch = kvt.load_field %cache[%rec] <v_channel_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  // CHECK: kvt.dequantize %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : !kvt.tile<128x128xi8>
  %v = kvt.dequantize %vc, %vs, %vz, %vch : !kvt.tile<128x128xi8>
  // CHECK: kvt.store_tile %{{.*}}, %{{.*}}[%{{.*}}] strides(%{{.*}}, %{{.*}}) : !kvt.tile<128x128xf16>, !kvt.ptr<f16>
  kvt.store_tile %k16, %pool[%base] strides(%row, %one) : !kvt.tile<128x128xf16>, !kvt.ptr<f16>
  // CHECK: kvt.store %{{.*}}, %{{.*}}[%{{.*}}] : !kvt.ptr<i32>, i32
  kvt.store %n, %slots[%t] : !kvt.ptr<i32>, i32
  return
}

// CHECK-LABEL: func.func @attend_block
func.func @attend_block(%q: !kvt.tile<4x128xf32>, %k: !kvt.tile<128x128xf32>,
                        %v: !kvt.tile<128x128xf32>, %len: i32, %scale: f32,
                        %parts: !kvt.tile<8x4x128xf32>, %lses: !kvt.tile<8x4xf32>, %count: i32)
    -> (!kvt.tile<4x128xf32>, !kvt.tile<4x128xf32>) {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.0 : f32
  // CHECK: kvt.splat %{{.*}} : !kvt.tile<4xf32>
  %m = kvt.splat %ninf : !kvt.tile<4xf32>
  %l = kvt.splat %zero : !kvt.tile<4xf32>
  %acc = kvt.splat %zero : !kvt.tile<4x128xf32>
  %valid = kvt.splat %len : !kvt.tile<4xi32>
  // CHECK: kvt.attend %{{.*}}, %{{.*}}, %{{.*}} state(%{{.*}}, %{{.*}}, %{{.*}}) valid %{{.*}} scale %{{.*}} : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  %m2, %l2, %acc2 = kvt.attend %q, %k, %v state(%m, %l, %acc) valid %valid scale %scale : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  // A sliding window's lower edge: rows see keys from <= t < valid.
  // CHECK: kvt.attend %{{.*}}, %{{.*}}, %{{.*}} state(%{{.*}}, %{{.*}}, %{{.*}}) valid %[[VALID:.*]] from %[[VALID]] scale %{{.*}} : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  %m3, %l3, %acc3 = kvt.attend %q, %k, %v state(%m, %l, %acc) valid %valid from %valid scale %scale : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  // CHECK: kvt.attend %{{.*}}, %{{.*}}, %{{.*}} state(%{{.*}}, %{{.*}}, %{{.*}}) valid %{{.*}} rope(%{{.*}}, %{{.*}}) scale %{{.*}} : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>, !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  %m4, %l4, %acc4 = kvt.attend %q, %k, %k state(%m, %l, %acc) valid %valid rope(%q, %v) scale %scale : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>, !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  // CHECK: kvt.attend_finish %{{.*}}, %{{.*}}, %{{.*}} : !kvt.tile<4x128xf32>
  %out, %lse = kvt.attend_finish %m2, %l2, %acc2 : !kvt.tile<4x128xf32>
  // CHECK: kvt.merge %{{.*}}, %{{.*}} count %{{.*}} : !kvt.tile<8x4x128xf32>, !kvt.tile<8x4xf32>
  %merged = kvt.merge %parts, %lses count %count : !kvt.tile<8x4x128xf32>, !kvt.tile<8x4xf32>
  return %out, %merged : !kvt.tile<4x128xf32>, !kvt.tile<4x128xf32>
}

// A preset with e4m3 scales: quantize rounds against them and gives f32
// scales, the scale fields read and write f32, dequantize takes them.
// CHECK-LABEL: func.func @e4m3_scales
func.func @e4m3_scales(%cache: !kvt.ptr<i8>, %rec: i64, %v: !kvt.tile<128x128xf32>,
                       %cs: !kvt.tile<128xf32>, %rs: !kvt.tile<128xf32>)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128_e4m3", head_dim = 128, gqa = 1>} {
  // CHECK: kvt.quantize %{{.*}}, %{{.*}}, %{{.*}} bits = 2 e4m3_scales : !kvt.tile<128x128xf32>
  %codes, %scale, %zero, %ch = kvt.quantize %v, %cs, %rs bits = 2 e4m3_scales : !kvt.tile<128x128xf32>
  // CHECK: kvt.store_field %{{.*}}, %{{.*}}[%{{.*}}] <v_scale> : !kvt.tile<128xf32>, !kvt.ptr<i8>
  kvt.store_field %scale, %cache[%rec] <v_scale> : !kvt.tile<128xf32>, !kvt.ptr<i8>
  kvt.store_field %zero, %cache[%rec] <v_zero> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %ch, %cache[%rec] <v_channel_scale> : !kvt.tile<128xf32>, !kvt.ptr<i8>
  // CHECK: kvt.load_field %{{.*}}[%{{.*}}] <v_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf32>
  %vs = kvt.load_field %cache[%rec] <v_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf32>
  %vz = kvt.load_field %cache[%rec] <v_zero> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  %vch = kvt.load_field %cache[%rec] <v_channel_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf32>
  // CHECK: kvt.dequantize %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : !kvt.tile<128x128xi8> scales f32
  %d = kvt.dequantize %codes, %vs, %vz, %vch : !kvt.tile<128x128xi8> scales f32
  return
}

// An MLA kernel's spec and record fields.
// CHECK-LABEL: func.func @mla_fields
// CHECK-SAME: kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 16, rope_dim = 64>
func.func @mla_fields(%p: !kvt.ptr<i8>, %o: i64)
    attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 16, rope_dim = 64>} {
  // CHECK: kvt.load_field %{{.*}}[%{{.*}}] <latent_codes> : !kvt.ptr<i8> -> !kvt.tile<128x256xi8>
  %c = kvt.load_field %p[%o] <latent_codes> : !kvt.ptr<i8> -> !kvt.tile<128x256xi8>
  %s = kvt.load_field %p[%o] <latent_scale> : !kvt.ptr<i8> -> !kvt.tile<512xf16>
  %z = kvt.load_field %p[%o] <latent_zero> : !kvt.ptr<i8> -> !kvt.tile<512xf16>
  %t = kvt.load_field %p[%o] <latent_token_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  // CHECK: kvt.load_field %{{.*}}[%{{.*}}] <rope> : !kvt.ptr<i8> -> !kvt.tile<128x64xf16>
  %r = kvt.load_field %p[%o] <rope> : !kvt.ptr<i8> -> !kvt.tile<128x64xf16>
  return
}
