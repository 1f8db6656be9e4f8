// RUN: kvarn-opt %s -split-input-file -verify-diagnostics

// First in the file (a fresh context): an undefined pointer is an error, not
// a crash while building its implicit !llvm.ptr<1> type.
func.func @undefined_pointer(%o: i64) {
  // expected-error @+1 {{use of undeclared SSA value name}}
  %v = kvgpu.global_load %p[%o] : i32
  return
}

// -----

func.func @global_buffer() {
  // expected-error @+1 {{must be statically shaped memref in workgroup (shared) memory}}
  %a = kvgpu.shared_buffer 0 : memref<4xf32>
  return
}

// -----

func.func @misaligned() {
  // expected-error @+1 {{offset 2 is not aligned to the element size}}
  %a = kvgpu.shared_buffer 2 : memref<4xf32, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @slot_not_a_multiple_of_128(%s: index) {
  // expected-error @+1 {{slot bytes 1000 are not a multiple of 128}}
  %a = kvgpu.shared_buffer 0 slot %s of 1000 : memref<1000xi8, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @larger_than_its_slot(%s: index) {
  // expected-error @+1 {{buffer does not fit its slot}}
  %a = kvgpu.shared_buffer 0 slot %s of 128 : memref<256xi8, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @strides(%p: !llvm.ptr<1>, %o: i64) {
  %a = kvgpu.shared_buffer 0 : memref<4x4xf32, #gpu.address_space<workgroup>>
  // expected-error @+1 {{needs one byte stride per buffer dimension: 2 dimensions, 1 strides}}
  kvgpu.copy_in %p[%o] strides(%o) to %a : memref<4x4xf32, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @fwht_chunks() {
  %a = kvgpu.shared_buffer 0 : memref<2x96xf32, #gpu.address_space<workgroup>>
  // expected-error @+1 {{chunks end at channel 128, past the row's 96}}
  kvgpu.fwht %a chunks 1 x 128 at 0 scale 1.0 : memref<2x96xf32, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @fwht_length() {
  %a = kvgpu.shared_buffer 0 : memref<2x96xf32, #gpu.address_space<workgroup>>
  // expected-error @+1 {{chunk length 12 is not a power of two}}
  kvgpu.fwht %a chunks 8 x 12 at 0 scale 1.0 : memref<2x96xf32, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @mix_entries() {
  %a = kvgpu.shared_buffer 0 : memref<2x8xf32, #gpu.address_space<workgroup>>
  %b = kvgpu.shared_buffer 64 : memref<2x8xf32, #gpu.address_space<workgroup>>
  // expected-error @+1 {{matrix entries must be +1 or -1}}
  kvgpu.dense_mix %a to %b scale 1.0 matrix [1, 0, 1, -1] : memref<2x8xf32, #gpu.address_space<workgroup>>, memref<2x8xf32, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @pack_width() {
  %c = kvgpu.shared_buffer 0 : memref<2x8xi8, #gpu.address_space<workgroup>>
  %p = kvgpu.shared_buffer 16 : memref<2x8xi8, #gpu.address_space<workgroup>>
  // expected-error @+1 {{a row of 8 codes packs into 4 bytes, not 8}}
  kvgpu.pack_bits %c to %p bits 4 : memref<2x8xi8, #gpu.address_space<workgroup>>, memref<2x8xi8, #gpu.address_space<workgroup>>
  return
}

// -----

func.func @reduce_out() {
  %o = kvgpu.shared_buffer 0 : memref<3xf32, #gpu.address_space<workgroup>>
  // expected-error @+1 {{result buffer must be memref<4xf32> in shared memory}}
  kvgpu.reduce <add> [4, 8] (%r, %c) into %o : memref<3xf32, #gpu.address_space<workgroup>> {
    %x = arith.constant 1.0 : f32
    kvgpu.yield %x : f32
  }
  return
}

// -----

gpu.module @m {
  gpu.func @fragment_warp(%p: !llvm.ptr<1>, %o: i64) kernel
      attributes {kvgpu.num_warps = 2 : i64} {
    // expected-error @+1 {{warp 2 is not one of the program's 2}}
    %r = kvgpu.fragment_load %p[%o] stride %o warp 2 : vector<4xf16>
    gpu.return
  }
}

// -----

func.func @fragment_fwht_length(%x: vector<3xf32>) {
  // expected-error @+1 {{row of 32 x 3 channels is not a power of two}}
  %r = kvgpu.fragment_fwht %x scale 1.0 warp 0 : vector<3xf32>
  return
}

// -----

func.func @fragment_elements(%p: !llvm.ptr<1>, %o: i64) {
  // expected-error @+1 {{holds 1 to 32 elements per lane, got 'vector<64xf16>'}}
  %r = kvgpu.fragment_load %p[%o] stride %o warp 0 : vector<64xf16>
  return
}

// -----

func.func @fragment_type(%p: !llvm.ptr<1>, %o: i64) {
  // expected-error @+1 {{must be vector of 16-bit float or bfloat16 type or 32-bit float values}}
  %r = kvgpu.fragment_load %p[%o] stride %o warp 0 : vector<4xi32>
  return
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_shapes() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<512xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 10240 : memref<256xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 12288 : memref<1536xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{out has 256 elements; [H, N] is 512}}
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %p : memref<512xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, memref<256xf32, #gpu.address_space<workgroup>>, memref<1536xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_scale_length() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<512xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 10240 : memref<512xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 12288 : memref<1536xf32, #gpu.address_space<workgroup>>
    %s = kvgpu.shared_buffer 20480 : memref<64xf16, #gpu.address_space<workgroup>>
    // expected-error @+1 {{scaled_by takes an f16 or f32 buffer of K = 128 elements}}
    kvgpu.packed_matmul %a head_major scaled_by %s, %codes bits 4 into %out scratch %p : memref<512xf32, #gpu.address_space<workgroup>> scaled_by memref<64xf16, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, memref<512xf32, #gpu.address_space<workgroup>>, memref<1536xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_scratch() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<480xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : memref<120x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 10240 : memref<512xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 12288 : memref<16xf32, #gpu.address_space<workgroup>>
    // 120 rows are no whole k tiles: the fma layout, with cross-warp partials.
    // expected-error @+1 {{scratch has 16 floats; the layout needs 1536}}
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %p : memref<480xf32, #gpu.address_space<workgroup>>, memref<120x64xi8, #gpu.address_space<workgroup>>, memref<512xf32, #gpu.address_space<workgroup>>, memref<16xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_transposed_no_layout() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<960xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 4096 : memref<128x60xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 12288 : memref<1024xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 16384 : memref<1024xf32, #gpu.address_space<workgroup>>
    // Transposed codes have no fma strategy: K = 120 is no whole k tiles.
    // expected-error @+1 {{no transposed packed layout for H = 8, K = 120, N = 128 over 128 threads}}
    kvgpu.packed_matmul %a, %codes bits 4 transposed into %out scratch %p : memref<960xf32, #gpu.address_space<workgroup>>, memref<128x60xi8, #gpu.address_space<workgroup>>, memref<1024xf32, #gpu.address_space<workgroup>>, memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_transposed_one_bit() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<1024xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 4096 : memref<128x16xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 12288 : memref<1024xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 16384 : memref<1024xf32, #gpu.address_space<workgroup>>
    // A lane's piece of a column is 4 codes: 1-bit codes have none.
    // expected-error @+1 {{no transposed packed layout for H = 8, K = 128, N = 128 over 128 threads}}
    kvgpu.packed_matmul %a, %codes bits 1 transposed into %out scratch %p : memref<1024xf32, #gpu.address_space<workgroup>>, memref<128x16xi8, #gpu.address_space<workgroup>>, memref<1024xf32, #gpu.address_space<workgroup>>, memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_f16_not_transposed() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<512xf32, #gpu.address_space<workgroup>>
    %rows = kvgpu.shared_buffer 2048 : memref<128x64xf16, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 18432 : memref<1024xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 22528 : memref<512xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{f16 values are transposed rows [N, K], bits 16}}
    kvgpu.packed_matmul %a, %rows bits 16 into %out scratch %p : memref<512xf32, #gpu.address_space<workgroup>>, memref<128x64xf16, #gpu.address_space<workgroup>>, memref<1024xf32, #gpu.address_space<workgroup>>, memref<512xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_codes_bits_16() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<512xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : memref<128x128xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 18432 : memref<1024xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 22528 : memref<512xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{bits must divide 8, not 16}}
    kvgpu.packed_matmul %a, %codes bits 16 transposed into %out scratch %p : memref<512xf32, #gpu.address_space<workgroup>>, memref<128x128xi8, #gpu.address_space<workgroup>>, memref<1024xf32, #gpu.address_space<workgroup>>, memref<512xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @packed_matmul_bits() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<384xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : memref<96x48xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 10240 : memref<512xf32, #gpu.address_space<workgroup>>
    %p = kvgpu.shared_buffer 12288 : memref<16xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{bits must divide 8, not 3}}
    kvgpu.packed_matmul %a, %codes bits 3 into %out scratch %p : memref<384xf32, #gpu.address_space<workgroup>>, memref<96x48xi8, #gpu.address_space<workgroup>>, memref<512xf32, #gpu.address_space<workgroup>>, memref<16xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

!f16x128 = memref<128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  gpu.func @attend_record_scratch(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %s = kvgpu.shared_buffer 10240 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 15872 : memref<4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 15904 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 20032 : memref<3000xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{scratch has 3000 floats; the layout needs 3256}}
    kvgpu.attend_record q %q keys %kc bits 4 scales %s, %s, %s values %vc bits 2 scales %s, %s, %s state %m, %m, %acc valid %valid softmax_scale %scale into %m, %m, %acc scratch %scratch : memref<4x128xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<3000xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

// With warp_states the state is one row per warp: [4 warps, 4 heads] here,
// not [4].
!f16x128 = memref<128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  gpu.func @attend_record_warp_states(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %s = kvgpu.shared_buffer 10240 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 15872 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 15936 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 20032 : memref<3192xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{acc must have W x H x D = 2048 elements}}
    kvgpu.attend_record q %q keys %kc bits 4 scales %s, %s, %s values %vc bits 2 scales %s, %s, %s state %m, %m, %acc valid %valid softmax_scale %scale into %m, %m, %acc scratch %scratch warp_states : memref<4x128xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<3192xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

!f16x128 = memref<128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  gpu.func @attend_record_heads(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<16x128xf32, #gpu.address_space<workgroup>>
    %kc = kvgpu.shared_buffer 8192 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %s = kvgpu.shared_buffer 16384 : !f16x128
    %vc = kvgpu.shared_buffer 16640 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 20736 : memref<16xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 20800 : memref<16x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 28992 : memref<8192xf32, #gpu.address_space<workgroup>>
    // Sixteen heads are more than one MMA's N (8).
    // expected-error @+1 {{no register layout for H = 16, D = 128, G = 128, 4/2 bits over 128 threads}}
    kvgpu.attend_record q %q keys %kc bits 4 scales %s, %s, %s values %vc bits 2 scales %s, %s, %s state %m, %m, %acc valid %valid softmax_scale %scale into %m, %m, %acc scratch %scratch : memref<16x128xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<16xf32, #gpu.address_space<workgroup>>, memref<16xf32, #gpu.address_space<workgroup>>, memref<16x128xf32, #gpu.address_space<workgroup>>, memref<16xf32, #gpu.address_space<workgroup>>, memref<16xf32, #gpu.address_space<workgroup>>, memref<16x128xf32, #gpu.address_space<workgroup>>, memref<8192xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

!f16x128 = memref<128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  gpu.func @attend_record_values(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %s = kvgpu.shared_buffer 10240 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<64x32xi8, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 15872 : memref<4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 15904 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 20032 : memref<3192xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{v_codes must be [G, D * v_bits / 8] = [128, 32]}}
    kvgpu.attend_record q %q keys %kc bits 4 scales %s, %s, %s values %vc bits 2 scales %s, %s, %s state %m, %m, %acc valid %valid softmax_scale %scale into %m, %m, %acc scratch %scratch : memref<4x128xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<64x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<3192xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

// A code pair must stay inside each 16-bit half of the register.
func.func @codes_leave_the_half(%pair: i32) -> i32 {
  // expected-error @+1 {{codes at bit 14 of 4 bits leave a 16-bit half (shift + bits must be <= 16)}}
  %r = kvgpu.biased_code_pair %pair shift 14 bits 4 : i32
  return %r : i32
}

// -----

// 128.0's mantissa holds codes of at most 7 bits.
func.func @codes_too_wide(%pair: i32) -> i32 {
  // expected-error @+1 {{attribute 'bits' failed to satisfy constraint}}
  %r = kvgpu.biased_code_pair %pair shift 0 bits 8 : i32
  return %r : i32
}

// -----

// The operands are the m16n8k16 fragments: 4 A registers, 2 B, 4 sums.
func.func @mma_fragment_sizes(%a: vector<2xi32>, %b: vector<2xi32>, %acc: vector<4xf32>) -> vector<4xf32> {
  // expected-error @+1 {{operand #0 must be vector of 32-bit signless integer values of length 4}}
  %d = kvgpu.mma_bf16 %a, %b, %acc : vector<2xi32>, vector<2xi32>, vector<4xf32>
  return %d : vector<4xf32>
}

// -----

// ldmatrix moves 16-bit elements: the rows are a 1-D buffer of them.
func.func @matrix_of_bytes(%rows: memref<64xi8, #gpu.address_space<workgroup>>, %i: index) -> vector<4xi32> {
  // expected-error @+1 {{rows are a 1-D buffer of 16-bit elements}}
  %r = kvgpu.load_matrix %rows[%i] transpose : memref<64xi8, #gpu.address_space<workgroup>> -> vector<4xi32>
  return %r : vector<4xi32>
}

// -----

!rows = memref<64x128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  gpu.func @attend_rows_scratch(%n: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %k = kvgpu.shared_buffer 2048 : !rows
    %m = kvgpu.shared_buffer 34816 : memref<4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 34848 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 36896 : memref<3000xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{scratch has 3000 floats; the layout needs 3248}}
    kvgpu.attend_rows q %q keys %k values %k state %m, %m, %acc from %n valid %n softmax_scale %scale into %m, %m, %acc scratch %scratch : memref<4x128xf32, #gpu.address_space<workgroup>>, !rows, !rows, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<3000xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @attend_rows_tokens(%n: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %k = kvgpu.shared_buffer 2048 : memref<40x128xf16, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 34816 : memref<4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 34848 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 36896 : memref<4096xf32, #gpu.address_space<workgroup>>
    // Tokens come in tiles of 16.
    // expected-error @+1 {{no register layout for H = 4, D = 128, T = 40 over 128 threads}}
    kvgpu.attend_rows q %q keys %k values %k state %m, %m, %acc from %n valid %n softmax_scale %scale into %m, %m, %acc scratch %scratch : memref<4x128xf32, #gpu.address_space<workgroup>>, memref<40x128xf16, #gpu.address_space<workgroup>>, memref<40x128xf16, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4096xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @attend_rows_bf16(%n: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %k = kvgpu.shared_buffer 2048 : memref<64x128xbf16, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 34816 : memref<4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 34848 : memref<4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 36896 : memref<4096xf32, #gpu.address_space<workgroup>>
    // expected-error @+1 {{keys and values must be f16 rows of D = 128 elements, as many of each}}
    kvgpu.attend_rows q %q keys %k values %k state %m, %m, %acc from %n valid %n softmax_scale %scale into %m, %m, %acc scratch %scratch : memref<4x128xf32, #gpu.address_space<workgroup>>, memref<64x128xbf16, #gpu.address_space<workgroup>>, memref<64x128xbf16, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4xf32, #gpu.address_space<workgroup>>, memref<4x128xf32, #gpu.address_space<workgroup>>, memref<4096xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

#s = #gpu.address_space<workgroup>
gpu.module @m {
  gpu.func @attend_latent_scratch(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x256xf32, #s>
    %qr = kvgpu.shared_buffer 4096 : memref<4x32xf16, #s>
    %codes = kvgpu.shared_buffer 4352 : memref<64x128xi8, #s>
    %cs = kvgpu.shared_buffer 12544 : memref<256xf16, #s>
    %cz = kvgpu.shared_buffer 13056 : memref<256xf16, #s>
    %ct = kvgpu.shared_buffer 13568 : memref<64xf16, #s>
    %rope = kvgpu.shared_buffer 13696 : memref<64x32xf16, #s>
    %m = kvgpu.shared_buffer 17792 : memref<4xf32, #s>
    %l = kvgpu.shared_buffer 17808 : memref<4xf32, #s>
    %acc = kvgpu.shared_buffer 17824 : memref<4x256xf32, #s>
    %scratch = kvgpu.shared_buffer 21920 : memref<2000xf32, #s>
    // expected-error @+1 {{scratch has 2000 floats; the layout needs 2344}}
    kvgpu.attend_latent q %q, %qr latent %codes bits 4 scales %cs, %cz, %ct rope %rope state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<4x256xf32, #s>, memref<4x32xf16, #s>, memref<64x128xi8, #s>, memref<256xf16, #s>, memref<256xf16, #s>, memref<64xf16, #s>, memref<64x32xf16, #s>, memref<4xf32, #s>, memref<4xf32, #s>, memref<4x256xf32, #s>, memref<4xf32, #s>, memref<4xf32, #s>, memref<4x256xf32, #s>, memref<2000xf32, #s>
    gpu.return
  }

  // Heads go 8 to a column tile, at most two tiles.
  gpu.func @attend_latent_heads(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<17x256xf32, #s>
    %qr = kvgpu.shared_buffer 17408 : memref<17x32xf16, #s>
    %codes = kvgpu.shared_buffer 18496 : memref<64x128xi8, #s>
    %cs = kvgpu.shared_buffer 26688 : memref<256xf16, #s>
    %cz = kvgpu.shared_buffer 27200 : memref<256xf16, #s>
    %ct = kvgpu.shared_buffer 27712 : memref<64xf16, #s>
    %rope = kvgpu.shared_buffer 27840 : memref<64x32xf16, #s>
    %m = kvgpu.shared_buffer 31936 : memref<17xf32, #s>
    %l = kvgpu.shared_buffer 32064 : memref<17xf32, #s>
    %acc = kvgpu.shared_buffer 32192 : memref<17x256xf32, #s>
    %scratch = kvgpu.shared_buffer 49600 : memref<8000xf32, #s>
    // expected-error @+1 {{no register layout for H = 17, R = 256, E = 32, G = 64, 4 bits over 128 threads}}
    kvgpu.attend_latent q %q, %qr latent %codes bits 4 scales %cs, %cz, %ct rope %rope state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<17x256xf32, #s>, memref<17x32xf16, #s>, memref<64x128xi8, #s>, memref<256xf16, #s>, memref<256xf16, #s>, memref<64xf16, #s>, memref<64x32xf16, #s>, memref<17xf32, #s>, memref<17xf32, #s>, memref<17x256xf32, #s>, memref<17xf32, #s>, memref<17xf32, #s>, memref<17x256xf32, #s>, memref<8000xf32, #s>
    gpu.return
  }
}

// -----

#s = #gpu.address_space<workgroup>
gpu.module @m {
  gpu.func @attend_latent_warps(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 8 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x256xf32, #s>
    %qr = kvgpu.shared_buffer 4096 : memref<4x32xf16, #s>
    %codes = kvgpu.shared_buffer 4352 : memref<64x128xi8, #s>
    %cs = kvgpu.shared_buffer 12544 : memref<256xf16, #s>
    %cz = kvgpu.shared_buffer 13056 : memref<256xf16, #s>
    %ct = kvgpu.shared_buffer 13568 : memref<64xf16, #s>
    %rope = kvgpu.shared_buffer 13696 : memref<64x32xf16, #s>
    %m = kvgpu.shared_buffer 17792 : memref<4xf32, #s>
    %l = kvgpu.shared_buffer 17808 : memref<4xf32, #s>
    %acc = kvgpu.shared_buffer 17824 : memref<4x256xf32, #s>
    %scratch = kvgpu.shared_buffer 21920 : memref<2344xf32, #s>
    // A warp takes 64 channels a group: R = 256 has no room for 8.
    // expected-error @+1 {{no register layout for H = 4, R = 256, E = 32, G = 64, 4 bits over 256 threads}}
    kvgpu.attend_latent q %q, %qr latent %codes bits 4 scales %cs, %cz, %ct rope %rope state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<4x256xf32, #s>, memref<4x32xf16, #s>, memref<64x128xi8, #s>, memref<256xf16, #s>, memref<256xf16, #s>, memref<64xf16, #s>, memref<64x32xf16, #s>, memref<4xf32, #s>, memref<4xf32, #s>, memref<4x256xf32, #s>, memref<4xf32, #s>, memref<4xf32, #s>, memref<4x256xf32, #s>, memref<2344xf32, #s>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @swizzled_rows_partial(%p: !llvm.ptr<1>, %o: i64) kernel {
    %a = kvgpu.shared_buffer 0 : memref<1024xi8, #gpu.address_space<workgroup>>
    // expected-error @+1 {{swizzled region [0, 200) of 128-byte rows: whole rows of 32, 64 or a multiple of 128 bytes from a 16-byte boundary inside the buffer}}
    kvgpu.copy_in %p[%o] strides(%o) to %a {swizzled_rows = array<i64: 0, 200, 128>} : memref<1024xi8, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

gpu.module @m {
  gpu.func @swizzled_rows_order(%p: !llvm.ptr<1>, %o: i64) kernel {
    %a = kvgpu.shared_buffer 0 : memref<1024xi8, #gpu.address_space<workgroup>>
    // expected-error @+1 {{swizzled regions must be in order, apart: [128, 256) starts before the end of the one before it, 256}}
    kvgpu.copy_in %p[%o] strides(%o) to %a {swizzled_rows = array<i64: 0, 256, 128, 128, 256, 128>} : memref<1024xi8, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

// Rows shorter than a line are swizzled by the line: 32 or 64 bytes.
gpu.module @m {
  gpu.func @swizzled_rows_width(%p: !llvm.ptr<1>, %o: i64) kernel {
    %a = kvgpu.shared_buffer 0 : memref<1024xi8, #gpu.address_space<workgroup>>
    // expected-error @+1 {{swizzled region [0, 960) of 48-byte rows: whole rows of 32, 64 or a multiple of 128 bytes from a 16-byte boundary inside the buffer}}
    kvgpu.copy_in %p[%o] strides(%o) to %a {swizzled_rows = array<i64: 0, 960, 48>} : memref<1024xi8, #gpu.address_space<workgroup>>
    gpu.return
  }
}

// -----

// A kernel's launch attributes are verified where they are written (by a
// pass or by hand): programs a CTA must divide it into whole warps or equal
// parts of one, beside the warps they divide.
gpu.module @m {
  // expected-error @+1 {{'kvgpu.programs_per_cta' 3 does not divide 4 warps into whole warps or equal parts of one (at least 4 lanes)}}
  gpu.func @three_programs() kernel
      attributes {kvgpu.num_warps = 4 : i64, kvgpu.programs_per_cta = 3 : i64} {
    gpu.return
  }
}

// -----

gpu.module @m {
  // expected-error @+1 {{'kvgpu.programs_per_cta' needs 'kvgpu.num_warps' beside it}}
  gpu.func @programs_without_warps() kernel
      attributes {kvgpu.programs_per_cta = 2 : i64} {
    gpu.return
  }
}

// -----

gpu.module @m {
  // expected-error @+1 {{'kvgpu.num_warps' must be 1 to 32, got 0}}
  gpu.func @no_warps() kernel attributes {kvgpu.num_warps = 0 : i64} {
    gpu.return
  }
}

// -----

gpu.module @m {
  // expected-error @+1 {{'kvgpu.launch_pdl' must be a unit attribute}}
  gpu.func @pdl_flag() kernel attributes {kvgpu.launch_pdl = 1 : i64} {
    gpu.return
  }
}

// -----

gpu.module @m {
  // expected-error @+1 {{unknown kvgpu attribute 'kvgpu.num_warp'}}
  gpu.func @misspelt() kernel attributes {kvgpu.num_warp = 4 : i64} {
    gpu.return
  }
}
