// RUN: kvarn-opt %s -split-input-file -kvt-select-launch -convert-kvt-to-kvgpu | FileCheck %s
// Register rows: a load_tile -> convert -> rotate -> convert -> store_tile
// chain on rows of 32 x E elements, whose tiles nothing else reads, stays in
// registers (kvgpu.fragment_*, no shared memory); the chains of a kernel
// made only of them go to warps of their own, or, with a grid, its
// programs are packed into CTAs (several a warp where the rows are short). Anything else keeps the
// shared-memory lowering.

// append's shape: K and V rows loaded before the slot is checked, rotated
// and stored inside the branch; one warp each.
// CHECK-LABEL: gpu.func @append_like
// CHECK-SAME: known_block_size = array<i32: 64, 1, 1>
// CHECK-SAME: kvgpu.num_warps = 2
// CHECK-SAME: kvgpu.shared_bytes = 0
// CHECK-NOT: kvgpu.shared_buffer
// CHECK: %[[K:.*]] = kvgpu.fragment_load %arg0[%{{.*}}] stride %{{.*}} warp 0 : vector<4xf16>
// CHECK: %[[V:.*]] = kvgpu.fragment_load %arg1[%{{.*}}] stride %{{.*}} warp 1 : vector<4xf16>
// CHECK: scf.if
// CHECK: %[[KF:.*]] = arith.extf %[[K]] : vector<4xf16> to vector<4xf32>
// CHECK: %[[KR:.*]] = kvgpu.fragment_fwht %[[KF]] scale 0.0883883461 warp 0 : vector<4xf32>
// CHECK: %[[VF:.*]] = arith.extf %[[V]] : vector<4xf16> to vector<4xf32>
// CHECK: %[[VR:.*]] = kvgpu.fragment_fwht %[[VF]] scale 0.0883883461 warp 1 : vector<4xf32>
// CHECK: %[[KH:.*]] = arith.truncf %[[KR]] : vector<4xf32> to vector<4xf16>
// CHECK: kvgpu.fragment_store %[[KH]], %arg2[%{{.*}}] stride %{{.*}} warp 0 : vector<4xf16>
// CHECK: %[[VH:.*]] = arith.truncf %[[VR]] : vector<4xf32> to vector<4xf16>
// CHECK: kvgpu.fragment_store %[[VH]], %arg3[%{{.*}}] stride %{{.*}} warp 1 : vector<4xf16>
// CHECK-NOT: kvgpu.barrier
// CHECK: gpu.return
func.func @append_like(%k: !kvt.ptr<f16>, %v: !kvt.ptr<f16>, %pk: !kvt.ptr<f16>,
                       %pv: !kvt.ptr<f16>, %src: i64, %dst: i64, %slot: i32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %c0 = arith.constant 0 : i32
  %go = arith.cmpi sge, %slot, %c0 : i32
  %k16 = kvt.load_tile %k[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  %v16 = kvt.load_tile %v[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  scf.if %go {
    %kf = kvt.convert %k16 : !kvt.tile<1x128xf16> -> !kvt.tile<1x128xf32>
    %kr = kvt.rotate %kf : !kvt.tile<1x128xf32>
    %vf = kvt.convert %v16 : !kvt.tile<1x128xf16> -> !kvt.tile<1x128xf32>
    %vr = kvt.rotate %vf : !kvt.tile<1x128xf32>
    %kh = kvt.convert %kr : !kvt.tile<1x128xf32> -> !kvt.tile<1x128xf16>
    kvt.store_tile %kh, %pk[%dst] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
    %vh = kvt.convert %vr : !kvt.tile<1x128xf32> -> !kvt.tile<1x128xf16>
    kvt.store_tile %vh, %pv[%dst] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  }
  return
}

// -----

// bf16 in, a rank-1 row of 256 (8 channels per lane), a byte stride from a
// kernel argument (checked at run time by the loads and stores).
// CHECK-LABEL: gpu.func @bf16_rank1
// CHECK-SAME: kvgpu.num_warps = 1
// CHECK: %[[S:.*]] = arith.muli %arg3, %c2_i64
// CHECK: %[[X:.*]] = kvgpu.fragment_load %arg0[%{{.*}}] stride %[[S]] warp 0 : vector<8xbf16>
// CHECK: %[[F:.*]] = arith.extf %[[X]] : vector<8xbf16> to vector<8xf32>
// CHECK: %[[R:.*]] = kvgpu.fragment_fwht %[[F]] scale 6.250000e-02 warp 0 : vector<8xf32>
// CHECK: %[[H:.*]] = arith.truncf %[[R]] : vector<8xf32> to vector<8xf16>
// CHECK: kvgpu.fragment_store %[[H]], %arg1
func.func @bf16_rank1(%p: !kvt.ptr<bf16>, %q: !kvt.ptr<f16>, %o: i64, %s: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 256, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%s) : !kvt.ptr<bf16> -> !kvt.tile<256xbf16>
  %f = kvt.convert %x : !kvt.tile<256xbf16> -> !kvt.tile<256xf32>
  %r = kvt.rotate %f : !kvt.tile<256xf32>
  %h = kvt.convert %r : !kvt.tile<256xf32> -> !kvt.tile<256xf16>
  kvt.store_tile %h, %q[%o] strides(%s) : !kvt.tile<256xf16>, !kvt.ptr<f16>
  return
}

// -----

// The rotated row is also transposed: the chain is not closed, so it goes
// through shared memory (and the kernel keeps one warp).
// CHECK-LABEL: gpu.func @shared_use
// CHECK-SAME: kvgpu.num_warps = 1
// CHECK-NOT: kvgpu.fragment_
// CHECK: kvgpu.copy_in
// CHECK: kvgpu.fwht %{{.*}} chunks 1 x 128
// CHECK-NOT: kvgpu.fragment_
func.func @shared_use(%p: !kvt.ptr<f32>, %o: i64, %c1: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%c1, %c1) : !kvt.ptr<f32> -> !kvt.tile<1x128xf32>
  %r = kvt.rotate %x : !kvt.tile<1x128xf32>
  kvt.store_tile %r, %p[%o] strides(%c1, %c1) : !kvt.tile<1x128xf32>, !kvt.ptr<f32>
  %t = kvt.transpose %r : !kvt.tile<1x128xf32>
  kvt.store_tile %t, %p[%o] strides(%c1, %c1) : !kvt.tile<128x1xf32>, !kvt.ptr<f32>
  return
}

// -----

// 96 = paley1(12) x sylvester(8) needs the dense mix: shared memory.
// CHECK-LABEL: gpu.func @kronecker
// CHECK-NOT: kvgpu.fragment_
// CHECK: kvgpu.fwht %{{.*}} chunks 12 x 8
// CHECK: kvgpu.dense_mix
func.func @kronecker(%p: !kvt.ptr<f32>, %o: i64, %c1: i64)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 96, gqa = 1>} {
  %x = kvt.load_tile %p[%o] strides(%c1, %c1) : !kvt.ptr<f32> -> !kvt.tile<1x96xf32>
  %r = kvt.rotate %x : !kvt.tile<1x96xf32>
  kvt.store_tile %r, %p[%o] strides(%c1, %c1) : !kvt.tile<1x96xf32>, !kvt.ptr<f32>
  return
}

// -----

// With a grid (axis 0 named by a parameter) the programs of a kernel made
// only of register rows are packed: 4 warps a CTA, each program (all its
// chains) in the lanes its rows take, 8 elements of a 128-element row a
// lane: 16 lanes, two programs a warp, 8 a CTA; program_id(0) =
// blockIdx.x * 8 + tid / 16, and the programs past the grid's extent skip
// the whole body.
// CHECK-LABEL: gpu.func @packed
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK-SAME: kvgpu.num_warps = 4
// CHECK-SAME: kvgpu.programs_per_cta = 8
// CHECK-SAME: kvgpu.shared_bytes = 0
// CHECK: %[[B:.*]] = gpu.block_id x
// CHECK: %[[T:.*]] = gpu.thread_id x
// CHECK: %[[G:.*]] = arith.divui %[[T]], %c16
// CHECK: %[[B8:.*]] = arith.muli %[[B]], %c8
// CHECK: %[[P:.*]] = arith.addi %[[B8]], %[[G]]
// CHECK: %[[P32:.*]] = arith.index_cast %[[P]] : index to i32
// CHECK: %[[IN:.*]] = arith.cmpi slt, %[[P32]], %arg2 : i32
// CHECK: scf.if %[[IN]] {
// CHECK: kvgpu.fragment_load %arg0{{.*}} warp 0 : vector<8xf16>
// CHECK: kvgpu.fragment_load %arg1{{.*}} warp 0 : vector<8xf16>
// CHECK: kvgpu.fragment_store {{.*}} warp 0 : vector<8xf16>
// CHECK: kvgpu.fragment_store {{.*}} warp 0 : vector<8xf16>
// CHECK: }
// CHECK-NEXT: gpu.return
func.func @packed(%k: !kvt.ptr<f16>, %v: !kvt.ptr<f16>, %n: i32 {kvt.name = "n"})
    attributes {kvt.kernel, kvt.grid = ["n", 4],
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %t64 = arith.extsi %t : i32 to i64
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %src = arith.muli %t64, %c128 : i64
  %x = kvt.load_tile %k[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  %y = kvt.load_tile %v[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  kvt.store_tile %y, %k[%src] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  kvt.store_tile %x, %v[%src] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  return
}

// -----

// A 512-element row beside a 64-element one (MLA's latent and rope): 16
// elements a lane of the longest at most, so each program takes a whole
// warp, one a warp as before.
// CHECK-LABEL: gpu.func @packed_wide
// CHECK-SAME: kvgpu.programs_per_cta = 4
// CHECK: arith.divui %{{.*}}, %c32
// CHECK: kvgpu.fragment_load %arg0{{.*}} warp 0 : vector<16xf16>
// CHECK: kvgpu.fragment_load %arg1{{.*}} warp 0 : vector<2xf16>
func.func @packed_wide(%k: !kvt.ptr<f16>, %v: !kvt.ptr<f16>, %n: i32 {kvt.name = "n"})
    attributes {kvt.kernel, kvt.grid = ["n"],
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %t64 = arith.extsi %t : i32 to i64
  %c512 = arith.constant 512 : i64
  %c1 = arith.constant 1 : i64
  %src = arith.muli %t64, %c512 : i64
  %x = kvt.load_tile %k[%src] strides(%c512, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x512xf16>
  %y = kvt.load_tile %v[%src] strides(%c512, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x64xf16>
  kvt.store_tile %x, %k[%src] strides(%c512, %c1) : !kvt.tile<1x512xf16>, !kvt.ptr<f16>
  kvt.store_tile %y, %v[%src] strides(%c512, %c1) : !kvt.tile<1x64xf16>, !kvt.ptr<f16>
  return
}

// -----

// A scalar store (thread 0 of the CTA stores) keeps one program a CTA; the
// two chains go to warps of their own.
// CHECK-LABEL: gpu.func @scalar_store
// CHECK-SAME: kvgpu.num_warps = 2
// CHECK-NOT: programs_per_cta
// CHECK: kvgpu.fragment_load %arg0{{.*}} warp 0
// CHECK: kvgpu.fragment_load %arg1{{.*}} warp 1
func.func @scalar_store(%k: !kvt.ptr<f16>, %v: !kvt.ptr<f16>, %n: i32 {kvt.name = "n"})
    attributes {kvt.kernel, kvt.grid = ["n"],
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %t64 = arith.extsi %t : i32 to i64
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %src = arith.muli %t64, %c128 : i64
  %x = kvt.load_tile %k[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  %y = kvt.load_tile %v[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  kvt.store_tile %y, %k[%src] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  kvt.store_tile %x, %v[%src] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  %h = arith.constant 1.0 : f16
  kvt.store %h, %k[%t] : !kvt.ptr<f16>, i32
  return
}
