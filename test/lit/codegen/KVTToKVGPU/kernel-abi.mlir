// RUN: kvarn-opt %s -kvt-select-launch -convert-kvt-to-kvgpu | FileCheck %s
// A kvt kernel becomes a gpu.func kernel: !kvt.ptr -> !llvm.ptr<1>, scalars
// kept, two trailing scratch pointers (Triton's convention), launch facts as
// attributes. (Two rows: a single row would stay in registers,
// register-rows.mlir.)

// CHECK: module attributes {gpu.container_module}
// CHECK: gpu.module @kvarn_kernels
// CHECK: gpu.func @copy_rows(%{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: i32, %{{.*}}: f32, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>) kernel
// CHECK-SAME: known_block_size = array<i32: 32, 1, 1>
// CHECK-SAME: kvgpu.num_warps = 1
// CHECK-SAME: kvgpu.shared_bytes = 512
// CHECK: gpu.block_id x
// CHECK: kvgpu.global_load
// CHECK: kvgpu.shared_buffer 0 : memref<2x128xf16, #gpu.address_space<workgroup>>
// CHECK: kvgpu.copy_in
// CHECK-NEXT: kvgpu.barrier
// CHECK: kvgpu.copy_out
// A prefetch keeps its range, the offset in bytes (2 per f16).
// CHECK: %[[AT:.*]] = arith.muli %{{.*}}, %c2_i64{{.*}} : i64
// CHECK: kvgpu.prefetch %{{.*}}[%[[AT]]] bytes 512
// CHECK: gpu.return
func.func @copy_rows(%src: !kvt.ptr<f16>, %dst: !kvt.ptr<f16>, %n: i32, %unused: f32)
    attributes {kvt.kernel, kvt.spec = #kvt.spec<"kvarn_k4v2_g128", head_dim = 128, gqa = 1>} {
  %t = kvt.program_id 0
  %off = arith.extsi %t : i32 to i64
  %c128 = arith.constant 128 : i64
  %c1 = arith.constant 1 : i64
  %base = arith.muli %off, %c128 : i64
  %x = kvt.load %src[%t] : !kvt.ptr<f16>, i32
  %row = kvt.load_tile %src[%base] strides(%c128, %c1) : !kvt.ptr<f16> -> !kvt.tile<2x128xf16>
  kvt.store_tile %row, %dst[%base] strides(%c128, %c1) : !kvt.tile<2x128xf16>, !kvt.ptr<f16>
  kvt.prefetch %src[%base] bytes 512 : !kvt.ptr<f16>
  return
}
