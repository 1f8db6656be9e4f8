// RUN: kvarn-opt %s -split-input-file -kvt-select-launch -convert-kvt-to-kvgpu -verify-diagnostics

// expected-error @+1 {{needs 262144 bytes of shared memory; a CTA has at most 232448}}
func.func @too_much_shared(%p: !kvt.ptr<f32>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 512, gqa = 1>} {
  // The load stays in global memory (too large to stage); the rotation
  // needs its f32 copy in shared memory.
  %x = kvt.load_tile %p[%o] strides(%s, %s) : !kvt.ptr<f32> -> !kvt.tile<128x512xf32>
  %r = kvt.rotate %x : !kvt.tile<128x512xf32>
  kvt.store_tile %r, %p[%o] strides(%s, %s) : !kvt.tile<128x512xf32>, !kvt.ptr<f32>
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
