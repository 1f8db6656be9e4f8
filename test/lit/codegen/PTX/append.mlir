// RUN: kvarn-opt %s -kvarn-kvt-to-nvvm -nvvm-attach-target="chip=sm_90 features=+ptx80 O=3" -gpu-module-to-binary="format=isa" > %t
// RUN: FileCheck %s < %t
// RUN: FileCheck %s --check-prefix=NONE < %t
// append's PTX (lib/kernels/append.kvt at head_dim 128): its tiles are all
// register rows, so each half-warp (16 lanes) runs one program (a (token,
// head) pair: its K and V rows) and a CTA of 4 warps runs 8 consecutive
// tokens, the last CTA's programs past num_tokens doing nothing. Each lane
// loads and stores its 8 channels of a row with one 16-byte access (2-byte
// volatile accesses only on the misaligned path), both rows' loads issued
// before the slot lookups' results are needed; the rotations are in
// registers, 3 stages inside a lane and 4 with shuffles that name only the
// program's half of the warp; no shared memory, no barrier, no local
// memory.

// (The PTX is one escaped string: \09 is a tab.)
// CHECK: .visible .entry append(
// CHECK: .maxntid 128, 1, 1
// program = ctaid.x * 8 + tid / 16, against num_tokens:
// CHECK: mov.u32 \09%[[CTA:r[0-9]+]], %ctaid.x;
// CHECK: shr.u32 \09%[[HALF:r[0-9]+]], %{{r[0-9]+}}, 4;
// CHECK: shl.b32 \09%[[BASE:r[0-9]+]], %[[CTA]], 3;
// CHECK: or.b32 \09%[[T:r[0-9]+]], %[[BASE]], %[[HALF]];
// CHECK: ld.param.b32 \09%[[N:r[0-9]+]], [append_param_6];
// CHECK: setp.ge.s32 \09%{{p[0-9]+}}, %[[T]], %[[N]];
// The slot, then both rows (16 bytes a lane), then the slot's test:
// CHECK: ld.global.b32 \09%[[SLOT:r[0-9]+]],
// CHECK: ld.global.v4.b32
// CHECK: ld.global.v4.b32
// CHECK: setp.lt.s32 \09%{{p[0-9]+}}, %[[SLOT]], 0;
// CHECK: ld.global.s32
// The shuffles' member mask: 0xffff << (tid & 16).
// CHECK: and.b32 \09%[[AT:r[0-9]+]], %{{r[0-9]+}}, 16;
// CHECK: mov.b32 \09%[[ONES:r[0-9]+]], 65535;
// CHECK: shl.b32 \09%[[MASK:r[0-9]+]], %[[ONES]], %[[AT]];
// CHECK-COUNT-32: shfl.sync.bfly.b32 \09%{{r[0-9]+}}, %{{r[0-9]+}}, {{[0-9]+}}, 31, %[[MASK]];
// CHECK-COUNT-32: shfl.sync.bfly.b32
// CHECK: cvt.rn.f16x2.f32
// CHECK: st.global.v4.b32
// CHECK: st.global.v4.b32
// CHECK: ret;
// NONE-NOT: .shared
// NONE-NOT: .local
// NONE-NOT: bar.sync
// NONE-NOT: ld.shared
// NONE-NOT: st.shared
func.func @append(%k: !kvt.ptr<f16>, %v: !kvt.ptr<f16>, %slot_mapping: !kvt.ptr<i32>,
                  %block_to_slot: !kvt.ptr<i32>, %pool_k: !kvt.ptr<f16>, %pool_v: !kvt.ptr<f16>,
                  %num_tokens: i32 {kvt.name = "num_tokens"}, %hk: i32 {kvt.name = "num_kv_heads"})
    attributes {kvt.grid = ["num_tokens", "num_kv_heads"], kvt.kernel,
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %h = kvt.program_id 1
  %slot = kvt.load %slot_mapping[%t] : !kvt.ptr<i32>, i32
  %t64 = arith.extsi %t : i32 to i64
  %hk64 = arith.extsi %hk : i32 to i64
  %h64 = arith.extsi %h : i32 to i64
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %a = arith.muli %t64, %hk64 : i64
  %b = arith.addi %a, %h64 : i64
  %src = arith.muli %b, %c128 : i64
  %k_in = kvt.load_tile %k[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  %v_in = kvt.load_tile %v[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  %c0 = arith.constant 0 : i32
  %used = arith.cmpi sge, %slot, %c0 : i32
  scf.if %used {
    %g = arith.constant 128 : i32
    %block = arith.divsi %slot, %g : i32
    %ps = kvt.load %block_to_slot[%block] : !kvt.ptr<i32>, i32
    %live = arith.cmpi sge, %ps, %c0 : i32
    scf.if %live {
      %ps64 = arith.extsi %ps : i32 to i64
      %base = arith.muli %ps64, %c128 : i64
      %off = arith.remsi %slot, %g : i32
      %off64 = arith.extsi %off : i32 to i64
      %row = arith.addi %base, %off64 : i64
      %rh = arith.muli %row, %hk64 : i64
      %rhh = arith.addi %rh, %h64 : i64
      %dst = arith.muli %rhh, %c128 : i64
      %kf = kvt.convert %k_in : !kvt.tile<1x128xf16> -> !kvt.tile<1x128xf32>
      %kr = kvt.rotate %kf : !kvt.tile<1x128xf32>
      %vf = kvt.convert %v_in : !kvt.tile<1x128xf16> -> !kvt.tile<1x128xf32>
      %vr = kvt.rotate %vf : !kvt.tile<1x128xf32>
      %kh = kvt.convert %kr : !kvt.tile<1x128xf32> -> !kvt.tile<1x128xf16>
      kvt.store_tile %kh, %pool_k[%dst] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
      %vh = kvt.convert %vr : !kvt.tile<1x128xf32> -> !kvt.tile<1x128xf16>
      kvt.store_tile %vh, %pool_v[%dst] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
    }
  }
  return
}
