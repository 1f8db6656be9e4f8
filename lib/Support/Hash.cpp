//===- Hash.cpp - SHA-256 and XXH3-64, without LLVM -----------------------===//
//
// Written from FIPS 180-4 and the xxHash specification (doc/xxhash_spec.md
// of Cyan4973/xxHash): portable scalar code, little-endian reads.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Support/Hash.h"

#include <algorithm>
#include <cstring>

using namespace kvarn;

namespace {

uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
uint64_t rotl64(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }

uint32_t readLE32(const uint8_t *p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
         uint32_t(p[3]) << 24;
}
uint64_t readLE64(const uint8_t *p) {
  return uint64_t(readLE32(p)) | uint64_t(readLE32(p + 4)) << 32;
}
uint32_t bswap32(uint32_t x) { return __builtin_bswap32(x); }
uint64_t bswap64(uint64_t x) { return __builtin_bswap64(x); }

//===----------------------------------------------------------------------===//
// SHA-256
//===----------------------------------------------------------------------===//

constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

//===----------------------------------------------------------------------===//
// XXH3-64
//===----------------------------------------------------------------------===//

constexpr uint64_t kPrime32_1 = 0x9E3779B1U;
constexpr uint64_t kPrime32_2 = 0x85EBCA77U;
constexpr uint64_t kPrime32_3 = 0xC2B2AE3DU;
constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t kPrimeMx1 = 0x165667919E3779F9ULL;
constexpr uint64_t kPrimeMx2 = 0x9FB21C651E98DF25ULL;

constexpr uint8_t kSecret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c,
    0xf7, 0x21, 0xad, 0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb,
    0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e,
    0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
    0x81, 0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb,
    0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97,
    0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7,
    0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31,
    0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, 0xea, 0xc5, 0xac, 0x83,
    0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26,
    0x29, 0xd4, 0x68, 0x9e, 0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc,
    0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, 0x45, 0xcb, 0x3a, 0x8f,
    0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

uint64_t avalanche(uint64_t x) {
  x ^= x >> 37;
  x *= kPrimeMx1;
  return x ^ (x >> 32);
}

uint64_t avalancheXxh64(uint64_t x) {
  x ^= x >> 33;
  x *= kPrime64_2;
  x ^= x >> 29;
  x *= kPrime64_3;
  return x ^ (x >> 32);
}

/// The 128-bit product of a and b, its halves xor-ed.
uint64_t foldedProduct(uint64_t a, uint64_t b) {
  unsigned __int128 p = (unsigned __int128)a * b;
  return uint64_t(p) ^ uint64_t(p >> 64);
}

uint64_t mixStep(const uint8_t *data, size_t secretOffset) {
  return foldedProduct(readLE64(data) ^ readLE64(kSecret + secretOffset),
                       readLE64(data + 8) ^
                           readLE64(kSecret + secretOffset + 8));
}

uint64_t hashUpTo16(const uint8_t *p, size_t len) {
  if (len > 8) {
    uint64_t low =
        (readLE64(kSecret + 24) ^ readLE64(kSecret + 32)) ^ readLE64(p);
    uint64_t high = (readLE64(kSecret + 40) ^ readLE64(kSecret + 48)) ^
                    readLE64(p + len - 8);
    return avalanche(len + bswap64(low) + high + foldedProduct(low, high));
  }
  if (len >= 4) {
    uint64_t combined = uint64_t(readLE32(p + len - 4)) | uint64_t(readLE32(p))
                                                              << 32;
    uint64_t value =
        (readLE64(kSecret + 8) ^ readLE64(kSecret + 16)) ^ combined;
    value ^= rotl64(value, 49) ^ rotl64(value, 24);
    value *= kPrimeMx2;
    value ^= (value >> 35) + len;
    value *= kPrimeMx2;
    return value ^ (value >> 28);
  }
  if (len > 0) {
    uint32_t combined = uint32_t(p[len - 1]) | uint32_t(len) << 8 |
                        uint32_t(p[0]) << 16 | uint32_t(p[len >> 1]) << 24;
    return avalancheXxh64(uint64_t(readLE32(kSecret) ^ readLE32(kSecret + 4)) ^
                          combined);
  }
  return avalancheXxh64(readLE64(kSecret + 56) ^ readLE64(kSecret + 64));
}

uint64_t hash17To128(const uint8_t *p, size_t len) {
  uint64_t acc = len * kPrime64_1;
  size_t rounds = ((len - 1) >> 5) + 1;
  for (size_t i = rounds; i-- > 0;) {
    acc += mixStep(p + i * 16, i * 32);
    acc += mixStep(p + len - i * 16 - 16, i * 32 + 16);
  }
  return avalanche(acc);
}

uint64_t hash129To240(const uint8_t *p, size_t len) {
  uint64_t acc = len * kPrime64_1;
  size_t chunks = len >> 4;
  for (size_t i = 0; i < 8; ++i)
    acc += mixStep(p + i * 16, i * 16);
  acc = avalanche(acc);
  for (size_t i = 8; i < chunks; ++i)
    acc += mixStep(p + i * 16, (i - 8) * 16 + 3);
  acc += mixStep(p + len - 16, 119);
  return avalanche(acc);
}

void accumulate(uint64_t acc[8], const uint8_t *stripe, size_t secretOffset) {
  for (int i = 0; i < 8; ++i) {
    uint64_t lane = readLE64(stripe + 8 * i);
    uint64_t value = lane ^ readLE64(kSecret + secretOffset + 8 * i);
    acc[i ^ 1] += lane;
    acc[i] += (value & 0xFFFFFFFFULL) * (value >> 32);
  }
}

void scramble(uint64_t acc[8]) {
  for (int i = 0; i < 8; ++i) {
    acc[i] ^= acc[i] >> 47;
    acc[i] ^= readLE64(kSecret + sizeof(kSecret) - 64 + 8 * i);
    acc[i] *= kPrime32_1;
  }
}

uint64_t hashLong(const uint8_t *p, size_t len) {
  constexpr size_t kStripesPerBlock = (sizeof(kSecret) - 64) / 8;
  constexpr size_t kBlockBytes = 64 * kStripesPerBlock;
  uint64_t acc[8] = {kPrime32_3, kPrime64_1, kPrime64_2, kPrime64_3,
                     kPrime64_4, kPrime32_2, kPrime64_5, kPrime32_1};
  size_t blocks = (len - 1) / kBlockBytes; // the last block is left over
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t n = 0; n < kStripesPerBlock; ++n)
      accumulate(acc, p + b * kBlockBytes + n * 64, n * 8);
    scramble(acc);
  }
  const uint8_t *last = p + blocks * kBlockBytes;
  size_t lastLen = len - blocks * kBlockBytes;
  for (size_t n = 0; n < (lastLen - 1) / 64; ++n)
    accumulate(acc, last + n * 64, n * 8);
  accumulate(acc, p + len - 64, sizeof(kSecret) - 71);
  uint64_t result = len * kPrime64_1;
  for (int i = 0; i < 4; ++i)
    result += foldedProduct(acc[2 * i] ^ readLE64(kSecret + 11 + 16 * i),
                            acc[2 * i + 1] ^ readLE64(kSecret + 19 + 16 * i));
  return avalanche(result);
}

} // namespace

Sha256::Sha256()
    : state{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
            0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::compress(const uint8_t *block) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = bswap32(readLE32(block + 4 * i));
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 =
        rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 =
        rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3], e = state[4],
           f = state[5], g = state[6], h = state[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t s1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
    uint32_t choose = (e & f) ^ (~e & g);
    uint32_t t1 = h + s1 + choose + kRound[i] + w[i];
    uint32_t s0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
    uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = s0 + majority;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  state[0] += a;
  state[1] += b;
  state[2] += c;
  state[3] += d;
  state[4] += e;
  state[5] += f;
  state[6] += g;
  state[7] += h;
}

void Sha256::update(std::string_view bytes) {
  const auto *p = reinterpret_cast<const uint8_t *>(bytes.data());
  size_t n = bytes.size();
  length += n;
  if (buffered) {
    size_t take = std::min(n, buffer.size() - buffered);
    std::memcpy(buffer.data() + buffered, p, take);
    buffered += take;
    p += take;
    n -= take;
    if (buffered < buffer.size())
      return;
    compress(buffer.data());
    buffered = 0;
  }
  for (; n >= 64; p += 64, n -= 64)
    compress(p);
  std::memcpy(buffer.data(), p, n);
  buffered = n;
}

std::array<uint8_t, 32> Sha256::final() {
  uint64_t bits = length * 8;
  static const uint8_t kPad[64] = {0x80};
  update(std::string_view(reinterpret_cast<const char *>(kPad),
                          buffered < 56 ? 56 - buffered : 120 - buffered));
  uint8_t tail[8];
  for (int i = 0; i < 8; ++i)
    tail[i] = uint8_t(bits >> (56 - 8 * i));
  update(std::string_view(reinterpret_cast<const char *>(tail), 8));
  std::array<uint8_t, 32> digest;
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 4; ++j)
      digest[4 * i + j] = uint8_t(state[i] >> (24 - 8 * j));
  return digest;
}

uint64_t kvarn::xxh3_64(std::string_view bytes) {
  const auto *p = reinterpret_cast<const uint8_t *>(bytes.data());
  size_t len = bytes.size();
  if (len <= 16)
    return hashUpTo16(p, len);
  if (len <= 128)
    return hash17To128(p, len);
  if (len <= 240)
    return hash129To240(p, len);
  return hashLong(p, len);
}
