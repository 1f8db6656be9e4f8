// RUN: kvarn-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{a tile has rank 1 to 3, not 4}}
func.func private @rank4(!kvt.tile<2x2x2x2xf32>)

// -----

// expected-error @+1 {{tile element type must be f16, bf16, f32, i8 or i32, not 'f64'}}
func.func private @f64(!kvt.tile<4xf64>)

// -----

func.func @stride_count(%p: !kvt.ptr<f16>, %o: i64) {
  // expected-error @+1 {{needs one stride per tile dimension: 2 dimensions, 1 strides}}
  %t = kvt.load_tile %p[%o] strides(%o) : !kvt.ptr<f16> -> !kvt.tile<4x4xf16>
  return
}

// -----

func.func @pointee(%p: !kvt.ptr<f32>, %o: i64) {
  // expected-error @+1 {{pointer to 'f32' cannot access a tile of 'f16'}}
  %t = kvt.load_tile %p[%o] strides(%o) : !kvt.ptr<f32> -> !kvt.tile<4xf16>
  return
}

// -----

func.func @rotate_f16(%t: !kvt.tile<4x128xf16>) {
  // expected-error @+1 {{rotates f32 tiles; convert 'f16' first}}
  %r = kvt.rotate %t : !kvt.tile<4x128xf16>
  return
}

// -----

func.func @rotate_order(%t: !kvt.tile<4x100xf32>) {
  // expected-error @+1 {{no rotation of order 100: head_dim 100 is not supported}}
  %r = kvt.rotate %t : !kvt.tile<4x100xf32>
  return
}

// -----

func.func @normalize_rank(%t: !kvt.tile<128xf32>) {
  // expected-error @+1 {{input must have rank 2, got 1}}
  %c, %r = kvt.normalize %t iters = 8 : !kvt.tile<128xf32>
  return
}

// -----

func.func @quantize_bits(%t: !kvt.tile<4x8xf32>, %c: !kvt.tile<8xf32>, %r: !kvt.tile<4xf32>) {
  // expected-error @+1 {{bits must be 2, 4 or 8, got 3}}
  %q:4 = kvt.quantize %t, %c, %r bits = 3 : !kvt.tile<4x8xf32>
  return
}

// -----

func.func @pack_partial_byte(%c: !kvt.tile<4x6xi8>) {
  // expected-error @+1 {{a row of 6 codes does not fill whole bytes at 2 bits}}
  %p = kvt.pack %c bits = 2 : !kvt.tile<4x6xi8>
  return
}

// -----

func.func @convert_shape(%t: !kvt.tile<4xf16>) {
  // expected-error @+1 {{cannot change the shape}}
  %c = kvt.convert %t : !kvt.tile<4xf16> -> !kvt.tile<8xf32>
  return
}

// -----

func.func @convert_to_int(%t: !kvt.tile<4xf32>) {
  // expected-error @+1 {{unsupported conversion from 'f32' to 'i8'}}
  %c = kvt.convert %t : !kvt.tile<4xf32> -> !kvt.tile<4xi8>
  return
}

// -----

func.func @field_without_spec(%p: !kvt.ptr<i8>, %o: i64) {
  // expected-error @+1 {{needs an enclosing kernel with a 'kvt.spec' attribute}}
  %t = kvt.load_field %p[%o] <k_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  return
}

// -----

func.func @field_shape(%p: !kvt.ptr<i8>, %o: i64)
    attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g64", head_dim = 128, gqa = 1>} {
  // expected-error @+1 {{field k_token_scale of kvarn_k4v2_g64 at head_dim 128 is '!kvt.tile<64xf16>', not '!kvt.tile<128xf16>'}}
  %t = kvt.load_field %p[%o] <k_token_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  return
}

// -----

func.func @e4m3_field_is_f32(%p: !kvt.ptr<i8>, %o: i64, %s: !kvt.tile<128xf16>)
    attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g128_e4m3", head_dim = 128, gqa = 1>} {
  // expected-error @+1 {{field v_scale of kvarn_k4v2_g128_e4m3 at head_dim 128 is '!kvt.tile<128xf32>', not '!kvt.tile<128xf16>'}}
  kvt.store_field %s, %p[%o] <v_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  return
}

// -----

func.func @field_cache_type(%p: !kvt.ptr<f16>, %o: i64)
    attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  // expected-error @+1 {{record cache must be a !kvt.ptr<i8>}}
  %t = kvt.load_field %p[%o] <k_scale> : !kvt.ptr<f16> -> !kvt.tile<128xf16>
  return
}

// -----

// expected-error @+1 {{unknown preset 'kvarn_k8v8_g16'}}
func.func private @bad_preset() attributes {kvt.spec = #kvt.spec<"kvarn_k8v8_g16", head_dim = 128, gqa = 1>}

// -----

// expected-error @+1 {{head_dim 72 is not supported}}
func.func private @bad_head_dim() attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 72, gqa = 1>}

// -----

// expected-error @+1 {{rope_dim is for MLA presets; kvarn_k4v2_g128 is not one}}
func.func private @dense_rope_dim() attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1, rope_dim = 64>}

// -----

// expected-error @+1 {{MLA kernels need the rope key}}
func.func private @mla_without_rope() attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 16>}

// -----

// expected-error @+1 {{MLA kv_lora_rank 384 is not supported}}
func.func private @mla_rank() attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 384, gqa = 16, rope_dim = 64>}

// -----

// expected-error @+1 {{MLA query heads 129 are outside [1, 128]}}
func.func private @mla_heads() attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 129, rope_dim = 64>}

// -----

func.func @mla_field_in_dense_record(%p: !kvt.ptr<i8>, %o: i64)
    attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  // expected-error @+1 {{records of kvarn_k4v2_g128 have no field latent_scale (the latent_ fields and rope are MLA records')}}
  %t = kvt.load_field %p[%o] <latent_scale> : !kvt.ptr<i8> -> !kvt.tile<128xf16>
  return
}

// -----

func.func @dense_field_in_mla_record(%p: !kvt.ptr<i8>, %o: i64)
    attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 16, rope_dim = 64>} {
  // expected-error @+1 {{records of kvarn_mla_k4_g128 have no field k_scale (MLA records: latent_codes, latent_scale, latent_zero, latent_token_scale, rope)}}
  %t = kvt.load_field %p[%o] <k_scale> : !kvt.ptr<i8> -> !kvt.tile<512xf16>
  return
}

// -----

func.func @mla_field_shape(%p: !kvt.ptr<i8>, %o: i64)
    attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 512, gqa = 16, rope_dim = 64>} {
  // expected-error @+1 {{field latent_codes of kvarn_mla_k4_g128 at head_dim 512 is '!kvt.tile<128x256xi8>', not '!kvt.tile<512x64xi8>'}}
  %t = kvt.load_field %p[%o] <latent_codes> : !kvt.ptr<i8> -> !kvt.tile<512x64xi8>
  return
}

// -----

func.func @attend_rope_half(%q: !kvt.tile<4x128xf32>, %k: !kvt.tile<64x128xf32>,
                            %m: !kvt.tile<4xf32>, %acc: !kvt.tile<4x128xf32>,
                            %valid: !kvt.tile<4xi32>, %s: f32) {
  // expected-error @+1 {{needs both rope parts, q_rope and k_rope, or none}}
  %r:3 = "kvt.attend"(%q, %k, %k, %m, %m, %acc, %valid, %acc, %s) <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1>}> : (!kvt.tile<4x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>, !kvt.tile<4xi32>, !kvt.tile<4x128xf32>, f32) -> (!kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>)
  return
}

// -----

func.func @attend_rope_keys(%q: !kvt.tile<4x128xf32>, %k: !kvt.tile<64x128xf32>,
                            %m: !kvt.tile<4xf32>, %acc: !kvt.tile<4x128xf32>,
                            %valid: !kvt.tile<4xi32>, %qr: !kvt.tile<4x64xf32>,
                            %kr: !kvt.tile<32x64xf32>, %s: f32) {
  // expected-error @+1 {{k_rope must be an f32 tile [64, 64], got '!kvt.tile<32x64xf32>'}}
  %r:3 = kvt.attend %q, %k, %k state(%m, %m, %acc) valid %valid rope(%qr, %kr) scale %s : !kvt.tile<4x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<4x64xf32>, !kvt.tile<32x64xf32>
  return
}

// -----

func.func @attend_channels(%q: !kvt.tile<4x128xf32>, %k: !kvt.tile<64x64xf32>,
                           %m: !kvt.tile<4xf32>, %acc: !kvt.tile<4x128xf32>,
                           %valid: !kvt.tile<4xi32>, %s: f32) {
  // expected-error @+1 {{queries have 128 channels but keys have 64}}
  %r:3 = kvt.attend %q, %k, %k state(%m, %m, %acc) valid %valid scale %s : !kvt.tile<4x128xf32>, !kvt.tile<64x64xf32>
  return
}

// -----

func.func @program_axis() {
  // expected-error @+1 {{attribute 'axis' failed to satisfy constraint}}
  %p = kvt.program_id 3
  return
}

// -----

func.func @prefetch_nothing(%p: !kvt.ptr<i8>, %o: i64) {
  // expected-error @+1 {{attribute 'bytes' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  kvt.prefetch %p[%o] bytes 0 : !kvt.ptr<i8>
  return
}

// -----

func.func @prefetch_rows_without_stride(%p: !kvt.ptr<i8>, %o: i64) {
  // expected-error @+1 {{takes rows and stride together}}
  "kvt.prefetch"(%p, %o) {bytes = 256 : i64, rows = 128 : i64} : (!kvt.ptr<i8>, i64) -> ()
  return
}

// -----

func.func @attend_from_not_per_row(%q: !kvt.tile<4x128xf32>, %k: !kvt.tile<64x128xf32>,
                                   %m: !kvt.tile<4xf32>, %acc: !kvt.tile<4x128xf32>,
                                   %valid: !kvt.tile<4xi32>, %from: !kvt.tile<8xi32>, %s: f32) {
  // expected-error @+1 {{from is a per-row vector of q}}
  %r:3 = "kvt.attend"(%q, %k, %k, %m, %m, %acc, %valid, %from, %s) <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1>}> : (!kvt.tile<4x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>, !kvt.tile<4xi32>, !kvt.tile<8xi32>, f32) -> (!kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>)
  return
}

// -----

func.func @attend_from_not_i32(%q: !kvt.tile<4x128xf32>, %k: !kvt.tile<64x128xf32>,
                               %m: !kvt.tile<4xf32>, %acc: !kvt.tile<4x128xf32>,
                               %valid: !kvt.tile<4xi32>, %s: f32) {
  // expected-error @+1 {{from is a per-row vector of q}}
  %r:3 = "kvt.attend"(%q, %k, %k, %m, %m, %acc, %valid, %m, %s) <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1>}> : (!kvt.tile<4x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<64x128xf32>, !kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>, !kvt.tile<4xi32>, !kvt.tile<4xf32>, f32) -> (!kvt.tile<4xf32>, !kvt.tile<4xf32>, !kvt.tile<4x128xf32>)
  return
}

// -----

// A rank past 32 bits is not taken modulo 2^32.
// expected-error @+1 {{MLA kv_lora_rank 2147483647 is not supported}}
func.func private @mla_huge_rank() attributes {kvt.spec = #kvt.spec<"kvarn_mla_k4_g128", head_dim = 4294967808, gqa = 16, rope_dim = 64>}

// -----

// expected-error @+1 {{head_dim 2147483647 is not supported}}
func.func private @huge_head_dim() attributes {kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 4294967424, gqa = 1>}

// -----

func.func @split_plan_block_tokens(%s: !kvt.ptr<i32>, %n: i32) {
  // expected-error @+1 {{block_tokens must be in [1, 2^31), got 0}}
  %c, %r, %k = kvt.split_plan %s[%n] window %n program %n of %n block_tokens 0 max_chunks 64 : !kvt.ptr<i32>
  return
}

// -----

func.func @split_plan_max_chunks(%s: !kvt.ptr<i32>, %n: i32) {
  // expected-error @+1 {{max_chunks must be in [1, 2^31), got 2147483648}}
  %c, %r, %k = kvt.split_plan %s[%n] window %n program %n of %n block_tokens 128 max_chunks 2147483648 : !kvt.ptr<i32>
  return
}

// -----

func.func @split_plan_lengths(%s: !kvt.ptr<f32>, %n: i32) {
  // expected-error @+1 {{reads the context lengths as i32, not 'f32'}}
  %c, %r, %k = kvt.split_plan %s[%n] window %n program %n of %n block_tokens 128 max_chunks 64 : !kvt.ptr<f32>
  return
}
