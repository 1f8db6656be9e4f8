//===- Hash.h - SHA-256 and XXH3-64, without LLVM ---------------*- C++ -*-===//
//
// The kernel cache's two hashes, here so the runtime core links no LLVM for
// them: SHA-256 (FIPS 180-4) names an entry (the cache key), XXH3-64 (the
// xxHash specification, default secret, seed 0) checks each file of it.
// Both give the same values as LLVM's llvm::SHA256 and llvm::xxh3_64bits,
// which the cache used before (HashTest compares them on random inputs).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_HASH_H
#define KVARN_SUPPORT_HASH_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvarn {

/// SHA-256 of bytes given piece by piece.
class Sha256 {
public:
  Sha256();
  void update(std::string_view bytes);
  /// The digest; the object is spent afterwards.
  std::array<uint8_t, 32> final();

private:
  void compress(const uint8_t *block);
  std::array<uint32_t, 8> state;
  std::array<uint8_t, 64> buffer{};
  size_t buffered = 0;
  uint64_t length = 0; // bytes so far
};

/// XXH3-64 of `bytes` (default secret, seed 0).
uint64_t xxh3_64(std::string_view bytes);

} // namespace kvarn

#endif // KVARN_SUPPORT_HASH_H
