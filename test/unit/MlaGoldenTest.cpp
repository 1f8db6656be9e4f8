//===- MlaGoldenTest.cpp - the MLA CPU reference against the public one ---===//
//
// docs/kvarn.md, "MLA records": the golden cases under test/data/golden/mla,
// made on the GPU machine by the public reference's own MLA flush and decode
// (test/gpu/peer/mla_golden.py). The same bars as the dense path: flush codes
// >= 99% equal, one step at most, dequantized tiles within 5e-3; decode
// within 4e-4 relative L2 of exact fp64 attention over the cache.
//
//===----------------------------------------------------------------------===//

#include "MlaCase.h"

#include "kvarn/Golden/Compare.h"
#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Reference/Mla.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

using namespace kvarn;
using kvarn::test::MlaCase;

namespace {

double relL2(const std::vector<float> &a, const std::vector<float> &b) {
  return relativeL2(a.data(), b.data(), std::min(a.size(), b.size()));
}

} // namespace

TEST(MlaGolden, FlushAgreesWithThePublicReference) {
  MlaCase c = MlaCase::load("flush_mla_k4_g128_r512_e64_a");
  const MlaRecordLayout &l = c.layout;
  ASSERT_GT(l.recordBytes, 0);
  const int64_t tiles = c.integer("tiles");
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim;
  auto lat = c.tensor<uint16_t>("lat_rot", "float16");
  auto rope = c.tensor<uint16_t>("rope", "float16");
  auto peer = c.tensor<uint8_t>("records_peer", "uint8");
  ASSERT_EQ(int64_t(lat.size()), tiles * g * r);
  ASSERT_EQ(int64_t(peer.size()), tiles * l.recordBytes);
  int64_t codes = 0, equal = 0, bytesEqual = 0;
  int maxStep = 0;
  double worstTile = 0;
  std::vector<uint8_t> ours(l.recordBytes);
  std::vector<double> a(size_t(g) * r), b(size_t(g) * r), ra(size_t(g) * e),
      rb(size_t(g) * e);
  for (int64_t t = 0; t < tiles; ++t) {
    const uint8_t *theirs = peer.data() + t * l.recordBytes;
    encodeMlaRecord(l, lat.data() + t * g * r, rope.data() + t * g * e,
                    ours.data());
    QuantizedTile qa = decodeMlaRecord(l, ours.data());
    QuantizedTile qb = decodeMlaRecord(l, theirs);
    for (size_t i = 0; i < qa.codes.size(); ++i) {
      ++codes;
      equal += qa.codes[i] == qb.codes[i];
      maxStep = std::max(maxStep, std::abs(int(qa.codes[i]) - qb.codes[i]));
    }
    for (int64_t i = 0; i < l.recordBytes; ++i)
      bytesEqual += ours[i] == theirs[i];
    dequantizeMlaRecord(l, ours.data(), a.data(), ra.data());
    dequantizeMlaRecord(l, theirs, b.data(), rb.data());
    worstTile = std::max(worstTile, relativeL2(a.data(), b.data(), a.size()));
    ASSERT_EQ(0, std::memcmp(ours.data() + l.rope, theirs + l.rope,
                             size_t(g) * e * 2))
        << "tile " << t << ": the rope keys are stored as given";
  }
  std::printf("[ figures  ] MLA flush vs the reference: codes %.5f%%, bytes "
              "%.5f%%, step %d, worst tile %.2e\n",
              100.0 * equal / codes,
              100.0 * bytesEqual / (tiles * l.recordBytes), maxStep, worstTile);
  EXPECT_GE(double(equal) / codes, 0.99);
  EXPECT_LE(maxStep, 1);
  EXPECT_LE(worstTile, 5e-3);
}

class MlaDecodeCase : public ::testing::TestWithParam<const char *> {};

TEST_P(MlaDecodeCase, MatchesExactAttentionOverTheCache) {
  test::MlaDecodeInputs d = test::MlaDecodeInputs::load(GetParam());
  ASSERT_GT(d.layout().recordBytes, 0);
  std::vector<float> out = d.reference(d.q);
  ASSERT_EQ(out.size(), d.exact.size());
  double vsExact = relL2(out, d.exact), peerVsExact = relL2(d.peer, d.exact);
  std::printf("[ figures  ] %s: ours vs exact %.2e; the reference's kernels "
              "vs exact %.2e\n",
              GetParam(), vsExact, peerVsExact);
  EXPECT_LE(vsExact, 4e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Golden, MlaDecodeCase,
    ::testing::Values("decode_mla_k4_g128_r512_e64_h16_a",
                      "decode_mla_k4_g128_r512_e64_h128_a"));
