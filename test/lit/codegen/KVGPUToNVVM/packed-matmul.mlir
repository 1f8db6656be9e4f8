// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.packed_matmul, 4 warps: on tensor cores where the shape tiles for
// them (PackedMatmulMmaTiling in KVGPU.h: whole k tiles of 16 rows, 16 x 2^i code
// columns a warp), with fma otherwise (120 rows below).

!f32s = memref<512xf32, #gpu.address_space<workgroup>>
!codes = memref<128x64xi8, #gpu.address_space<workgroup>>
!rows120 = memref<120x64xi8, #gpu.address_space<workgroup>>
gpu.module @m {
  // Scores over 4-bit codes [128 channels, 128 tokens], four query heads:
  // two column tiles a warp (a lane's run: 4 codes, one i16 a row), 8 k
  // tiles, one head tile (heads 4-7 zero).
  // ROUNDTRIP-LABEL: gpu.func @tensor_cores
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}}, %{{.*}} bits 4 into %{{.*}} scratch %{{.*}} :
  // CHECK-LABEL: gpu.func @tensor_cores
  gpu.func @tensor_cores() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : !f32s
    %codes = kvgpu.shared_buffer 2048 : !codes
    %out = kvgpu.shared_buffer 10240 : !f32s
    %frags = kvgpu.shared_buffer 12288 : memref<1024xf32, #gpu.address_space<workgroup>>
    // CHECK: to memref<4096xi16, #gpu.address_space<workgroup>>
    // First the CTA splits a into its B fragments, two bf16 parts
    // (kMmaSplitParts): hi, then the rest rounded; one 16-byte store each
    // (8 k tiles x 32 lanes, two a thread), then one barrier.
    // Each bf16 pair is one cvt.rn.bf16x2.f32.
    // CHECK: scf.for
    // CHECK: llvm.call_intrinsic "llvm.nvvm.ff2bf16x2.rn"(%{{.*}}, %{{.*}}) : (f32, f32) -> vector<2xbf16>
    // CHECK: arith.shli
    // CHECK: arith.andi
    // CHECK-COUNT-2: arith.subf
    // CHECK-NEXT: llvm.call_intrinsic "llvm.nvvm.ff2bf16x2.rn"
    // CHECK-NOT: arith.subf
    // CHECK: llvm.call_intrinsic "llvm.nvvm.ff2bf16x2.rn"
    // CHECK: arith.shli
    // CHECK: arith.andi
    // CHECK-COUNT-2: arith.subf
    // CHECK-NEXT: llvm.call_intrinsic "llvm.nvvm.ff2bf16x2.rn"
    // CHECK-NOT: arith.subf
    // CHECK: vector.store %{{.*}}, %{{.*}}[%{{.*}}] {alignment = 16 : i64} : memref<1024xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: gpu.barrier
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c1 iter_args({{.*}}) -> (f32, f32, f32, f32, f32, f32, f32, f32) {
    // Rows t and t + 4 (a register's pair), each a 16-bit run, interleaved
    // by halves with one prmt (bytes 0, 1 of each: 0x5410); rows t + 8 and
    // t + 12 likewise.
    // CHECK-COUNT-2: memref.load %{{.*}} : memref<4096xi16
    // CHECK: %[[LOW:.*]] = llvm.call_intrinsic "llvm.nvvm.prmt"(%{{.*}}, %{{.*}}, %c21520_i32)
    // CHECK-COUNT-2: memref.load %{{.*}} : memref<4096xi16
    // CHECK: %[[HIGH:.*]] = llvm.call_intrinsic "llvm.nvvm.prmt"(%{{.*}}, %{{.*}}, %c21520_i32)
    // The lane's fragment: one load.
    // CHECK: vector.load %{{.*}}[%{{.*}}] {alignment = 16 : i64} : memref<1024xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK-NOT: llvm.fptrunc
    // Each pair: its codes into the mantissa of 128.0 by one lop3 (mask
    // 0x000F000F, 0x43004300; a shift first but for code 0), then 128
    // subtracted (one bf16x2 fma). No bit-field extracts.
    // CHECK-NOT: arith.andi
    // CHECK: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[LOW]], %c983055_i32, %c1124090624_i32
    // CHECK: llvm.bitcast %{{.*}} : i32 to vector<2xbf16>
    // CHECK: llvm.intr.fma
    // CHECK: %[[S4:.*]] = arith.shrui %[[LOW]], %c4_i32 : i32
    // CHECK: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S4]], %c983055_i32, %c1124090624_i32
    // CHECK: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[HIGH]], %c983055_i32, %c1124090624_i32
    // CHECK-NOT: arith.andi
    // Two column tiles x two parts, the tiles' MMAs alternating.
    // CHECK-COUNT-4: nvvm.mma.sync
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: scf.yield
    // Heads 2t and 2t + 1 exist for t < 2 only; no shuffle, no barrier.
    // CHECK-NOT: gpu.shuffle
    // CHECK-NOT: gpu.barrier
    // CHECK: scf.if
    // CHECK-COUNT-4: memref.store
    // CHECK: scf.if
    // CHECK-COUNT-4: memref.store
    // CHECK-NOT: gpu.barrier
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %frags
        : !f32s, !codes, !f32s, memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // Values over 2-bit codes [128 tokens, 64 channels], eight heads: one
  // column tile a warp, a lane's run of 2 codes is half a byte (read as its
  // byte, shifted by 4 x (g mod 2)); all 8 heads real: no guard.
  // CHECK-LABEL: gpu.func @tensor_cores_sub_byte_run
  gpu.func @tensor_cores_sub_byte_run() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<1024xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 4096 : memref<128x16xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 6144 : memref<512xf32, #gpu.address_space<workgroup>>
    %frags = kvgpu.shared_buffer 8192 : memref<1024xf32, #gpu.address_space<workgroup>>
    // CHECK: arith.remui %{{.*}}, %c8 : index
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c8 step %c1 iter_args({{.*}}) -> (f32, f32, f32, f32) {
    // CHECK: memref.load %{{.*}} : memref<2048xi8
    // CHECK: arith.shrui
    // CHECK-COUNT-2: nvvm.mma.sync
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: scf.yield
    // CHECK-NOT: scf.if
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %codes bits 2 into %out scratch %frags
        : memref<1024xf32, #gpu.address_space<workgroup>>,
          memref<128x16xi8, #gpu.address_space<workgroup>>,
          memref<512xf32, #gpu.address_space<workgroup>>,
          memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // A K of 256 rows (16 k tiles) splits its fragments in two rounds of 8
  // (getMmaSplitRoundTiles): the scratch holds one round, 4 KiB.
  // CHECK-LABEL: gpu.func @tensor_cores_rounds
  gpu.func @tensor_cores_rounds() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<1024xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 4096 : memref<256x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 20480 : !f32s
    %frags = kvgpu.shared_buffer 22528 : memref<1024xf32, #gpu.address_space<workgroup>>
    // CHECK: vector.store %{{.*}} : memref<1024xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK-NEXT: }
    // CHECK-NEXT: gpu.barrier
    // CHECK: scf.for %{{.*}} = %c0 to %c8 step %c1
    // CHECK: vector.load
    // CHECK-COUNT-4: nvvm.mma.sync
    // CHECK: scf.yield
    // The second round waits until every warp is done with the first.
    // CHECK: gpu.barrier
    // CHECK: vector.store
    // CHECK: gpu.barrier
    // CHECK: scf.for %{{.*}} = %c8 to %c16 step %c1
    // CHECK-COUNT-4: nvvm.mma.sync
    // CHECK: scf.yield
    // CHECK-NOT: gpu.barrier
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %frags
        : memref<1024xf32, #gpu.address_space<workgroup>>,
          memref<256x64xi8, #gpu.address_space<workgroup>>, !f32s,
          memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // Codes stored transposed ([N, K * bits / 8]: MLA's token-major latent as
  // the scores' operand), 128 columns (tokens) x 128 rows (channels), eight
  // heads: two column tiles a warp, 8 k tiles, one group of P = 8 k tiles
  // (PackedMatmulMmaTiling): slot 2t + e + 8f of k tile i is row 32t + 4i +
  // 2e + f, so the fragments' split reads rows 32t + 4i .. + 3 and a lane's
  // codes of one column for all 8 k tiles are one 16-byte piece (one vector
  // load; the 8 lanes g of a load read the same banks, 8 wavefronts for
  // 512 bytes).
  // ROUNDTRIP-LABEL: gpu.func @tensor_cores_transposed
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}}, %{{.*}} bits 4 transposed into %{{.*}} scratch %{{.*}} :
  // CHECK-LABEL: gpu.func @tensor_cores_transposed
  gpu.func @tensor_cores_transposed() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<1024xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 4096 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 12288 : memref<1024xf32, #gpu.address_space<workgroup>>
    %frags = kvgpu.shared_buffer 16384 : memref<1024xf32, #gpu.address_space<workgroup>>
    // CHECK: to memref<2048xi32, #gpu.address_space<workgroup>>
    // CHECK: %[[LANE:.*]] = arith.remui %thread_id_x, %c32 : index
    // CHECK: %[[T:.*]] = arith.remui %[[LANE]], %c4 : index
    // The split: a's rows ([K, H], 8 heads) 128 (kt / 8) + 32t + 4 (kt mod
    // 8) + i, i = 0 .. 3.
    // CHECK: scf.for
    // CHECK: %[[FT:.*]] = arith.remui %{{.*}}, %c4 : index
    // CHECK: arith.divui %[[KT:.*]], %c8 : index
    // CHECK: arith.muli %{{.*}}, %c128 : index
    // CHECK: arith.remui %[[KT]], %c8 : index
    // CHECK: arith.muli %{{.*}}, %c4 : index
    // CHECK: arith.muli %[[FT]], %c32 : index
    // CHECK: arith.addi
    // CHECK: %[[ROW:.*]] = arith.addi
    // CHECK-NEXT: arith.muli %[[ROW]], %c8 : index
    // Slots 2t, 2t + 1, 2t + 8, 2t + 9: rows + 0, 2, 1, 3.
    // CHECK: arith.addi %[[ROW]], %c2 : index
    // CHECK: arith.addi %[[ROW]], %c1 : index
    // CHECK: arith.addi %[[ROW]], %c3 : index
    // CHECK: vector.store
    // CHECK: gpu.barrier
    // The k loop: one iteration for the group's 8 k tiles, unrolled; one
    // 16-byte piece of each of the lane's 4 columns (16 words a row), at
    // word 4t.
    // CHECK: scf.for %{{.*}} = %c0 to %c8 step %c8 iter_args({{.*}}) -> (f32, f32, f32, f32, f32, f32, f32, f32) {
    // CHECK: arith.muli %[[T]], %c32 : index
    // CHECK: %[[P0:.*]] = vector.load %{{.*}} {alignment = 16 : i64} : memref<2048xi32, #gpu.address_space<workgroup>>, vector<4xi32>
    // CHECK: %[[W0:.*]] = vector.extract %[[P0]][0] : i32 from vector<4xi32>
    // CHECK-COUNT-3: vector.load %{{.*}} : memref<2048xi32, #gpu.address_space<workgroup>>, vector<4xi32>
    // CHECK-NOT: memref.load %{{.*}} : memref<2048xi32
    // k tile 0: bytes 0 and 1 of word 0 (codes 0, 1 and 2, 3) spread to
    // the halves by one prmt (0x4140), then codes 0, 2 and (4 bits on) 1, 3
    // make a register each: one lop3 each, no bit-field extracts.
    // CHECK: vector.load %{{.*}} : memref<1024xf32
    // CHECK-NOT: arith.andi
    // CHECK: %[[SPREAD:.*]] = llvm.call_intrinsic "llvm.nvvm.prmt"(%[[W0]], %c0_i32, %c16704_i32)
    // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[SPREAD]], %c983055_i32, %c1124090624_i32
    // CHECK-NEXT: %[[S4:.*]] = arith.shrui %[[SPREAD]], %c4_i32 : i32
    // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S4]], %c983055_i32, %c1124090624_i32
    // CHECK-COUNT-4: nvvm.mma.sync
    // k tile 1: bytes 2 and 3 of word 0 (0x4342).
    // CHECK: vector.load %{{.*}} : memref<1024xf32
    // CHECK: llvm.call_intrinsic "llvm.nvvm.prmt"(%[[W0]], %c0_i32, %c17218_i32)
    // CHECK-COUNT-4: nvvm.mma.sync
    // CHECK-COUNT-24: nvvm.mma.sync
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: scf.yield
    // CHECK-NOT: gpu.barrier
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %codes bits 4 transposed into %out scratch %frags
        : memref<1024xf32, #gpu.address_space<workgroup>>,
          memref<128x64xi8, #gpu.address_space<workgroup>>,
          memref<1024xf32, #gpu.address_space<workgroup>>,
          memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // Transposed with K = 48 (3 k tiles, one round of 3): P is a power of two
  // dividing the round, 1, so a piece is 4 codes of one k tile (an i16 at
  // 4 bits, an i8 at 2), never a 3-tile piece of 48 or 24 bits.
  // CHECK-LABEL: gpu.func @tensor_cores_transposed_odd_k
  gpu.func @tensor_cores_transposed_odd_k() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<384xf32, #gpu.address_space<workgroup>>
    %codes4 = kvgpu.shared_buffer 2048 : memref<64x24xi8, #gpu.address_space<workgroup>>
    %codes2 = kvgpu.shared_buffer 4096 : memref<64x12xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 8192 : memref<512xf32, #gpu.address_space<workgroup>>
    %frags = kvgpu.shared_buffer 12288 : memref<384xf32, #gpu.address_space<workgroup>>
    // CHECK: to memref<768xi16, #gpu.address_space<workgroup>>
    // CHECK: scf.for %{{.*}} = %c0 to %c3 step %c1 iter_args
    // CHECK: memref.load %{{.*}} : memref<768xi16
    // CHECK: scf.yield
    kvgpu.packed_matmul %a, %codes4 bits 4 transposed into %out scratch %frags
        : memref<384xf32, #gpu.address_space<workgroup>>,
          memref<64x24xi8, #gpu.address_space<workgroup>>,
          memref<512xf32, #gpu.address_space<workgroup>>,
          memref<384xf32, #gpu.address_space<workgroup>>
    // At 2 bits a group is one byte: zero-extended by a prmt (0x4440),
    // copied 12 bits up (codes 2, 3 to the high half's bits 0 and 2), then
    // codes 0, 2 and (2 bits on) 1, 3 by one lop3 each (mask 0x00030003).
    // CHECK: to memref<768xi8, #gpu.address_space<workgroup>>
    // CHECK: scf.for %{{.*}} = %c0 to %c3 step %c1 iter_args
    // CHECK: %[[BYTE:.*]] = memref.load %{{.*}} : memref<768xi8
    // CHECK: %[[WORD:.*]] = arith.extui %[[BYTE]] : i8 to i32
    // CHECK: %[[Z:.*]] = llvm.call_intrinsic "llvm.nvvm.prmt"(%[[WORD]], %c0_i32, %c17472_i32)
    // CHECK-NEXT: %[[UP:.*]] = arith.shli %[[Z]], %c12_i32 : i32
    // CHECK-NEXT: %[[SPREAD:.*]] = arith.ori %[[Z]], %[[UP]] : i32
    // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[SPREAD]], %c196611_i32, %c1124090624_i32
    // CHECK-NEXT: %[[S2:.*]] = arith.shrui %[[SPREAD]], %c2_i32 : i32
    // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S2]], %c196611_i32, %c1124090624_i32
    // CHECK: scf.yield
    kvgpu.packed_matmul %a, %codes2 bits 2 transposed into %out scratch %frags
        : memref<384xf32, #gpu.address_space<workgroup>>,
          memref<64x12xi8, #gpu.address_space<workgroup>>,
          memref<512xf32, #gpu.address_space<workgroup>>,
          memref<384xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // f16 rows (bits 16, transposed: MLA's rope keys [128 tokens, 64]), eight
  // heads: 4 k tiles in groups of P = 2 (a 16-byte piece: 4 f16 values of
  // each of 2 k tiles), the words already the f16 pairs of slots 2t, 2t + 1
  // and 2t + 8, 2t + 9; `a` is split into f16 parts and the MMAs are f16.
  // ROUNDTRIP-LABEL: gpu.func @tensor_cores_f16_rows
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}}, %{{.*}} bits 16 transposed into
  // CHECK-LABEL: gpu.func @tensor_cores_f16_rows
  gpu.func @tensor_cores_f16_rows() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<512xf32, #gpu.address_space<workgroup>>
    %rows = kvgpu.shared_buffer 2048 : memref<128x64xf16, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 18432 : memref<1024xf32, #gpu.address_space<workgroup>>
    %frags = kvgpu.shared_buffer 22528 : memref<512xf32, #gpu.address_space<workgroup>>
    // CHECK: to memref<4096xi32, #gpu.address_space<workgroup>>
    // CHECK: scf.for
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: vector.store
    // CHECK: gpu.barrier
    // CHECK: scf.for %{{.*}} = %c0 to %c4 step %c2 iter_args({{.*}}) -> (f32, f32, f32, f32, f32, f32, f32, f32) {
    // CHECK: %[[P0:.*]] = vector.load %{{.*}} {alignment = 16 : i64} : memref<4096xi32, #gpu.address_space<workgroup>>, vector<4xi32>
    // CHECK: %[[W0:.*]] = vector.extract %[[P0]][0]
    // CHECK: %[[W1:.*]] = vector.extract %[[P0]][1]
    // CHECK: %[[P1:.*]] = vector.load %{{.*}} {alignment = 16 : i64} : memref<4096xi32, #gpu.address_space<workgroup>>, vector<4xi32>
    // CHECK: %[[V0:.*]] = vector.extract %[[P1]][0]
    // CHECK: %[[V1:.*]] = vector.extract %[[P1]][1]
    // CHECK-COUNT-2: vector.load %{{.*}} : memref<4096xi32
    // No conversion of the rows: the words are the A registers.
    // CHECK-NOT: llvm.intr.fma
    // CHECK: %[[A0:.*]] = llvm.bitcast %[[W0]] : i32 to vector<2xf16>
    // CHECK: %[[A1:.*]] = llvm.bitcast %[[V0]] : i32 to vector<2xf16>
    // CHECK: %[[A2:.*]] = llvm.bitcast %[[W1]] : i32 to vector<2xf16>
    // CHECK: %[[A3:.*]] = llvm.bitcast %[[V1]] : i32 to vector<2xf16>
    // CHECK: nvvm.mma.sync A[%[[A0]], %[[A1]], %[[A2]], %[[A3]]]
    // CHECK-SAME: (vector<2xf16>, vector<2xf16>, f32)
    // Two k tiles x two column tiles x two parts.
    // CHECK-COUNT-7: nvvm.mma.sync
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: scf.yield
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %rows bits 16 transposed into %out scratch %frags
        : memref<512xf32, #gpu.address_space<workgroup>>,
          memref<128x64xf16, #gpu.address_space<workgroup>>,
          memref<1024xf32, #gpu.address_space<workgroup>>,
          memref<512xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // fma, four query heads (getPackedMatmulLayout: 16-bit pieces of 4 codes,
  // 16 sums a thread, the 32 column groups on the 32 lanes, K split across
  // the 4 warps, 30 rows a thread).
  // ROUNDTRIP-LABEL: gpu.func @four_heads
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}}, %{{.*}} bits 4 into %{{.*}} scratch %{{.*}} :
  // CHECK-LABEL: gpu.func @four_heads
  gpu.func @four_heads() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<480xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : !rows120
    %out = kvgpu.shared_buffer 10240 : !f32s
    %partials = kvgpu.shared_buffer 12288 : memref<1536xf32, #gpu.address_space<workgroup>>
    // The codes are read as i16 pieces of the same shared bytes.
    // CHECK: memref.view %{{.*}}[%{{.*}}][] : memref<?xi8, #gpu.address_space<workgroup>> to memref<3840xi16, #gpu.address_space<workgroup>>
    // One row a loop iteration, 30 iterations, 16 sums carried.
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c30 step %c1 iter_args({{.*}}) -> (f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32, f32) {
    // CHECK: memref.load %{{.*}} : memref<3840xi16
    // CHECK: arith.extui %{{.*}} : i16 to i32
    // Codes widened through the 2^23 magic number, no integer conversion.
    // CHECK: arith.ori %{{.*}}, %c1258291200_i32
    // CHECK: arith.bitcast %{{.*}} : i32 to f32
    // CHECK: arith.subf
    // CHECK-NOT: arith.uitofp
    // CHECK: llvm.intr.fma
    // CHECK: scf.yield
    // No lane splits: no shuffles. The first warp split writes out, the
    // other three their partials; after a barrier every thread adds them.
    // CHECK-NOT: gpu.shuffle
    // CHECK: gpu.barrier
    // CHECK: arith.addf
    // CHECK: gpu.return
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %partials
        : memref<480xf32, #gpu.address_space<workgroup>>, !rows120, !f32s, memref<1536xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // fma, one query head: 32-bit pieces of 8 codes, 16 column groups on 16 lanes,
  // K split 2 ways across lanes (one xor shuffle at lane distance 16 a sum)
  // and 4 across warps.
  // CHECK-LABEL: gpu.func @one_head
  gpu.func @one_head() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<120xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : !rows120
    %out = kvgpu.shared_buffer 10240 : memref<128xf32, #gpu.address_space<workgroup>>
    %partials = kvgpu.shared_buffer 12288 : memref<384xf32, #gpu.address_space<workgroup>>
    // CHECK: to memref<1920xi32, #gpu.address_space<workgroup>>
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c15 step %c1
    // CHECK-COUNT-8: gpu.shuffle  xor %{{.*}}, %c16_i32, %c32_i32 : f32
    // CHECK-NOT: gpu.shuffle
    // CHECK: gpu.barrier
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %partials
        : memref<120xf32, #gpu.address_space<workgroup>>, !rows120,
          memref<128xf32, #gpu.address_space<workgroup>>,
          memref<384xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // head_major a ([H, K]: 8 heads x 128 rows) scaled_by an f16 [K]: the
  // split reads a[head * 128 + row] and multiplies it by scale[row] in f32
  // before splitting it into bf16 parts; nothing else changes.
  // ROUNDTRIP-LABEL: gpu.func @head_major_scaled
  // ROUNDTRIP: kvgpu.packed_matmul %{{.*}} head_major scaled_by %{{.*}}, %{{.*}} bits 4 transposed into %{{.*}} scratch %{{.*}} : memref<1024xf32, #gpu.address_space<workgroup>> scaled_by memref<128xf16, #gpu.address_space<workgroup>>,
  // CHECK-LABEL: gpu.func @head_major_scaled
  gpu.func @head_major_scaled() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<1024xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 4096 : memref<128x64xi8, #gpu.address_space<workgroup>>
    %out = kvgpu.shared_buffer 12288 : memref<1024xf32, #gpu.address_space<workgroup>>
    %frags = kvgpu.shared_buffer 16384 : memref<1024xf32, #gpu.address_space<workgroup>>
    %scale = kvgpu.shared_buffer 20480 : memref<128xf16, #gpu.address_space<workgroup>>
    // CHECK: scf.for
    // CHECK: %[[S:.*]] = memref.load %{{.*}}[%[[ROW:.*]]] : memref<128xf16, #gpu.address_space<workgroup>>
    // CHECK-NEXT: %[[SF:.*]] = arith.extf %[[S]] : f16 to f32
    // CHECK-NEXT: %[[AT:.*]] = arith.muli %{{.*}}, %c128 : index
    // CHECK-NEXT: %[[IDX:.*]] = arith.addi %[[AT]], %[[ROW]] : index
    // CHECK-NEXT: %[[X:.*]] = memref.load %{{.*}}[%[[IDX]]] : memref<1024xf32, #gpu.address_space<workgroup>>
    // CHECK-NEXT: arith.mulf %[[X]], %[[SF]] : f32
    // CHECK: vector.store
    // CHECK: gpu.barrier
    // CHECK-COUNT-32: nvvm.mma.sync
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: gpu.return
    kvgpu.packed_matmul %a head_major scaled_by %scale, %codes bits 4 transposed into %out scratch %frags
        : memref<1024xf32, #gpu.address_space<workgroup>> scaled_by memref<128xf16, #gpu.address_space<workgroup>>,
          memref<128x64xi8, #gpu.address_space<workgroup>>,
          memref<1024xf32, #gpu.address_space<workgroup>>,
          memref<1024xf32, #gpu.address_space<workgroup>>
    gpu.return
  }

  // The fma strategy reads head_major a and its row's scale the same way
  // (one scale load a row, shared by the row's heads).
  // CHECK-LABEL: gpu.func @head_major_scaled_fma
  gpu.func @head_major_scaled_fma() kernel attributes {kvgpu.num_warps = 4 : i64} {
    %a = kvgpu.shared_buffer 0 : memref<120xf32, #gpu.address_space<workgroup>>
    %codes = kvgpu.shared_buffer 2048 : !rows120
    %out = kvgpu.shared_buffer 10240 : memref<128xf32, #gpu.address_space<workgroup>>
    %partials = kvgpu.shared_buffer 12288 : memref<384xf32, #gpu.address_space<workgroup>>
    %scale = kvgpu.shared_buffer 14336 : memref<120xf32, #gpu.address_space<workgroup>>
    // CHECK: scf.for %{{.*}} = %{{.*}} to %c15 step %c1
    // CHECK: %[[S:.*]] = memref.load %{{.*}}[%[[ROW:.*]]] : memref<120xf32, #gpu.address_space<workgroup>>
    // CHECK: %[[X:.*]] = memref.load %{{.*}}[%{{.*}}] : memref<120xf32, #gpu.address_space<workgroup>>
    // CHECK-NEXT: arith.mulf %[[X]], %[[S]] : f32
    // CHECK: llvm.intr.fma
    kvgpu.packed_matmul %a head_major scaled_by %scale, %codes bits 4 into %out scratch %partials
        : memref<120xf32, #gpu.address_space<workgroup>> scaled_by memref<120xf32, #gpu.address_space<workgroup>>,
          !rows120, memref<128xf32, #gpu.address_space<workgroup>>,
          memref<384xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
