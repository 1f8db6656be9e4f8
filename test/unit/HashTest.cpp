//===- HashTest.cpp - SHA-256 and XXH3-64 without LLVM --------------------===//
//
// kvarn's hashes (Support/Hash.h) against LLVM's, which the kernel cache
// used before them (so entries keep their names and checksums), on fresh
// random inputs of every length up to 2,100 bytes (every XXH3 size class
// and block boundary, every SHA-256 padding case), fed to SHA-256 in random
// pieces, and on long inputs; and SHA-256 against FIPS 180-4's examples.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Support/Hash.h"
#include "TestUtil.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/xxhash.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

using namespace kvarn;

namespace {

std::string hex(const std::array<uint8_t, 32> &digest) {
  return llvm::toHex(digest, /*LowerCase=*/true);
}

std::string sha256(std::string_view bytes) {
  Sha256 sha;
  sha.update(bytes);
  return hex(sha.final());
}

std::string llvmSha256(const std::string &bytes) {
  return hex(llvm::SHA256::hash(llvm::arrayRefFromStringRef(bytes)));
}

std::string randomBytes(std::mt19937_64 &rng, size_t n) {
  std::string s(n, '\0');
  for (char &c : s)
    c = char(rng());
  return s;
}

TEST(Hash, Sha256KnownAnswers) {
  EXPECT_EQ(sha256(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Hash, MatchesLlvmOnEveryLength) {
  std::mt19937_64 rng(test::freshSeed());
  for (size_t n = 0; n <= 2100; ++n) {
    std::string bytes = randomBytes(rng, n);
    ASSERT_EQ(xxh3_64(bytes), llvm::xxh3_64bits(llvm::StringRef(bytes)))
        << n << " bytes";
    ASSERT_EQ(sha256(bytes), llvmSha256(bytes)) << n << " bytes";
    // The same digest whatever the pieces the bytes come in.
    Sha256 pieces;
    for (size_t at = 0; at < n;) {
      size_t take = std::min<size_t>(n - at, rng() % 130);
      pieces.update(std::string_view(bytes).substr(at, take));
      at += take;
    }
    ASSERT_EQ(hex(pieces.final()), llvmSha256(bytes)) << n << " bytes";
  }
}

TEST(Hash, MatchesLlvmOnLongInputs) {
  std::mt19937_64 rng(test::freshSeed());
  for (size_t n : {size_t(1) << 16, (size_t(1) << 20) + 13, size_t(3000017)}) {
    std::string bytes = randomBytes(rng, n);
    EXPECT_EQ(xxh3_64(bytes), llvm::xxh3_64bits(llvm::StringRef(bytes))) << n;
    EXPECT_EQ(sha256(bytes), llvmSha256(bytes)) << n;
  }
}

} // namespace
