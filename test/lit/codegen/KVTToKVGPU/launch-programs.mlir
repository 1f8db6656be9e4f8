// RUN: kvarn-opt %s -split-input-file -convert-kvt-to-kvgpu -verify-diagnostics | FileCheck %s
// A kernel's kvt.launch may be written by hand (kvt-select-launch's choice
// overridden in the IR): programs_per_cta must split the CTA into whole
// warps or equal parts of one of at least 4 lanes (threadsPerProgram,
// LaunchPolicy.h); convert-kvt-to-kvgpu lowers by what it says.

// 16 programs a CTA of 4 warps: 8 lanes a program, a 128-element row 16
// elements a lane; program_id(0) = blockIdx.x * 16 + tid / 8.
// CHECK-LABEL: gpu.func @eight_lanes
// CHECK-SAME: kvgpu.num_warps = 4
// CHECK-SAME: kvgpu.programs_per_cta = 16
// CHECK: %[[T:.*]] = gpu.thread_id x
// CHECK: arith.divui %[[T]], %c8
// CHECK: kvgpu.fragment_load %arg0{{.*}} warp 0 : vector<16xf16>
// CHECK: kvgpu.fragment_store {{.*}} warp 0 : vector<16xf16>
func.func @eight_lanes(%k: !kvt.ptr<f16>, %n: i32 {kvt.name = "n"})
    attributes {kvt.kernel, kvt.grid = ["n"],
                kvt.launch = {ctas_per_sm = 1 : i64, num_warps = 4 : i64, programs_per_cta = 16 : i64},
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %t64 = arith.extsi %t : i32 to i64
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %src = arith.muli %t64, %c128 : i64
  %x = kvt.load_tile %k[%src] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  %f = kvt.convert %x : !kvt.tile<1x128xf16> -> !kvt.tile<1x128xf32>
  %r = kvt.rotate %f : !kvt.tile<1x128xf32>
  %h = kvt.convert %r : !kvt.tile<1x128xf32> -> !kvt.tile<1x128xf16>
  kvt.store_tile %h, %k[%src] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  return
}

// -----

// 3 programs do not split 4 warps evenly: refused.
// expected-error @+1 {{has no valid 'kvt.launch'}}
func.func @three_programs(%k: !kvt.ptr<f16>, %n: i32 {kvt.name = "n"})
    attributes {kvt.kernel, kvt.grid = ["n"],
                kvt.launch = {ctas_per_sm = 1 : i64, num_warps = 4 : i64, programs_per_cta = 3 : i64},
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %x = kvt.load_tile %k[%c1] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  kvt.store_tile %x, %k[%c1] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  return
}

// -----

// 64 programs of 4 warps would be 2 lanes each: fewer than 4, refused.
// expected-error @+1 {{has no valid 'kvt.launch'}}
func.func @two_lanes(%k: !kvt.ptr<f16>, %n: i32 {kvt.name = "n"})
    attributes {kvt.kernel, kvt.grid = ["n"],
                kvt.launch = {ctas_per_sm = 1 : i64, num_warps = 4 : i64, programs_per_cta = 64 : i64},
                kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %x = kvt.load_tile %k[%c1] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<1x128xf16>
  kvt.store_tile %x, %k[%c1] strides(%c128, %c1) : !kvt.tile<1x128xf16>, !kvt.ptr<f16>
  return
}
