// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.split_bf16x2: hi is one cvt.rn.bf16x2.f32 of the pair (x1 in the
// intrinsic's first, high, operand), widened back (a shift and a mask); lo
// the same conversion of the two rests x - hi.

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @split
  // ROUNDTRIP: %{{.*}}, %{{.*}} = kvgpu.split_bf16x2 %{{.*}}, %{{.*}}
  // CHECK-LABEL: gpu.func @split
  // CHECK-NOT: kvgpu.split_bf16x2
  // CHECK: %[[HI:.*]] = llvm.call_intrinsic "llvm.nvvm.ff2bf16x2.rn"(%arg1, %arg0) : (f32, f32) -> vector<2xbf16>
  // CHECK-NEXT: %[[HIWORD:.*]] = llvm.bitcast %[[HI]] : vector<2xbf16> to i32
  // hi widened back by integer ops on the word (no fpext of the pair:
  // LLVM splits it into two registers and joins them again):
  // CHECK-NEXT: %[[SHL:.*]] = arith.shli %[[HIWORD]], %c16_i32
  // CHECK-NEXT: %[[AND:.*]] = arith.andi %[[HIWORD]], %c-65536_i32
  // CHECK-NEXT: %[[W0:.*]] = arith.bitcast %[[SHL]] : i32 to f32
  // CHECK-NEXT: %[[W1:.*]] = arith.bitcast %[[AND]] : i32 to f32
  // CHECK-NEXT: %[[R0:.*]] = arith.subf %arg0, %[[W0]]
  // CHECK-NEXT: %[[R1:.*]] = arith.subf %arg1, %[[W1]]
  // CHECK-NEXT: %[[LO:.*]] = llvm.call_intrinsic "llvm.nvvm.ff2bf16x2.rn"(%[[R1]], %[[R0]])
  // CHECK-NEXT: %[[LOWORD:.*]] = llvm.bitcast %[[LO]] : vector<2xbf16> to i32
  // CHECK: memref.store %[[HIWORD]]
  // CHECK: memref.store %[[LOWORD]]
  gpu.func @split(%x0: f32, %x1: f32, %out: memref<2xi32>) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %hi, %lo = kvgpu.split_bf16x2 %x0, %x1
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    memref.store %hi, %out[%c0] : memref<2xi32>
    memref.store %lo, %out[%c1] : memref<2xi32>
    gpu.return
  }
}
