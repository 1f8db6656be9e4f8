//===- LayoutTest.cpp - presets and record layout -------------------------===//

#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

using namespace kvarn;

static RecordLayout layoutFor(const char *preset, int headDim) {
  kvarn::Expected<const Preset *> p = lookupPreset(preset);
  EXPECT_TRUE(bool(p));
  kvarn::Expected<RecordLayout> l = RecordLayout::get(**p, headDim);
  EXPECT_TRUE(bool(l));
  return *l;
}

// The offsets docs/kvarn.md, "Record layout", lists for k4v2_g128 at D = 128.
TEST(RecordLayout, SpecExampleOffsets) {
  RecordLayout l = layoutFor("kvarn_k4v2_g128", 128);
  EXPECT_EQ(l.kCodes, 0);
  EXPECT_EQ(l.kScale, 8192);
  EXPECT_EQ(l.kZero, 8448);
  EXPECT_EQ(l.kTokenScale, 8704);
  EXPECT_EQ(l.vCodes, 8960);
  EXPECT_EQ(l.vChannelScale, 13056);
  EXPECT_EQ(l.vScale, 13312);
  EXPECT_EQ(l.vZero, 13568);
  EXPECT_EQ(l.recordBytes, 13824);
  EXPECT_EQ(l.recordBytes / l.group, 108); // bytes per token per head
}

TEST(RecordLayout, SpecExampleSizes) {
  EXPECT_EQ(layoutFor("kvarn_k4v2_g64", 128).recordBytes, 7296);
  EXPECT_EQ(layoutFor("kvarn_k4v4_g128", 128).recordBytes, 17920);
  // D >= 256: per-token share rounded up to a power of two (210 -> 256).
  RecordLayout d256 = layoutFor("kvarn_k4v2_g128", 256);
  EXPECT_EQ(d256.unalignedBytes, 26880);
  EXPECT_EQ(d256.recordBytes, 32768);
}

TEST(RecordLayout, EverySupportedShapeIsConsistent) {
  for (const Preset &p : allPresets())
    for (int d = kMinHeadDim; d <= kMaxHeadDim; d += kHeadDimMultiple) {
      RecordLayout l = layoutFor(p.name, d);
      EXPECT_EQ(l.kScale - l.kCodes, int64_t(d) * p.group * p.keyBits / 8);
      EXPECT_EQ(l.vChannelScale - l.vCodes,
                int64_t(d) * p.group * p.valueBits / 8);
      bool e4m3 = p.scales == ScaleFormat::E4M3;
      EXPECT_EQ(l.scaleBytes(), e4m3 ? 1 : 2);
      EXPECT_EQ(l.kZero - l.kScale, int64_t(d) * l.scaleBytes());
      EXPECT_EQ(l.vZero - l.vScale, int64_t(p.group) * l.scaleBytes());
      // E4M3: the four shared exponents after the last field.
      EXPECT_EQ(l.scaleExponents, e4m3 ? l.vZero + 2 * p.group : -1);
      EXPECT_EQ(l.unalignedBytes,
                l.vZero + 2 * p.group + (e4m3 ? kScaleFieldCount : 0));
      EXPECT_GE(l.recordBytes, l.unalignedBytes);
      EXPECT_EQ(l.recordBytes % 8, 0);
      // fp16 fields at even offsets, every scale and code field 16-byte
      // aligned (cp.async copies them whole).
      EXPECT_EQ(l.kZero % 2, 0);
      EXPECT_EQ(l.vZero % 2, 0);
      for (int64_t at :
           {l.kScale, l.kTokenScale, l.vCodes, l.vChannelScale, l.vScale})
        EXPECT_EQ(at % 16, 0) << p.name << " D " << d;
    }
}

TEST(Preset, TableAndErrors) {
  ASSERT_EQ(allPresets().size(), 8u);
  for (const Preset &p : allPresets()) // the e4m3 twin of every preset
    EXPECT_TRUE(bool(lookupPreset(
        std::string(p.name) + (p.scales == ScaleFormat::E4M3 ? "" : "_e4m3"))))
        << p.name;
  EXPECT_STREQ(defaultPreset().name, "kvarn_k4v2_g128");
  kvarn::Expected<const Preset *> bad = lookupPreset("kvarn_k3v1_g32");
  ASSERT_FALSE(bool(bad));
  std::string message;
  EXPECT_EQ(consumeError(bad.takeError(), message), KVARN_ERROR_UNKNOWN_PRESET);
  EXPECT_NE(message.find("kvarn_k3v1_g32"), std::string::npos);
  EXPECT_NE(message.find("kvarn_k4v2_g128"), std::string::npos);

  for (int d : {0, 48, 72, 100, 528, 1024, -128}) {
    kvarn::Error err = checkHeadDim(d);
    ASSERT_TRUE(bool(err)) << d;
    EXPECT_EQ(consumeError(std::move(err), message),
              KVARN_ERROR_UNSUPPORTED_SHAPE);
    EXPECT_NE(message.find(std::to_string(d)), std::string::npos);
  }
  for (int d : {64, 80, 96, 112, 128, 144, 368, 512})
    EXPECT_FALSE(bool(checkHeadDim(d))) << d;
}
