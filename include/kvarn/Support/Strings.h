//===- Strings.h - string_view helpers --------------------------*- C++ -*-===//
//
// What kvarn's parsers and messages need of a string beyond std::string_view
// in C++17, ASCII only (the files kvarn reads are), without LLVM.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_STRINGS_H
#define KVARN_SUPPORT_STRINGS_H

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvarn {

inline bool isDigit(char c) { return c >= '0' && c <= '9'; }
inline bool isAlpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
inline bool isAlnum(char c) { return isDigit(c) || isAlpha(c); }
inline char toUpper(char c) {
  return c >= 'a' && c <= 'z' ? char(c - 'a' + 'A') : c;
}

inline bool startsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
inline bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.substr(s.size() - suffix.size()) == suffix;
}
inline bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}
/// Whether `s` is one of `options`.
inline bool isOneOf(std::string_view s,
                    std::initializer_list<std::string_view> options) {
  for (std::string_view o : options)
    if (s == o)
      return true;
  return false;
}
inline bool allDigits(std::string_view s) {
  for (char c : s)
    if (!isDigit(c))
      return false;
  return true;
}
/// Removes `prefix` from `s` where `s` starts with it.
inline bool consumeFront(std::string_view &s, std::string_view prefix) {
  if (!startsWith(s, prefix))
    return false;
  s.remove_prefix(prefix.size());
  return true;
}
/// Removes `suffix` from `s` where `s` ends with it.
inline bool consumeBack(std::string_view &s, std::string_view suffix) {
  if (!endsWith(s, suffix))
    return false;
  s.remove_suffix(suffix.size());
  return true;
}

inline constexpr std::string_view kWhitespace = " \t\n\v\f\r";
inline std::string_view ltrim(std::string_view s,
                              std::string_view chars = kWhitespace) {
  size_t first = s.find_first_not_of(chars);
  return first == std::string_view::npos ? s.substr(s.size()) : s.substr(first);
}
inline std::string_view rtrim(std::string_view s,
                              std::string_view chars = kWhitespace) {
  size_t last = s.find_last_not_of(chars);
  return last == std::string_view::npos ? s.substr(0, 0)
                                        : s.substr(0, last + 1);
}
inline std::string_view trim(std::string_view s,
                             std::string_view chars = kWhitespace) {
  return rtrim(ltrim(s, chars), chars);
}

/// The leading digits of `s`.
inline std::string_view leadingDigits(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && isDigit(s[n]))
    ++n;
  return s.substr(0, n);
}

/// `s` cut at every `separator`; empty pieces kept unless `keepEmpty` is
/// false ("a,,b" -> "a", "", "b").
std::vector<std::string_view> split(std::string_view s, char separator,
                                    bool keepEmpty = true);

/// `s` before and after its first `separator` (all of `s` and "" without
/// one).
std::pair<std::string_view, std::string_view> splitOnce(std::string_view s,
                                                        char separator);

/// `s` as a decimal integer of type T: all of it, an optional '-' for signed
/// types, nothing else; false (and `value` unchanged) where it is not one or
/// does not fit.
template <typename T> bool parseInteger(std::string_view s, T &value) {
  const char *end = s.data() + s.size();
  T parsed{};
  auto [ptr, ec] = std::from_chars(s.data(), end, parsed);
  if (s.empty() || ec != std::errc() || ptr != end)
    return false;
  value = parsed;
  return true;
}

/// The strings in `parts` with `separator` between them.
template <typename Range>
std::string join(const Range &parts, std::string_view separator) {
  std::string out;
  bool first = true;
  for (const auto &p : parts) {
    if (!first)
      out += separator;
    out += std::string_view(p);
    first = false;
  }
  return out;
}

/// `value` in hexadecimal without leading zeros ("0" for 0), padded with
/// zeros to `width` digits.
std::string hexString(uint64_t value, bool lowerCase, unsigned width = 0);

/// Two hexadecimal digits per byte.
std::string hexBytes(const uint8_t *bytes, size_t count, bool lowerCase);

/// The bytes that the hexadecimal `text` spells (an odd count of digits
/// reads as with a leading 0); false where it has another character.
bool bytesFromHex(std::string_view text, std::string &bytes);

} // namespace kvarn

#endif // KVARN_SUPPORT_STRINGS_H
