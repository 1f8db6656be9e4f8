// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.attend_record, 4 warps, 4 query heads, head_dim 128, G = 128,
// 4-bit keys and 2-bit values (RecordAttendLayout in KVGPU.h): each warp
// attends its 32 tokens in registers, the warps' partials meet at one
// barrier.

!f32x4x128 = memref<4x128xf32, #gpu.address_space<workgroup>>
!f32x4 = memref<4xf32, #gpu.address_space<workgroup>>
!f16x128 = memref<128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @record
  // ROUNDTRIP: kvgpu.attend_record q %{{.*}} keys %{{.*}} bits 4 scales %{{.*}}, %{{.*}}, %{{.*}} values %{{.*}} bits 2 scales
  // CHECK-LABEL: gpu.func @record
  gpu.func @record(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 10240 : !f16x128
    %kz = kvgpu.shared_buffer 10496 : !f16x128
    %kt = kvgpu.shared_buffer 10752 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 15104 : !f16x128
    %vz = kvgpu.shared_buffer 15360 : !f16x128
    %vch = kvgpu.shared_buffer 15616 : !f16x128
    %m = kvgpu.shared_buffer 15872 : !f32x4
    %l = kvgpu.shared_buffer 15888 : !f32x4
    %acc = kvgpu.shared_buffer 15904 : !f32x4x128
    %m2 = kvgpu.shared_buffer 17952 : !f32x4
    %l2 = kvgpu.shared_buffer 17968 : !f32x4
    %acc2 = kvgpu.shared_buffer 17984 : !f32x4x128
    %scratch = kvgpu.shared_buffer 20032 : memref<3256xf32, #gpu.address_space<workgroup>>
    // K's codes as a lane's 4 tokens of a channel (16 bits), V's as its 16
    // channels of a token (32 bits).
    // CHECK-DAG: to memref<4096xi16, #gpu.address_space<workgroup>>
    // CHECK-DAG: to memref<1024xi32, #gpu.address_space<workgroup>>
    // 1. The CTA splits q * kscale into B fragments (hi, lo), each part f16
    // (22 bits: the scores' sums cancel), one thread a head's 4 channels of
    // a k tile in straight-line code. At 4 heads the parts share the 8
    // columns (packedScoreParts: hi of head h in column h, lo in h + 4), so
    // a thread stores two 2-word fragments and no column is zeros. It sums
    // q . kzero per head with shuffles, one barrier.
    // CHECK-NOT: scf.for
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}] {alignment = 8 : i64} : memref<3256xf32, #gpu.address_space<workgroup>>, vector<2xf32>
    // CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}] {alignment = 8 : i64} : memref<3256xf32, #gpu.address_space<workgroup>>, vector<2xf32>
    // CHECK-NOT: vector.store
    // CHECK-COUNT-5: gpu.shuffle  xor
    // CHECK: gpu.barrier
    // 2. Scores: 8 k tiles x 2 token tiles, both parts in one product, no
    // barrier; the K codes of two k tiles are one transposed ldmatrix (the
    // warp's 16-bit pieces of 8 channels are one 16-byte row); a code pair
    // is the code masked in place as an f16 subnormal: one AND (0x000F000F,
    // the low nibbles, then 0x00F000F0), one shift by 8 for a chunk's high
    // byte, no f16 arithmetic and no lop3; f16 products.
    // CHECK-NOT: gpu.barrier
    // CHECK: vector.load %{{.*}} {alignment = 8 : i64} : memref<3256xf32, #gpu.address_space<workgroup>>, vector<2xf32>
    // CHECK: nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<col>, num = 4 : i32, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}
    // CHECK-NOT: memref<4096xi16, #gpu.address_space<workgroup>>
    // CHECK: arith.andi %{{.*}}, %c983055_i32 : i32
    // CHECK: arith.andi %{{.*}}, %c15728880_i32 : i32
    // CHECK: arith.shrui %{{.*}}, %c8_i32 : i32
    // CHECK-NOT: llvm.inline_asm
    // CHECK-NOT: vector<2xf16>, vector<2xf16>, vector<2xf16>
    // CHECK-COUNT-16: nvvm.mma.sync {{.*}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: (vector<2xf16>, vector<2xf16>, f32)
    // 3. Lanes t and t ^ 2 hold a score's hi and lo parts: each sends the
    // other the token tile it takes (one shuffle a score of it) and adds.
    // CHECK-COUNT-4: gpu.shuffle  xor %{{.*}}, %c2_i32, %c32_i32 : f32
    // The warp's softmax over the lane's 2 tokens: a score is the product
    // scaled back (2^24 for the rows of low nibbles, 2^20 for the next)
    // plus q . kzero, one fma; max, then sum and p . vzero over the lanes
    // of a head (xor 2, 4, 8, 16), the probabilities through the warp's
    // scratch.
    // CHECK-NOT: gpu.barrier
    // CHECK: llvm.intr.fma(%{{.*}}, %{{.*}}, %{{.*}}) : (f32, f32, f32) -> f32
    // CHECK-COUNT-8: gpu.shuffle  xor
    // exp(x - max): the row's max made finite once (0 for a row of no
    // tokens), then per score the difference first, the scaling by log2 e,
    // one ex2 (ftz: no subnormal fix-up). Not x log2e - max log2e as one
    // fma: exp(m - m) must be exactly 1 (docs/codegen.md).
    // CHECK: %[[NONE:.*]] = arith.cmpf oeq, %[[MAX:.*]], %{{.*}} : f32
    // CHECK-NEXT: %[[FINITE:.*]] = arith.select %[[NONE]], %{{.*}}, %[[MAX]] : f32
    // CHECK-NEXT: %[[DIFF:.*]] = arith.subf %{{.*}}, %[[FINITE]] : f32
    // CHECK-NEXT: %[[SCALED:.*]] = arith.mulf %[[DIFF]], %{{.*}} : f32
    // CHECK-NEXT: llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"(%[[SCALED]])
    // CHECK: memref.store {{.*}} : memref<3256xf32, #gpu.address_space<workgroup>>
    // CHECK: nvvm.bar.warp.sync
    // 4. Weighted values: 8 channel tiles x 2 token tiles x 2 parts; the
    // lanes of columns past the heads take zeros (their rows of the
    // probabilities are not written); two tokens' 32-bit pieces meet in
    // the halves of a register by one prmt each (bytes 0, 1 of both, then
    // 2, 3).
    // CHECK-NOT: gpu.barrier
    // CHECK: arith.select %{{.*}}, %{{.*}}, %c0_i32 : i32
    // CHECK: llvm.call_intrinsic "llvm.nvvm.prmt"(%{{.*}}, %{{.*}}, %c21520_i32)
    // CHECK-NEXT: llvm.call_intrinsic "llvm.nvvm.prmt"(%{{.*}}, %{{.*}}, %c30258_i32)
    // The values' codes are f16 subnormals as the scores' (one AND, 0x0003
    // at bits 0, 2, 4, 6 of each half; one shift by 8 for the next four);
    // f16 products.
    // CHECK: arith.andi %{{.*}}, %c196611_i32 : i32
    // CHECK: arith.andi %{{.*}}, %c786444_i32 : i32
    // CHECK: arith.shrui %{{.*}}, %c8_i32 : i32
    // CHECK-COUNT-32: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: nvvm.mma.sync
    // 5. Partials; the incoming max and sum copied into the scratch (so
    // that the new state may overwrite them); one barrier; 6. the merge.
    // CHECK: nvvm.bar.warp.sync
    // CHECK: scf.if
    // CHECK: memref.load %{{.*}} : memref<4xf32, #gpu.address_space<workgroup>>
    // CHECK: memref.store %{{.*}} : memref<3256xf32, #gpu.address_space<workgroup>>
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: gpu.barrier
    // CHECK-NOT: scf.for
    // exp(x - max): a subtraction, a multiply and one ex2 (ftz: no
    // subnormal fix-up).
    // CHECK: llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"
    // CHECK: vector.store {{.*}} : memref<512xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK-NOT: gpu.barrier
    // CHECK: gpu.return
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m2, %l2, %acc2 scratch %scratch : !f32x4x128, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, !f32x4, !f32x4, !f32x4x128, !f32x4, !f32x4, !f32x4x128, memref<3256xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // `swizzled`: the keys' 64-byte rows were stored by kvgpu::lineSwizzle
  // (kvgpu.copy_in's swizzled_rows), so the lane's ldmatrix row is its byte
  // with the chunk bits XOR 3 (line & 1) ^ ((line >> 1) & 1), computed once:
  // the k tiles' rows are whole swizzle periods (512 bytes) apart. A warp's
  // partial keeps a head's row at 128 + 4 floats (heads 2t and 2t + 2 in
  // distinct banks).
  // ROUNDTRIP-LABEL: gpu.func @record_swizzled
  // ROUNDTRIP: values %{{.*}} bits 2 scales %{{.*}}, %{{.*}}, %{{.*}} swizzled state
  // CHECK-LABEL: gpu.func @record_swizzled
  // CHECK: gpu.barrier
  // CHECK: %[[LINE:.*]] = arith.shrui %{{.*}}, %c7 : index
  // CHECK: arith.andi %[[LINE]], %c1 : index
  // CHECK: arith.muli %{{.*}}, %c3 : index
  // CHECK: arith.xori
  // CHECK: %[[ROW:.*]] = arith.divui %{{.*}}, %c2 : index
  // CHECK: nvvm.ldmatrix
  // CHECK-COUNT-3: nvvm.ldmatrix
  // CHECK-NOT: nvvm.ldmatrix
  // CHECK: nvvm.bar.warp.sync
  // CHECK: arith.muli %{{.*}}, %c132 : index
  // CHECK: vector.store {{.*}} : memref<3256xf32, #gpu.address_space<workgroup>>, vector<4xf32>
  // CHECK: gpu.return
  gpu.func @record_swizzled(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 10240 : !f16x128
    %kz = kvgpu.shared_buffer 10496 : !f16x128
    %kt = kvgpu.shared_buffer 10752 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 15104 : !f16x128
    %vz = kvgpu.shared_buffer 15360 : !f16x128
    %vch = kvgpu.shared_buffer 15616 : !f16x128
    %m = kvgpu.shared_buffer 15872 : !f32x4
    %l = kvgpu.shared_buffer 15888 : !f32x4
    %acc = kvgpu.shared_buffer 15904 : !f32x4x128
    %scratch = kvgpu.shared_buffer 20032 : memref<3256xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch swizzled state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : !f32x4x128, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, !f32x4, !f32x4, !f32x4x128, !f32x4, !f32x4, !f32x4x128, memref<3256xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // The new state over the old one (a loop's carried state): the same
  // lowering; the incoming max and sum are read before the barrier.
  // ROUNDTRIP-LABEL: gpu.func @record_in_place
  // ROUNDTRIP: state %[[M:.*]], %[[L:.*]], %[[A:.*]] valid %{{.*}} softmax_scale %{{.*}} into %[[M]], %[[L]], %[[A]] scratch
  // CHECK-LABEL: gpu.func @record_in_place
  // CHECK: gpu.barrier
  // CHECK: gpu.barrier
  // CHECK: gpu.return
  gpu.func @record_in_place(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 10240 : !f16x128
    %kz = kvgpu.shared_buffer 10496 : !f16x128
    %kt = kvgpu.shared_buffer 10752 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 15104 : !f16x128
    %vz = kvgpu.shared_buffer 15360 : !f16x128
    %vch = kvgpu.shared_buffer 15616 : !f16x128
    %m = kvgpu.shared_buffer 15872 : !f32x4
    %l = kvgpu.shared_buffer 15888 : !f32x4
    %acc = kvgpu.shared_buffer 15904 : !f32x4x128
    %scratch = kvgpu.shared_buffer 20032 : memref<3256xf32, #gpu.address_space<workgroup>>
    // K's codes as a lane's 4 tokens of a channel (16 bits), V's as its 16
    // channels of a token (32 bits).
    // 1. The CTA splits q * kscale into f16 B fragments (hi, lo), sums q .
    // kzero per head with shuffles, one barrier.
    // 2. Scores: 8 k tiles x 2 parts x 2 token tiles, no barrier; a code
    // pair is an f16 subnormal (one AND).
    // 3. The warp's softmax: max, then sum and p . vzero over the lanes of a
    // head (xor 4, 8, 16), the probabilities through the warp's scratch.
    // 4. Weighted values: 8 channel tiles x 2 token tiles x 2 parts.
    // 5. Partials; the incoming max and sum copied into the scratch (so
    // that the new state may overwrite them); one barrier; 6. the merge.
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : !f32x4x128, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, !f32x4, !f32x4, !f32x4x128, !f32x4, !f32x4, !f32x4x128, memref<3256xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // One warp (kvarn-jit --num-warps 1): it attends all 128 tokens, a lane
  // 16 of them, so its K piece of a channel is 64 bits (two words, one
  // 8-byte load a row of the fragment) and no transposed ldmatrix; 8 k tiles
  // x 8 token tiles of scores, 8 channel tiles x 8 token tiles x 2 parts of
  // weighted values.
  // CHECK-LABEL: gpu.func @record_one_warp
  // CHECK-DAG: to memref<2048xi32, #gpu.address_space<workgroup>>
  // CHECK: gpu.barrier
  // CHECK-NOT: nvvm.ldmatrix
  // CHECK: vector.load %{{.*}} {alignment = 8 : i64} : memref<2048xi32, #gpu.address_space<workgroup>>, vector<2xi32>
  // CHECK-COUNT-64: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
  // CHECK-NOT: gpu.barrier
  // CHECK: nvvm.bar.warp.sync
  // CHECK-COUNT-128: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
  // CHECK-NOT: nvvm.mma.sync
  // CHECK: gpu.return
  gpu.func @record_one_warp(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 10240 : !f16x128
    %kz = kvgpu.shared_buffer 10496 : !f16x128
    %kt = kvgpu.shared_buffer 10752 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 15104 : !f16x128
    %vz = kvgpu.shared_buffer 15360 : !f16x128
    %vch = kvgpu.shared_buffer 15616 : !f16x128
    %m = kvgpu.shared_buffer 15872 : !f32x4
    %l = kvgpu.shared_buffer 15888 : !f32x4
    %acc = kvgpu.shared_buffer 15904 : !f32x4x128
    %scratch = kvgpu.shared_buffer 17952 : memref<2160xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : !f32x4x128, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, !f32x4, !f32x4, !f32x4x128, !f32x4, !f32x4, !f32x4x128, memref<2160xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // 8 query heads (GQA 8): every column a head, so the parts are two
  // products (kMmaSplitParts), each fragment both parts' registers (one
  // 16-byte store), and a head's lanes are one t (xor 4, 8, 16).
  // CHECK-LABEL: gpu.func @record_eight_heads
  // CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}] {alignment = 16 : i64} : memref<5368xf32, #gpu.address_space<workgroup>>, vector<4xf32>
  // CHECK: gpu.barrier
  // CHECK-COUNT-32: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
  // CHECK-NOT: (vector<2xf16>, vector<2xf16>, f32)
  // CHECK-NOT: gpu.shuffle  xor %{{.*}}, %c2_i32
  // CHECK: gpu.shuffle  xor %{{.*}}, %c4_i32, %c32_i32 : f32
  // CHECK-COUNT-32: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
  // CHECK: gpu.return
  gpu.func @record_eight_heads(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<8x128xf32, #gpu.address_space<workgroup>>
    %kc = kvgpu.shared_buffer 4096 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 12288 : !f16x128
    %kz = kvgpu.shared_buffer 12544 : !f16x128
    %kt = kvgpu.shared_buffer 12800 : !f16x128
    %vc = kvgpu.shared_buffer 13056 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 17152 : !f16x128
    %vz = kvgpu.shared_buffer 17408 : !f16x128
    %vch = kvgpu.shared_buffer 17664 : !f16x128
    %m = kvgpu.shared_buffer 17920 : memref<8xf32, #gpu.address_space<workgroup>>
    %l = kvgpu.shared_buffer 17952 : memref<8xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 17984 : memref<8x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 22080 : memref<5368xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<8x128xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<8xf32, #gpu.address_space<workgroup>>, memref<8xf32, #gpu.address_space<workgroup>>, memref<8x128xf32, #gpu.address_space<workgroup>>, memref<8xf32, #gpu.address_space<workgroup>>, memref<8xf32, #gpu.address_space<workgroup>>, memref<8x128xf32, #gpu.address_space<workgroup>>, memref<5368xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // 6 query heads: a column a head (no packed parts), so step 1's split
  // writes the fragments of lanes 0-23 (head fl / 4; slots 2t, 2t + 1,
  // 2t + 8, 2t + 9 of k tile kt: channels 16 kt + 2t + {0, 1, 8, 9}) as one
  // 16-byte store each, words hi(0, 1), hi(8, 9), lo(0, 1), lo(8, 9), and
  // zeros for lanes 24-31 (heads past H), for each of the 8 k tiles.
  // CHECK-LABEL: gpu.func @record_six_heads
  // CHECK: scf.for %[[E:.*]] = %thread_id_x to %c192 step %c128 {
  // CHECK-NEXT: %[[FL:.*]] = arith.remui %[[E]], %c24 : index
  // CHECK-NEXT: %[[KT:.*]] = arith.divui %[[E]], %c24 : index
  // CHECK-NEXT: %[[HEAD:.*]] = arith.divui %[[FL]], %c4 : index
  // CHECK-NEXT: %[[T:.*]] = arith.remui %[[FL]], %c4 : index
  // CHECK-NEXT: %[[T2:.*]] = arith.muli %[[T]], %c2 : index
  // CHECK-NEXT: %[[KT16:.*]] = arith.muli %[[KT]], %c16 : index
  // CHECK-NEXT: %[[FIRST:.*]] = arith.addi %[[KT16]], %[[T2]] : index
  // CHECK-NEXT: %[[ROW:.*]] = arith.muli %[[HEAD]], %c128 : index
  // CHECK: %[[AT0:.*]] = arith.addi %[[ROW]], %[[FIRST]] : index
  // CHECK-NEXT: %[[Q0:.*]] = memref.load %{{.*}}[%[[AT0]]] : memref<768xf32
  // CHECK-NEXT: %[[X0:.*]] = arith.mulf %[[Q0]]
  // CHECK: %[[C1:.*]] = arith.addi %[[FIRST]], %c1 : index
  // CHECK: %[[X1:.*]] = arith.mulf
  // CHECK: %[[C8:.*]] = arith.addi %[[FIRST]], %c8 : index
  // CHECK: %[[X8:.*]] = arith.mulf
  // CHECK: %[[C9:.*]] = arith.addi %[[FIRST]], %c9 : index
  // CHECK: %[[X9:.*]] = arith.mulf
  // CHECK: %[[F32:.*]] = arith.muli %[[KT]], %c32 : index
  // CHECK-NEXT: %[[F:.*]] = arith.addi %[[F32]], %[[FL]] : index
  // CHECK-NEXT: %[[P01:.*]] = vector.from_elements %[[X0]], %[[X1]] : vector<2xf32>
  // CHECK-NEXT: %[[HI01:.*]] = arith.truncf %[[P01]]
  // CHECK: %[[LO01:.*]] = arith.truncf
  // CHECK-NEXT: %[[I0:.*]] = llvm.bitcast %[[HI01]] : vector<2xf16> to i32
  // CHECK-NEXT: %[[I2:.*]] = llvm.bitcast %[[LO01]] : vector<2xf16> to i32
  // CHECK: %[[P89:.*]] = vector.from_elements %[[X8]], %[[X9]] : vector<2xf32>
  // CHECK-NEXT: %[[HI89:.*]] = arith.truncf %[[P89]]
  // CHECK: %[[LO89:.*]] = arith.truncf
  // CHECK-NEXT: %[[I1:.*]] = llvm.bitcast %[[HI89]] : vector<2xf16> to i32
  // CHECK-NEXT: %[[I3:.*]] = llvm.bitcast %[[LO89]] : vector<2xf16> to i32
  // CHECK-NEXT: %[[W0:.*]] = arith.bitcast %[[I0]] : i32 to f32
  // CHECK-NEXT: %[[W1:.*]] = arith.bitcast %[[I1]] : i32 to f32
  // CHECK-NEXT: %[[W2:.*]] = arith.bitcast %[[I2]] : i32 to f32
  // CHECK-NEXT: %[[W3:.*]] = arith.bitcast %[[I3]] : i32 to f32
  // CHECK-NEXT: %[[AT:.*]] = arith.muli %[[F]], %c4 : index
  // CHECK-NEXT: %[[FRAG:.*]] = vector.from_elements %[[W0]], %[[W1]], %[[W2]], %[[W3]] : vector<4xf32>
  // CHECK-NEXT: vector.store %[[FRAG]], %{{.*}}[%[[AT]]] {alignment = 16 : i64}
  // CHECK: scf.for %[[Z:.*]] = %thread_id_x to %c64 step %c128 {
  // CHECK-NEXT: %[[ZL:.*]] = arith.remui %[[Z]], %c8 : index
  // CHECK-NEXT: %[[LANE:.*]] = arith.addi %[[ZL]], %c24 : index
  // CHECK-NEXT: %[[ZKT:.*]] = arith.divui %[[Z]], %c8 : index
  // CHECK-NEXT: %[[ZF32:.*]] = arith.muli %[[ZKT]], %c32 : index
  // CHECK-NEXT: %[[ZF:.*]] = arith.addi %[[ZF32]], %[[LANE]] : index
  // CHECK-NEXT: %[[ZAT:.*]] = arith.muli %[[ZF]], %c4 : index
  // CHECK-NEXT: vector.store %cst, %{{.*}}[%[[ZAT]]] {alignment = 16 : i64}
  // CHECK: gpu.barrier
  gpu.func @record_six_heads(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<6x128xf32, #gpu.address_space<workgroup>>
    %kc = kvgpu.shared_buffer 4096 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 12288 : !f16x128
    %kz = kvgpu.shared_buffer 12544 : !f16x128
    %kt = kvgpu.shared_buffer 12800 : !f16x128
    %vc = kvgpu.shared_buffer 13056 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 17152 : !f16x128
    %vz = kvgpu.shared_buffer 17408 : !f16x128
    %vch = kvgpu.shared_buffer 17664 : !f16x128
    %m = kvgpu.shared_buffer 17920 : memref<6xf32, #gpu.address_space<workgroup>>
    %l = kvgpu.shared_buffer 17952 : memref<6xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 17984 : memref<6x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 22080 : memref<5368xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<6x128xf32, #gpu.address_space<workgroup>>, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<6xf32, #gpu.address_space<workgroup>>, memref<6xf32, #gpu.address_space<workgroup>>, memref<6x128xf32, #gpu.address_space<workgroup>>, memref<6xf32, #gpu.address_space<workgroup>>, memref<6xf32, #gpu.address_space<workgroup>>, memref<6x128xf32, #gpu.address_space<workgroup>>, memref<5368xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // The state held per warp (warp_states: m, l [4 warps, 4 heads], acc [4,
  // 4, 128]): steps 1-4 as above with only the probabilities in the
  // warps' scratch (2312 floats, not 3256); then each warp folds its
  // partial into its own row, with no barrier after step 1's: its lanes
  // read their heads' max and sum, sync the warp, and update four
  // channels at a time (acc = alpha acc + beta (weighted + p . vzero)
  // vchannel; vchannel four f16 at a time), lane g = 0 writing m and l.
  // ROUNDTRIP-LABEL: gpu.func @record_warp_states
  // ROUNDTRIP: into %{{.*}}, %{{.*}}, %{{.*}} scratch %{{.*}} warp_states :
  // CHECK-LABEL: gpu.func @record_warp_states
  // CHECK: gpu.barrier
  // CHECK-NOT: gpu.barrier
  // CHECK-COUNT-16: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
  // CHECK-COUNT-32: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
  // CHECK: memref.load %{{.*}}[%{{.*}}] : memref<16xf32, #gpu.address_space<workgroup>>
  // CHECK: memref.load %{{.*}}[%{{.*}}] : memref<16xf32, #gpu.address_space<workgroup>>
  // CHECK: nvvm.bar.warp.sync
  // CHECK: scf.if
  // CHECK: vector.load %{{.*}}[%{{.*}}] {alignment = 16 : i64} : memref<2048xf32, #gpu.address_space<workgroup>>, vector<4xf32>
  // CHECK: vector.load %{{.*}}[%{{.*}}] {alignment = 8 : i64} : memref<128xf16, #gpu.address_space<workgroup>>, vector<4xf16>
  // CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}] {alignment = 16 : i64} : memref<2048xf32, #gpu.address_space<workgroup>>, vector<4xf32>
  // CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<16xf32, #gpu.address_space<workgroup>>
  // CHECK-NOT: gpu.barrier
  // CHECK: gpu.return
  gpu.func @record_warp_states(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 10240 : !f16x128
    %kz = kvgpu.shared_buffer 10496 : !f16x128
    %kt = kvgpu.shared_buffer 10752 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 15104 : !f16x128
    %vz = kvgpu.shared_buffer 15360 : !f16x128
    %vch = kvgpu.shared_buffer 15616 : !f16x128
    %m = kvgpu.shared_buffer 15872 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %l = kvgpu.shared_buffer 15936 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 16000 : memref<4x4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 24192 : memref<2312xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch warp_states : !f32x4x128, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4x128xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4x128xf32, #gpu.address_space<workgroup>>, memref<2312xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // vchannel at a byte offset that is no multiple of 8: its four scales a
  // step are four loads, not one misaligned vector load.
  // CHECK-LABEL: gpu.func @record_warp_states_vchannel_unaligned
  // CHECK: nvvm.bar.warp.sync
  // CHECK-NOT: vector<4xf16>
  // CHECK-COUNT-4: memref.load %{{.*}}[%{{.*}}] : memref<128xf16, #gpu.address_space<workgroup>>
  // CHECK: gpu.return
  gpu.func @record_warp_states_vchannel_unaligned(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %kc = kvgpu.shared_buffer 2048 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %ks = kvgpu.shared_buffer 10240 : !f16x128
    %kz = kvgpu.shared_buffer 10496 : !f16x128
    %kt = kvgpu.shared_buffer 10752 : !f16x128
    %vc = kvgpu.shared_buffer 11008 : memref<128x32xi8, #gpu.address_space<workgroup>>
    %vs = kvgpu.shared_buffer 15104 : !f16x128
    %vz = kvgpu.shared_buffer 15360 : !f16x128
    %vch = kvgpu.shared_buffer 33442 : !f16x128
    %m = kvgpu.shared_buffer 15872 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %l = kvgpu.shared_buffer 15936 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 16000 : memref<4x4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 24192 : memref<2312xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_record q %q keys %kc bits 4 scales %ks, %kz, %kt values %vc bits 2 scales %vs, %vz, %vch state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch warp_states : !f32x4x128, memref<128x64xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<128x32xi8, #gpu.address_space<workgroup>>, !f16x128, !f16x128, !f16x128, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4x128xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4x128xf32, #gpu.address_space<workgroup>>, memref<2312xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
