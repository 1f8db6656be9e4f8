// RUN: kvarn-opt %s -split-input-file -convert-kvt-to-kvgpu -verify-diagnostics

func.func @attend(%s: f32, %n: i32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 4>} {
  %q = kvt.splat %s : !kvt.tile<4x128xf32>
  %k = kvt.splat %s : !kvt.tile<128x128xf32>
  %m = kvt.splat %s : !kvt.tile<4xf32>
  %valid = kvt.splat %n : !kvt.tile<4xi32>
  // expected-error @+1 {{has no GPU lowering yet}}
  %r:3 = kvt.attend %q, %k, %k state(%m, %m, %q) valid %valid scale %s : !kvt.tile<4x128xf32>, !kvt.tile<128x128xf32>
  return
}

// -----

// expected-error @+1 {{needs 262144 bytes of shared memory; a CTA has at most 232448}}
func.func @too_much_shared(%p: !kvt.ptr<f32>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 512, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%s, %s) : !kvt.ptr<f32> -> !kvt.tile<128x512xf32>
  kvt.store_tile %x, %p[%o] strides(%s, %s) : !kvt.tile<128x512xf32>, !kvt.ptr<f32>
  return
}

// -----

func.func @tile_if(%p: !kvt.ptr<f32>, %o: i64, %s: i64, %n: i32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %zero = arith.constant 0 : i32
  %c = arith.cmpi sgt, %n, %zero : i32
  // expected-error @+1 {{on tiles is not supported by the GPU lowering yet}}
  %t = scf.if %c -> !kvt.tile<128xf32> {
    %x = kvt.load_tile %p[%o] strides(%s) : !kvt.ptr<f32> -> !kvt.tile<128xf32>
    scf.yield %x : !kvt.tile<128xf32>
  } else {
    %y = kvt.load_tile %p[%s] strides(%s) : !kvt.ptr<f32> -> !kvt.tile<128xf32>
    scf.yield %y : !kvt.tile<128xf32>
  }
  kvt.store_tile %t, %p[%o] strides(%s) : !kvt.tile<128xf32>, !kvt.ptr<f32>
  return
}

// -----

// expected-error @+1 {{kernel argument of type 'i1' is not a pointer, i32, i64 or f32}}
func.func @bool_arg(%c: i1) attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  return
}

// -----

// expected-error @+1 {{kernel lacks a 'kvt.spec' attribute}}
func.func @no_spec() attributes {kvt.kernel} {
  return
}
