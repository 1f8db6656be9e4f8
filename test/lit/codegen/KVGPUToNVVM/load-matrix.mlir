// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.load_matrix: one nvvm.ldmatrix of four 8x8 b16 matrices at the
// lane's row address (element `index` of the buffer: 2 bytes each); the
// transposed form is the column layout (ldmatrix .trans).

!rows = memref<1024xi16, #gpu.address_space<workgroup>>
gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @matrices
  // ROUNDTRIP: kvgpu.load_matrix %{{.*}}[%{{.*}}] transpose : memref<1024xi16, #gpu.address_space<workgroup>> -> vector<4xi32>
  // ROUNDTRIP: kvgpu.load_matrix %{{.*}}[%{{.*}}] : memref<1024xi16, #gpu.address_space<workgroup>> -> vector<4xi32>
  // CHECK-LABEL: gpu.func @matrices
  // CHECK-NOT: kvgpu.load_matrix
  // CHECK: %[[BYTES:.*]] = arith.muli %{{.*}}, %c2_i64 : i64
  // CHECK-NEXT: %[[AT:.*]] = llvm.getelementptr %{{.*}}[%[[BYTES]]] : (!llvm.ptr<3>, i64) -> !llvm.ptr<3>, i8
  // CHECK-NEXT: %[[T:.*]] = nvvm.ldmatrix %[[AT]] {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<col>, num = 4 : i32, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>} : (!llvm.ptr<3>) -> !llvm.struct<(i32, i32, i32, i32)>
  // CHECK-COUNT-4: llvm.extractvalue %[[T]]
  // CHECK: %[[R:.*]] = nvvm.ldmatrix %{{.*}} {eltType = #nvvm.ld_st_matrix_elt_type<b16>, layout = #nvvm.mma_layout<row>, num = 4 : i32, shape = #nvvm.ld_st_matrix_shape<m = 8, n = 8>}
  // CHECK-COUNT-4: llvm.extractvalue %[[R]]
  gpu.func @matrices(%i: index, %out: memref<8xi32>) kernel attributes {kvgpu.num_warps = 1 : i64} {
    %rows = kvgpu.shared_buffer 0 : !rows
    %t = kvgpu.load_matrix %rows[%i] transpose : !rows -> vector<4xi32>
    %r = kvgpu.load_matrix %rows[%i] : !rows -> vector<4xi32>
    %c0 = arith.constant 0 : index
    %c4 = arith.constant 4 : index
    vector.store %t, %out[%c0] : memref<8xi32>, vector<4xi32>
    vector.store %r, %out[%c4] : memref<8xi32>, vector<4xi32>
    gpu.return
  }
}
