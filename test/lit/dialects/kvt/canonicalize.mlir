// RUN: kvarn-opt %s -canonicalize | FileCheck %s

// CHECK-LABEL: func.func @transpose_twice
// CHECK-SAME: (%[[T:.*]]: !kvt.tile<4x8xf32>)
// CHECK-NEXT: return %[[T]]
func.func @transpose_twice(%t: !kvt.tile<4x8xf32>) -> !kvt.tile<4x8xf32> {
  %a = kvt.transpose %t : !kvt.tile<4x8xf32>
  %b = kvt.transpose %a : !kvt.tile<8x4xf32>
  return %b : !kvt.tile<4x8xf32>
}

// Widening f16 to f32 and narrowing back is exact; narrowing first is not.
// CHECK-LABEL: func.func @convert_round_trip
// CHECK-SAME: (%[[T:.*]]: !kvt.tile<4xf16>, %[[F:.*]]: !kvt.tile<4xf32>)
// CHECK-NEXT: %[[N:.*]] = kvt.convert %[[F]] : !kvt.tile<4xf32> -> !kvt.tile<4xf16>
// CHECK-NEXT: %[[W:.*]] = kvt.convert %[[N]] : !kvt.tile<4xf16> -> !kvt.tile<4xf32>
// CHECK-NEXT: return %[[T]], %[[W]]
func.func @convert_round_trip(%t: !kvt.tile<4xf16>, %f: !kvt.tile<4xf32>)
    -> (!kvt.tile<4xf16>, !kvt.tile<4xf32>) {
  %a = kvt.convert %t : !kvt.tile<4xf16> -> !kvt.tile<4xf32>
  %b = kvt.convert %a : !kvt.tile<4xf32> -> !kvt.tile<4xf16>
  %c = kvt.convert %f : !kvt.tile<4xf32> -> !kvt.tile<4xf16>
  %d = kvt.convert %c : !kvt.tile<4xf16> -> !kvt.tile<4xf32>
  return %b, %d : !kvt.tile<4xf16>, !kvt.tile<4xf32>
}

// pack(unpack(x)) is x; unpack(pack(codes)) is the codes only when they came
// from a quantize of the same width (so they fit the width).
// CHECK-LABEL: func.func @pack_unpack
// CHECK-SAME: (%[[P:.*]]: !kvt.tile<4x2xi8>, %[[C:.*]]: !kvt.tile<4x8xi8>
// CHECK-NEXT: %[[PC:.*]] = kvt.pack %[[C]] bits = 4
// CHECK-NEXT: %[[UC:.*]] = kvt.unpack %[[PC]] bits = 4
// CHECK-NEXT: %[[Q:.*]], %{{.*}}, %{{.*}}, %{{.*}} = kvt.quantize
// CHECK-NEXT: return %[[P]], %[[UC]], %[[Q]]
func.func @pack_unpack(%p: !kvt.tile<4x2xi8>, %c: !kvt.tile<4x8xi8>, %t: !kvt.tile<4x8xf32>,
                       %cs: !kvt.tile<8xf32>, %rs: !kvt.tile<4xf32>)
    -> (!kvt.tile<4x2xi8>, !kvt.tile<4x8xi8>, !kvt.tile<4x8xi8>) {
  %u = kvt.unpack %p bits = 2 : !kvt.tile<4x2xi8>
  %r = kvt.pack %u bits = 2 : !kvt.tile<4x8xi8>
  %pc = kvt.pack %c bits = 4 : !kvt.tile<4x8xi8>
  %uc = kvt.unpack %pc bits = 4 : !kvt.tile<4x4xi8>
  %q:4 = kvt.quantize %t, %cs, %rs bits = 4 : !kvt.tile<4x8xf32>
  %pq = kvt.pack %q#0 bits = 4 : !kvt.tile<4x8xi8>
  %uq = kvt.unpack %pq bits = 4 : !kvt.tile<4x4xi8>
  return %r, %uc, %uq : !kvt.tile<4x2xi8>, !kvt.tile<4x8xi8>, !kvt.tile<4x8xi8>
}

// Pure ops whose results are unused disappear.
// CHECK-LABEL: func.func @dead
// CHECK-NEXT: return
func.func @dead(%t: !kvt.tile<4x128xf32>) {
  %r = kvt.rotate %t : !kvt.tile<4x128xf32>
  %c, %s = kvt.normalize %t iters = 8 : !kvt.tile<4x128xf32>
  return
}
