// RUN: kvarn-opt %s -kvarn-kvt-to-nvvm -nvvm-attach-target="chip=sm_90 features=+ptx80 O=3" -gpu-module-to-binary="format=isa" | FileCheck %s
// RUN: kvarn-opt %s -kvarn-kvt-to-nvvm -nvvm-attach-target="chip=sm_90 features=+ptx80 O=3" -gpu-module-to-binary="format=isa" | FileCheck %s --check-prefix=EXACT
// The instructions that matter in a flush kernel's PTX: 16-byte asynchronous copies
// of the pool tiles, warp shuffles for the Sinkhorn reductions, dynamic (not
// static) shared memory, and only correctly rounded fp32 arithmetic
// (TileArithmetic.h): roots and reciprocals are MUFU approximations with
// their fma corrections and no special-case branch (TileArithmeticEmitters.h),
// no exp/log, so the codes are the CPU reference's bit for bit.

// EXACT-NOT: {{[[:space:]]sqrt\.|ex2|lg2|div\.approx|div\.full}}
// CHECK: .extern .shared .align 16 .b8 __dynamic_shmem__0[];
// CHECK: .maxntid 256, 1, 1
// CHECK: .minnctapersm {{[1-9]}}
// CHECK-NOT: .local
// CHECK-DAG: cp.async.cg.shared.global
// CHECK-DAG: cp.async.wait_group
// CHECK-DAG: shfl.sync.bfly.b32
// CHECK-DAG: rsqrt.approx.ftz.f32
// CHECK-DAG: rcp.approx.ftz.f32
// CHECK-DAG: fma.rn.f32
// CHECK-DAG: div.rn.f32
// CHECK-DAG: cvt.rni.s32.f32
// CHECK-DAG: st.global
// CHECK-DAG: bar.sync
func.func @flush(%pool_k: !kvt.ptr<f16>, %pool_v: !kvt.ptr<f16>, %tile_slots: !kvt.ptr<i32>,
                 %tile_blocks: !kvt.ptr<i32>, %cache: !kvt.ptr<i8>, %num_tiles: i32, %hk: i32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %h = kvt.program_id 1
  %slot = kvt.load %tile_slots[%t] : !kvt.ptr<i32>, i32
  %block = kvt.load %tile_blocks[%t] : !kvt.ptr<i32>, i32
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %rb = arith.constant 13824 : i64
  %slot64 = arith.extsi %slot : i32 to i64
  %h64 = arith.extsi %h : i32 to i64
  %hk64 = arith.extsi %hk : i32 to i64
  %block64 = arith.extsi %block : i32 to i64
  // ((slot * G) * Hk + h) * D
  %a = arith.muli %slot64, %c128 : i64
  %b = arith.muli %a, %hk64 : i64
  %c = arith.addi %b, %h64 : i64
  %base = arith.muli %c, %c128 : i64
  %row = arith.muli %hk64, %c128 : i64
  %k16 = kvt.load_tile %pool_k[%base] strides(%row, %c1) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
  %v16 = kvt.load_tile %pool_v[%base] strides(%row, %c1) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
  %k = kvt.convert %k16 : !kvt.tile<128x128xf16> -> !kvt.tile<128x128xf32>
  %kt = kvt.transpose %k : !kvt.tile<128x128xf32>
  %kcs, %krs = kvt.normalize %kt iters = 8 : !kvt.tile<128x128xf32>
  %kc, %ks, %kz, %ktok = kvt.quantize %kt, %kcs, %krs bits = 4 : !kvt.tile<128x128xf32>
  %kp = kvt.pack %kc bits = 4 : !kvt.tile<128x128xi8>
  %bh = arith.muli %block64, %hk64 : i64
  %bh2 = arith.addi %bh, %h64 : i64
  %rec = arith.muli %bh2, %rb : i64
  kvt.store_field %kp, %cache[%rec] <k_codes> : !kvt.tile<128x64xi8>, !kvt.ptr<i8>
  kvt.store_field %ks, %cache[%rec] <k_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %kz, %cache[%rec] <k_zero> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %ktok, %cache[%rec] <k_token_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  %v = kvt.convert %v16 : !kvt.tile<128x128xf16> -> !kvt.tile<128x128xf32>
  %vcs, %vrs = kvt.normalize %v iters = 8 : !kvt.tile<128x128xf32>
  %vc, %vs, %vz, %vch = kvt.quantize %v, %vcs, %vrs bits = 2 : !kvt.tile<128x128xf32>
  %vp = kvt.pack %vc bits = 2 : !kvt.tile<128x128xi8>
  kvt.store_field %vp, %cache[%rec] <v_codes> : !kvt.tile<128x32xi8>, !kvt.ptr<i8>
  kvt.store_field %vch, %cache[%rec] <v_channel_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %vs, %cache[%rec] <v_scale> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  kvt.store_field %vz, %cache[%rec] <v_zero> : !kvt.tile<128xf16>, !kvt.ptr<i8>
  return
}
