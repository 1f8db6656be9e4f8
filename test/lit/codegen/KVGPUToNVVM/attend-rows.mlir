// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.attend_rows, 4 warps, 4 query heads, head_dim 128, 64 fp16 rows
// (a pool block's chunk; RowsAttendLayout in KVGPU.h): each warp attends
// its 16 tokens on f16 tensor cores fed by ldmatrix, the warps' partials
// meet at one barrier.

!f32x4x128 = memref<4x128xf32, #gpu.address_space<workgroup>>
!f32x4 = memref<4xf32, #gpu.address_space<workgroup>>
!rows = memref<64x128xf16, #gpu.address_space<workgroup>>
gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @rows
  // ROUNDTRIP: kvgpu.attend_rows q %{{.*}} keys %{{.*}} values %{{.*}} state %{{.*}}, %{{.*}}, %{{.*}} from %{{.*}} valid %{{.*}} softmax_scale %{{.*}} into
  // CHECK-LABEL: gpu.func @rows
  gpu.func @rows(%from: i32, %valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %k = kvgpu.shared_buffer 2048 : !rows
    %v = kvgpu.shared_buffer 18432 : !rows
    %m = kvgpu.shared_buffer 34816 : !f32x4
    %l = kvgpu.shared_buffer 34832 : !f32x4
    %acc = kvgpu.shared_buffer 34848 : !f32x4x128
    %m2 = kvgpu.shared_buffer 36896 : !f32x4
    %l2 = kvgpu.shared_buffer 36912 : !f32x4
    %acc2 = kvgpu.shared_buffer 36928 : !f32x4x128
    %scratch = kvgpu.shared_buffer 38976 : memref<3248xf32, #gpu.address_space<workgroup>>
    // 1. The CTA splits q into f16 hi + lo B fragments (one 16-byte store
    // a fragment), zeros for the lanes of heads past 4, one barrier.
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: vector.store %{{.*}} {alignment = 16 : i64} : memref<3248xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: gpu.barrier
    // 2. Scores: per k tile one ldmatrix of K's rows (not transposed) and
    // two f16 MMAs (hi, lo), 8 k tiles; no barrier.
    // CHECK-NOT: gpu.barrier
    // CHECK: nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, num = 4 : i32, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}
    // CHECK-COUNT-16: nvvm.mma.sync {{.*}} {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32)
    // 3. The softmax: tokens outside [from, valid) masked, the max and sum
    // over the lanes of a head (xor 4, 8, 16), the probabilities through
    // the warp's scratch as f16 pairs.
    // CHECK: arith.cmpi sge
    // CHECK: arith.cmpi slt
    // CHECK-COUNT-6: gpu.shuffle  xor
    // CHECK: llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f32"
    // CHECK: nvvm.bar.warp.sync
    // 4. Weighted values: per channel tile one transposed ldmatrix of V's
    // rows and two f16 MMAs; no barrier.
    // CHECK-NOT: gpu.barrier
    // CHECK: nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<col>, num = 4 : i32, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}
    // CHECK-COUNT-16: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: nvvm.mma.sync
    // 5. Partials, the incoming max and sum into the scratch; one barrier;
    // 6. the merge (no per-channel scale, no zero terms).
    // CHECK: nvvm.bar.warp.sync
    // CHECK: gpu.barrier
    // CHECK-NOT: gpu.barrier
    // CHECK: vector.store {{.*}} : memref<512xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: gpu.return
    kvgpu.attend_rows q %q keys %k values %v state %m, %l, %acc from %from valid %valid softmax_scale %scale into %m2, %l2, %acc2 scratch %scratch : !f32x4x128, !rows, !rows, !f32x4, !f32x4, !f32x4x128, !f32x4, !f32x4, !f32x4x128, memref<3248xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // 32 rows at head_dim 256 (POOL_ROWS there): two warps of 16 tokens
  // attend, the other two only merge.
  // CHECK-LABEL: gpu.func @two_warps
  // CHECK: gpu.barrier
  // CHECK: arith.cmpi ult, %{{.*}}, %c2
  // CHECK-NEXT: scf.if
  // CHECK: nvvm.ldmatrix
  // CHECK: gpu.barrier
  gpu.func @two_warps(%from: i32, %valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x256xf32, #gpu.address_space<workgroup>>
    %k = kvgpu.shared_buffer 4096 : memref<32x256xf16, #gpu.address_space<workgroup>>
    %v = kvgpu.shared_buffer 20480 : memref<32x256xf16, #gpu.address_space<workgroup>>
    %m = kvgpu.shared_buffer 36864 : !f32x4
    %l = kvgpu.shared_buffer 36880 : !f32x4
    %acc = kvgpu.shared_buffer 36896 : memref<4x256xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 40992 : memref<4192xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_rows q %q keys %k values %v state %m, %l, %acc from %from valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<4x256xf32, #gpu.address_space<workgroup>>, memref<32x256xf16, #gpu.address_space<workgroup>>, memref<32x256xf16, #gpu.address_space<workgroup>>, !f32x4, !f32x4, memref<4x256xf32, #gpu.address_space<workgroup>>, !f32x4, !f32x4, memref<4x256xf32, #gpu.address_space<workgroup>>, memref<4192xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
  // The state held per warp (warp_states, as attend_record's): only the
  // probabilities in the warps' scratch (1792 floats); each warp folds its
  // 16 tokens into its own row of m, l [4, 4] and acc [4, 4, 128] (a lane's
  // channels 16 i + g + 8 r one at a time), with no barrier after step 1's.
  // ROUNDTRIP-LABEL: gpu.func @rows_warp_states
  // ROUNDTRIP: scratch %{{.*}} warp_states :
  // CHECK-LABEL: gpu.func @rows_warp_states
  // CHECK: gpu.barrier
  // CHECK-NOT: gpu.barrier
  // CHECK: nvvm.bar.warp.sync
  // CHECK: memref.load %{{.*}}[%{{.*}}] : memref<16xf32, #gpu.address_space<workgroup>>
  // CHECK: nvvm.bar.warp.sync
  // CHECK-COUNT-16: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<2048xf32, #gpu.address_space<workgroup>>
  // CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<16xf32, #gpu.address_space<workgroup>>
  // CHECK-NOT: gpu.barrier
  // CHECK: gpu.return
  gpu.func @rows_warp_states(%from: i32, %valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : !f32x4x128
    %k = kvgpu.shared_buffer 2048 : !rows
    %v = kvgpu.shared_buffer 18432 : !rows
    %m = kvgpu.shared_buffer 34816 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %l = kvgpu.shared_buffer 34880 : memref<4x4xf32, #gpu.address_space<workgroup>>
    %acc = kvgpu.shared_buffer 34944 : memref<4x4x128xf32, #gpu.address_space<workgroup>>
    %scratch = kvgpu.shared_buffer 43136 : memref<1792xf32, #gpu.address_space<workgroup>>
    kvgpu.attend_rows q %q keys %k values %v state %m, %l, %acc from %from valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch warp_states : !f32x4x128, !rows, !rows, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4x128xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4xf32, #gpu.address_space<workgroup>>, memref<4x4x128xf32, #gpu.address_space<workgroup>>, memref<1792xf32, #gpu.address_space<workgroup>>
    gpu.return
  }
}
