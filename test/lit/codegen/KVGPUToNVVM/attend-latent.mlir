// RUN: kvarn-opt %s | kvarn-opt | FileCheck %s --check-prefix=ROUNDTRIP
// RUN: kvarn-opt %s -convert-kvgpu-to-nvvm | FileCheck %s
// kvgpu.attend_latent, 4 warps, 4 query heads, R = 256, E = 32, G = 64
// (LatentAttendLayout in KVGPU.h): the warps' scores over their own tokens,
// one meeting for the max, the weighted sums over each warp's channels.
// With 12 heads (two head tiles of 8) each code fragment feeds both tiles'
// products.

#s = #gpu.address_space<workgroup>
gpu.module @m {
  // ROUNDTRIP-LABEL: gpu.func @latent
  // ROUNDTRIP: kvgpu.attend_latent q %{{.*}}, %{{.*}} latent %{{.*}} bits 4 scales %{{.*}}, %{{.*}}, %{{.*}} rope %{{.*}} state
  // CHECK-LABEL: gpu.func @latent
  gpu.func @latent(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<4x256xf32, #s>
    %qr = kvgpu.shared_buffer 4096 : memref<4x32xf16, #s>
    %codes = kvgpu.shared_buffer 4352 : memref<64x128xi8, #s>
    %cs = kvgpu.shared_buffer 12544 : memref<256xf16, #s>
    %cz = kvgpu.shared_buffer 13056 : memref<256xf16, #s>
    %ct = kvgpu.shared_buffer 13568 : memref<64xf16, #s>
    %rope = kvgpu.shared_buffer 13696 : memref<64x32xf16, #s>
    %m = kvgpu.shared_buffer 17792 : memref<4xf32, #s>
    %l = kvgpu.shared_buffer 17808 : memref<4xf32, #s>
    %acc = kvgpu.shared_buffer 17824 : memref<4x256xf32, #s>
    %scratch = kvgpu.shared_buffer 21920 : memref<2344xf32, #s>
    // 1. q * scale: a thread's word column of a head, two 16-byte loads of
    // q and one of the 8 scales, stored as two split fragments at the
    // swizzled lane (xor); the rope query's fragments; one barrier.
    // CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<1024xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<1024xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<256xf16, #gpu.address_space<workgroup>>, vector<8xf16>
    // CHECK: arith.xori
    // CHECK: vector.store %{{.*}} {alignment = 16 : i64} : memref<2344xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: vector.store %{{.*}} {alignment = 16 : i64} : memref<2344xf32, #gpu.address_space<workgroup>>, vector<4xf32>
    // CHECK: gpu.barrier
    // 2. Scores: a lane's 16-byte run of each of its two token rows; the
    // codes masked in place as f16 subnormals (0x000F000F, then after the
    // shift by 8 the same: class 0; 0x00F000F0: class 1); f16 MMAs, the
    // codes' 16 k tiles and the rope's two (a lane's 16-byte run of
    // each of its rope rows), two parts each; the warps'
    // maxima, one barrier.
    // CHECK-NOT: gpu.barrier
    // CHECK: vector.load %{{.*}} {alignment = 16 : i64} : memref<2048xi32, #gpu.address_space<workgroup>>, vector<4xi32>
    // CHECK: arith.andi %{{.*}}, %c983055_i32 : i32
    // CHECK: arith.shrui %{{.*}}, %c8_i32 : i32
    // CHECK: arith.andi %{{.*}}, %c983055_i32 : i32
    // CHECK-COUNT-2: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK: arith.andi %{{.*}}, %c15728880_i32 : i32
    // CHECK-COUNT-34: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: nvvm.mma.sync
    // CHECK-COUNT-3: gpu.shuffle  xor
    // CHECK: gpu.barrier
    // 3. The probabilities: exp, p * token_scale as f16 parts (a lane and
    // its xor-4 partner make a token pair), the sums; one barrier.
    // CHECK: nvvm.ex2.approx.ftz.f32
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: gpu.barrier
    // 4. The weighted sums: a code word of each of the 4 token rows of a
    // fragment, interleaved by prmt, its codes f16 subnormals as the
    // scores', f16 MMAs (4 k tiles x 2 parts x 4 m tiles), no barrier; the
    // warp's channels of the state in place.
    // CHECK-NOT: gpu.barrier
    // CHECK: nvvm.prmt
    // CHECK: arith.andi %{{.*}}, %c983055_i32 : i32
    // CHECK-COUNT-32: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: gpu.barrier
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: gpu.return
    kvgpu.attend_latent q %q, %qr latent %codes bits 4 scales %cs, %cz, %ct rope %rope state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<4x256xf32, #s>, memref<4x32xf16, #s>, memref<64x128xi8, #s>, memref<256xf16, #s>, memref<256xf16, #s>, memref<64xf16, #s>, memref<64x32xf16, #s>, memref<4xf32, #s>, memref<4xf32, #s>, memref<4x256xf32, #s>, memref<4xf32, #s>, memref<4xf32, #s>, memref<4x256xf32, #s>, memref<2344xf32, #s>
    gpu.return
  }

  // 12 heads: two head tiles. The codes of each k tile and class are masked
  // once and multiplied by both tiles' fragments (4 MMAs, 2 parts each);
  // twice the products of 4 heads, the same code conversion.
  // CHECK-LABEL: gpu.func @latent_two_head_tiles
  gpu.func @latent_two_head_tiles(%valid: i32, %scale: f32) kernel attributes {kvgpu.num_warps = 4 : i64} {
    %q = kvgpu.shared_buffer 0 : memref<12x256xf32, #s>
    %qr = kvgpu.shared_buffer 12288 : memref<12x32xf16, #s>
    %codes = kvgpu.shared_buffer 13056 : memref<64x128xi8, #s>
    %cs = kvgpu.shared_buffer 21248 : memref<256xf16, #s>
    %cz = kvgpu.shared_buffer 21760 : memref<256xf16, #s>
    %ct = kvgpu.shared_buffer 22272 : memref<64xf16, #s>
    %rope = kvgpu.shared_buffer 22400 : memref<64x32xf16, #s>
    %m = kvgpu.shared_buffer 26496 : memref<12xf32, #s>
    %l = kvgpu.shared_buffer 26560 : memref<12xf32, #s>
    %acc = kvgpu.shared_buffer 26624 : memref<12x256xf32, #s>
    %scratch = kvgpu.shared_buffer 38912 : memref<4688xf32, #s>
    // CHECK: gpu.barrier
    // CHECK: arith.andi %{{.*}}, %c983055_i32 : i32
    // CHECK: arith.shrui %{{.*}}, %c8_i32 : i32
    // CHECK: arith.andi %{{.*}}, %c983055_i32 : i32
    // CHECK-COUNT-4: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK: arith.andi %{{.*}}, %c15728880_i32 : i32
    // CHECK-COUNT-68: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: gpu.barrier
    // CHECK: arith.truncf %{{.*}} : vector<2xf32> to vector<2xf16>
    // CHECK: gpu.barrier
    // CHECK: nvvm.prmt
    // CHECK-COUNT-64: nvvm.mma.sync {{.*}} : (vector<2xf16>, vector<2xf16>, f32)
    // CHECK-NOT: nvvm.mma.sync
    // CHECK: gpu.return
    kvgpu.attend_latent q %q, %qr latent %codes bits 4 scales %cs, %cz, %ct rope %rope state %m, %l, %acc valid %valid softmax_scale %scale into %m, %l, %acc scratch %scratch : memref<12x256xf32, #s>, memref<12x32xf16, #s>, memref<64x128xi8, #s>, memref<256xf16, #s>, memref<256xf16, #s>, memref<64xf16, #s>, memref<64x32xf16, #s>, memref<12xf32, #s>, memref<12xf32, #s>, memref<12x256xf32, #s>, memref<12xf32, #s>, memref<12xf32, #s>, memref<12x256xf32, #s>, memref<4688xf32, #s>
    gpu.return
  }
}
