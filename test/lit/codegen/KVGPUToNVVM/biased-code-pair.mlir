// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.biased_code_pair: the codes at `shift` of both 16-bit halves, OR-ed
// into 128.0's mantissa: a shift (none at 0) and one lop3 whose immediates
// are the two halves' mask and 0x43004300.

gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @pairs
  // ROUNDTRIP: kvgpu.biased_code_pair %{{.*}} shift 0 bits 4 : i32
  // ROUNDTRIP: kvgpu.biased_code_pair %{{.*}} shift 12 bits 4 : i32
  // ROUNDTRIP: kvgpu.biased_code_pair %{{.*}} shift 6 bits 2 : i32
  // CHECK-LABEL: gpu.func @pairs
  // CHECK-NOT: kvgpu.biased_code_pair
  // Masks 0x000F000F (4-bit codes) and 0x00030003 (2-bit), bias 0x43004300.
  // Shift 0: the lop3 alone.
  // CHECK-NOT: arith.shrui
  // CHECK: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %arg0, %c983055_i32, %c1124090624_i32 : (i32, i32, i32) -> i32
  // CHECK-NEXT: %[[S12:.*]] = arith.shrui %arg0, %c12_i32
  // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S12]], %c983055_i32, %c1124090624_i32
  // CHECK-NEXT: %[[S6:.*]] = arith.shrui %arg0, %c6_i32
  // CHECK-NEXT: llvm.inline_asm "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n" %[[S6]], %c196611_i32, %c1124090624_i32
  gpu.func @pairs(%pair: i32, %out: memref<3xi32>) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %a = kvgpu.biased_code_pair %pair shift 0 bits 4 : i32
    %b = kvgpu.biased_code_pair %pair shift 12 bits 4 : i32
    %c = kvgpu.biased_code_pair %pair shift 6 bits 2 : i32
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    memref.store %a, %out[%c0] : memref<3xi32>
    memref.store %b, %out[%c1] : memref<3xi32>
    memref.store %c, %out[%c2] : memref<3xi32>
    gpu.return
  }
}
