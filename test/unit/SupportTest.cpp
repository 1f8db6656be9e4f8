//===- SupportTest.cpp - kvarn's errors, format and strings against LLVM's ===//
//
// The runtime core's replacements for LLVM's Support library (issue 15,
// item 5): format() renders as llvm::formatv does for the argument types
// kvarn's messages use (so every message is unchanged), and the string
// helpers agree with StringRef's and StringExtras' on the inputs that matter
// (empty, whitespace, signs, overflow, odd hex).
//
//===----------------------------------------------------------------------===//

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Format.h"
#include "kvarn/Support/Span.h"
#include "kvarn/Support/Strings.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/FormatVariadic.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace kvarn;

namespace {

template <typename... Ts> void expectAsFormatv(const char *fmt, Ts... values) {
  EXPECT_EQ(kvarn::format(fmt, values...), llvm::formatv(fmt, values...).str())
      << fmt;
}

TEST(Format, RendersAsFormatv) {
  expectAsFormatv("{0} of {1}", 3, 4u);
  expectAsFormatv("{0} {1} {2} {3}", int64_t(-5), uint64_t(1) << 63, size_t(7),
                  std::numeric_limits<int64_t>::min());
  expectAsFormatv("{0} {1} {2}", 0.5, 1e-9, 123456.789f);
  expectAsFormatv("{0} and {1}", true, false);
  expectAsFormatv("char {0}", 'x');
  expectAsFormatv("{0}/{1}/{2}", "text", std::string("string"),
                  llvm::StringRef("ref"));
  expectAsFormatv("'{1}' before '{0}', {1} again", "a", "b");
  expectAsFormatv("{{literal} and {0}", 1);
  expectAsFormatv("{0}: a list or {{\"shapes\": [...]}", "f.json");
  expectAsFormatv("{ 0 } and {1 }", 1, 2);
  expectAsFormatv("no arguments");
  EXPECT_EQ(kvarn::format("{0}", std::string_view("view")), "view");
  EXPECT_EQ(kvarn::format("{0}", llvm::SmallString<8>("small")), "small");
}

TEST(Error, KeepsStatusAndMessage) {
  Error ok = Error::success();
  EXPECT_FALSE(ok);
  Error err = makeError(KVARN_ERROR_IO, "cannot read '{0}'", "f");
  ASSERT_TRUE(err);
  EXPECT_EQ(err.status(), KVARN_ERROR_IO);
  Error with = withContext(std::move(err), "opening the cache");
  EXPECT_EQ(with.status(), KVARN_ERROR_IO);
  std::string message;
  EXPECT_EQ(consumeError(std::move(with), message), KVARN_ERROR_IO);
  EXPECT_EQ(message, "cannot read 'f' (opening the cache)");
  EXPECT_FALSE(withContext(Error::success(), "nothing"));
}

TEST(Error, ExpectedHoldsAValueOrTheError) {
  Expected<int> value = 7;
  ASSERT_TRUE(bool(value));
  EXPECT_EQ(*value, 7);
  EXPECT_FALSE(value.takeError());
  Expected<std::string> failed =
      makeError(KVARN_ERROR_UNKNOWN_PRESET, "unknown preset '{0}'", "p");
  ASSERT_FALSE(bool(failed));
  EXPECT_EQ(toString(failed.takeError()), "unknown preset 'p'");
  int target = 1;
  Expected<int &> reference = target;
  *reference = 2;
  EXPECT_EQ(target, 2);
  Expected<long> widened = Expected<int>(3);
  EXPECT_EQ(*widened, 3);
}

TEST(Strings, AgreeWithStringRef) {
  for (const char *s : {"", " ", " \t a b \n", "abc", "  x", "y\r\n"}) {
    llvm::StringRef r(s);
    EXPECT_EQ(trim(s), std::string_view(r.trim())) << s;
    EXPECT_EQ(ltrim(s), std::string_view(r.ltrim())) << s;
    EXPECT_EQ(rtrim(s), std::string_view(r.rtrim())) << s;
  }
  EXPECT_EQ(rtrim("a/b//", "/"), "a/b");
  for (const char *s : {"", "a", "a,,b", ",a,", "a,b,c"}) {
    llvm::SmallVector<llvm::StringRef> kept, dropped;
    llvm::StringRef(s).split(kept, ',');
    llvm::StringRef(s).split(dropped, ',', -1, /*KeepEmpty=*/false);
    std::vector<std::string_view> mine = split(s, ',');
    std::vector<std::string_view> mineDropped = split(s, ',', false);
    ASSERT_EQ(mine.size(), kept.size()) << s;
    ASSERT_EQ(mineDropped.size(), dropped.size()) << s;
    for (size_t i = 0; i < kept.size(); ++i)
      EXPECT_EQ(mine[i], std::string_view(kept[i])) << s;
    for (size_t i = 0; i < dropped.size(); ++i)
      EXPECT_EQ(mineDropped[i], std::string_view(dropped[i])) << s;
    auto [a, b] = splitOnce(s, ',');
    auto [ra, rb] = llvm::StringRef(s).split(',');
    EXPECT_EQ(a, std::string_view(ra)) << s;
    EXPECT_EQ(b, std::string_view(rb)) << s;
  }
}

TEST(Strings, ParseIntegerAsGetAsInteger) {
  for (const char *s :
       {"", "0", "42", "-42", "+1", " 1", "1 ", "12a", "2147483647",
        "2147483648", "-2147483648", "-2147483649", "18446744073709551615",
        "18446744073709551616", "0x10"}) {
    int32_t mine = 99, theirs = 99;
    EXPECT_EQ(parseInteger(s, mine),
              !llvm::StringRef(s).getAsInteger(10, theirs))
        << s;
    EXPECT_EQ(mine, theirs) << s;
    uint64_t mineU = 99, theirsU = 99;
    EXPECT_EQ(parseInteger(s, mineU),
              !llvm::StringRef(s).getAsInteger(10, theirsU))
        << s;
    EXPECT_EQ(mineU, theirsU) << s;
  }
}

TEST(Strings, HexAsStringExtras) {
  for (uint64_t v : {uint64_t(0), uint64_t(1), uint64_t(0xabcdef),
                     std::numeric_limits<uint64_t>::max()}) {
    EXPECT_EQ(hexString(v, true, 16), llvm::utohexstr(v, true, 16));
    EXPECT_EQ(hexString(v, false), llvm::utohexstr(v));
  }
  const uint8_t bytes[] = {0x00, 0x0f, 0xa5, 0xff};
  EXPECT_EQ(hexBytes(bytes, 4, true),
            llvm::toHex(llvm::ArrayRef<uint8_t>(bytes), true));
  for (const char *s : {"", "0", "a5", "A5f", "00ff", "xz", "1g"}) {
    std::string mine, theirs;
    EXPECT_EQ(bytesFromHex(s, mine), llvm::tryGetFromHex(s, theirs)) << s;
    if (llvm::tryGetFromHex(s, theirs)) {
      EXPECT_EQ(mine, theirs) << s;
    }
  }
}

TEST(Span, TakesWhatArrayRefTook) {
  std::vector<int> v = {1, 2, 3};
  Span<const int> fromVector = v;
  EXPECT_EQ(fromVector.size(), 3u);
  EXPECT_EQ(fromVector.back(), 3);
  int array[] = {4, 5};
  Span<const int> fromArray = array;
  EXPECT_EQ(fromArray[1], 5);
  auto sum = [](Span<const int> s) {
    int total = 0;
    for (int x : s)
      total += x;
    return total;
  };
  EXPECT_EQ(sum({1, 2, 3, 4}), 10);
  EXPECT_EQ(sum(llvm::SmallVector<int>{5, 6}), 11);
  EXPECT_EQ(sum(Span<const int>(v.data() + 1, 2)), 5);
  EXPECT_TRUE(Span<const int>().empty());
}

} // namespace
