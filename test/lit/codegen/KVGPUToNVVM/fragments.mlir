// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// Register rows: each lane loads and stores its E contiguous channels with
// vector accesses when the row is contiguous and aligned (checked at run
// time), element by element otherwise; the transform is the in-register
// butterflies with shuffles. When a program has several warps each op runs
// in its own warp only. No shared memory anywhere.

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @rows
  // ROUNDTRIP: kvgpu.fragment_load %{{.*}}[%{{.*}}] stride %{{.*}} warp 1 : vector<4xf16>
  // ROUNDTRIP: kvgpu.fragment_fwht %{{.*}} scale 0.0883883461 warp 1 : vector<4xf32>
  // ROUNDTRIP: kvgpu.fragment_store %{{.*}}, %{{.*}}[%{{.*}}] stride %{{.*}} warp 1 : vector<4xf16>
  // CHECK-LABEL: gpu.func @rows
  // CHECK-NOT: memref
  // Warp 1 loads: contiguous and 8-byte aligned -> one 8-byte load per lane.
  // (warp (tid / 32) % 2 of each program: two warps a program here)
  // CHECK: %[[W:.*]] = arith.divui %{{.*}}, %c32
  // CHECK: %[[IN:.*]] = arith.remui %[[W]], %c2
  // CHECK: arith.cmpi eq, %[[IN]], %c1
  // CHECK: scf.if %{{.*}} -> (vector<4xf16>)
  // CHECK: llvm.ptrtoint %arg0
  // CHECK: arith.andi %{{.*}}, %c7_i64
  // CHECK: arith.cmpi eq, %arg3, %c2_i64
  // CHECK: scf.if
  // CHECK: llvm.load %{{.*}} {alignment = 8 : i64} : !llvm.ptr<1> -> vector<4xf16>
  // CHECK: } else {
  // (volatile, so that LLVM does not merge the two paths into one
  // under-aligned load)
  // CHECK-COUNT-4: llvm.load volatile %{{.*}} : !llvm.ptr<1> -> f16
  // CHECK: } else {
  // CHECK: scf.yield %{{.*}} : vector<4xf16>
  // CHECK: arith.extf %{{.*}} : vector<4xf16> to vector<4xf32>
  // The transform: strides 1 and 2 inside the lane, 4 .. 64 across lanes.
  // CHECK: scf.if %{{.*}} -> (vector<4xf32>)
  // CHECK-COUNT-4: arith.addf
  // CHECK-NOT: gpu.barrier
  // A shuffle stage: per lane a sign (+1 lower, -1 upper), then per value
  // one shuffle and one fma(sign, mine, other) (x + y or y - x, the same
  // bits as the add or subtraction), no select.
  // CHECK: %[[SIGN:.*]] = arith.select %{{.*}}, %cst{{.*}}, %cst{{.*}} : f32
  // CHECK: %[[OTHER:.*]], %{{.*}} = gpu.shuffle  xor %[[MINE:.*]], %c1_i32
  // CHECK-NEXT: llvm.intr.fma(%[[SIGN]], %[[MINE]], %[[OTHER]])
  // CHECK-NOT: arith.select
  // CHECK-COUNT-19: gpu.shuffle  xor
  // CHECK-NOT: arith.select
  // CHECK: arith.truncf %{{.*}} : vector<4xf32> to vector<4xf16>
  // CHECK: scf.if
  // CHECK: llvm.store %{{.*}}, %{{.*}} {alignment = 8 : i64} : vector<4xf16>, !llvm.ptr<1>
  // CHECK: } else {
  // CHECK-COUNT-4: llvm.store volatile %{{.*}}, %{{.*}} : f16, !llvm.ptr<1>
  // CHECK-NOT: gpu.barrier
  // CHECK: gpu.return
  gpu.func @rows(%p: !llvm.ptr<1>, %q: !llvm.ptr<1>, %off: i64, %s: i64) kernel
      attributes {kvgpu.num_warps = 2 : i64} {
    %x = kvgpu.fragment_load %p[%off] stride %s warp 1 : vector<4xf16>
    %f = arith.extf %x : vector<4xf16> to vector<4xf32>
    %r = kvgpu.fragment_fwht %f scale 0.0883883461 warp 1 : vector<4xf32>
    %h = arith.truncf %r : vector<4xf32> to vector<4xf16>
    kvgpu.fragment_store %h, %q[%off] stride %s warp 1 : vector<4xf16>
    gpu.return
  }

  // Head_dim 512 in one warp: 16 channels per lane, two 16-byte accesses,
  // no warp test.
  // CHECK-LABEL: gpu.func @wide
  // CHECK-NOT: arith.divui
  // CHECK: arith.andi %{{.*}}, %c15_i64
  // CHECK-COUNT-2: llvm.load %{{.*}} {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8xf16>
  // CHECK: } else {
  // CHECK-COUNT-16: llvm.load volatile %{{.*}} : !llvm.ptr<1> -> f16
  // CHECK-COUNT-2: llvm.store %{{.*}}, %{{.*}} {alignment = 16 : i64} : vector<8xf16>, !llvm.ptr<1>
  gpu.func @wide(%p: !llvm.ptr<1>, %off: i64, %s: i64) kernel
      attributes {kvgpu.num_warps = 1 : i64} {
    %x = kvgpu.fragment_load %p[%off] stride %s warp 0 : vector<16xf16>
    kvgpu.fragment_store %x, %p[%off] stride %s warp 0 : vector<16xf16>
    gpu.return
  }

  // Two programs a warp (8 programs a CTA of 4 warps: 16 lanes each): a
  // lane's channels are (tid % 16) * 8 .., and the shuffles name only the
  // program's 16 lanes (0xffff << (tid & 16)): the programs branch apart on
  // their own slots, so a full-warp shuffle could wait on lanes that never
  // come.
  // CHECK-LABEL: gpu.func @half_warp
  // CHECK-NOT: arith.divui
  // CHECK: arith.remui %{{.*}}, %c16 : index
  // CHECK: llvm.load %{{.*}} {alignment = 16 : i64} : !llvm.ptr<1> -> vector<8xf16>
  // CHECK: arith.extf
  // CHECK: %[[LX:.*]] = arith.remui %{{.*}}, %c16 : index
  // CHECK: %[[L:.*]] = arith.index_cast %[[LX]] : index to i32
  // CHECK: %[[T:.*]] = arith.index_cast %{{.*}} : index to i32
  // CHECK: %[[AT:.*]] = arith.andi %[[T]], %c16_i32
  // CHECK: %[[MASK:.*]] = arith.shli %c65535_i32, %[[AT]]
  // CHECK-COUNT-12: arith.addf
  // CHECK: arith.andi %[[L]], %c1_i32
  // CHECK: nvvm.shfl.sync  bfly %[[MASK]], %{{.*}}, %c1_i32, %c31_i32 : f32 -> f32
  // CHECK-COUNT-31: nvvm.shfl.sync  bfly %[[MASK]]
  // CHECK-NOT: gpu.shuffle
  // CHECK: llvm.store %{{.*}}, %{{.*}} {alignment = 16 : i64} : vector<8xf16>, !llvm.ptr<1>
  gpu.func @half_warp(%p: !llvm.ptr<1>, %off: i64, %s: i64) kernel
      attributes {kvgpu.num_warps = 4 : i64, kvgpu.programs_per_cta = 8 : i64} {
    %x = kvgpu.fragment_load %p[%off] stride %s warp 0 : vector<8xf16>
    %f = arith.extf %x : vector<8xf16> to vector<8xf32>
    %r = kvgpu.fragment_fwht %f scale 0.0883883461 warp 0 : vector<8xf32>
    %h = arith.truncf %r : vector<8xf32> to vector<8xf16>
    kvgpu.fragment_store %h, %p[%off] stride %s warp 0 : vector<8xf16>
    gpu.return
  }
}
