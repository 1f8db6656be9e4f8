//===- Strings.cpp - string_view helpers ----------------------------------===//

#include "kvarn/Support/Strings.h"

using namespace kvarn;

std::vector<std::string_view> kvarn::split(std::string_view s, char separator,
                                           bool keepEmpty) {
  std::vector<std::string_view> parts;
  while (true) {
    size_t at = s.find(separator);
    std::string_view part = s.substr(0, at);
    if (keepEmpty || !part.empty())
      parts.push_back(part);
    if (at == std::string_view::npos)
      return parts;
    s.remove_prefix(at + 1);
  }
}

std::pair<std::string_view, std::string_view>
kvarn::splitOnce(std::string_view s, char separator) {
  size_t at = s.find(separator);
  if (at == std::string_view::npos)
    return {s, s.substr(s.size())};
  return {s.substr(0, at), s.substr(at + 1)};
}

static char hexDigit(unsigned v, bool lowerCase) {
  return v < 10 ? char('0' + v) : char((lowerCase ? 'a' : 'A') + v - 10);
}

std::string kvarn::hexString(uint64_t value, bool lowerCase, unsigned width) {
  std::string digits;
  do {
    digits.insert(digits.begin(), hexDigit(unsigned(value & 15), lowerCase));
    value >>= 4;
  } while (value);
  if (digits.size() < width)
    digits.insert(0, width - digits.size(), '0');
  return digits;
}

std::string kvarn::hexBytes(const uint8_t *bytes, size_t count,
                            bool lowerCase) {
  std::string out;
  out.reserve(2 * count);
  for (size_t i = 0; i < count; ++i) {
    out += hexDigit(bytes[i] >> 4, lowerCase);
    out += hexDigit(bytes[i] & 15, lowerCase);
  }
  return out;
}

static int hexValue(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

bool kvarn::bytesFromHex(std::string_view text, std::string &bytes) {
  bytes.clear();
  size_t i = 0;
  if (text.size() % 2) {
    int v = hexValue(text[0]);
    if (v < 0)
      return false;
    bytes += char(v);
    i = 1;
  }
  for (; i < text.size(); i += 2) {
    int hi = hexValue(text[i]), lo = hexValue(text[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    bytes += char(hi * 16 + lo);
  }
  return true;
}
