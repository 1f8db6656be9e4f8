//===- Format.cpp - messages with numbered placeholders -------------------===//

#include "kvarn/Support/Format.h"

using namespace kvarn;

std::string
kvarn::detail::formatArguments(std::string_view fmt,
                               const std::vector<std::string> &arguments) {
  std::string out;
  size_t i = 0;
  while (i < fmt.size()) {
    char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      i += 2;
      continue;
    }
    size_t close = c == '{' ? fmt.find('}', i) : std::string_view::npos;
    if (close == std::string_view::npos) {
      out += c;
      ++i;
      continue;
    }
    // "{N}": the N-th argument. Nothing for an index without an argument or
    // a field that is not an index, and an alignment or style after the
    // index (",5", ":x") is ignored: kvarn's messages have none of these.
    std::string_view field = fmt.substr(i + 1, close - i - 1);
    field = field.substr(0, field.find_first_of(",:"));
    while (!field.empty() && field.back() == ' ')
      field.remove_suffix(1);
    while (!field.empty() && field.front() == ' ')
      field.remove_prefix(1);
    size_t index = 0;
    bool number = !field.empty();
    for (char d : field) {
      if (d < '0' || d > '9') {
        number = false;
        break;
      }
      index = index * 10 + size_t(d - '0');
    }
    if (number && index < arguments.size())
      out += arguments[index];
    i = close + 1;
  }
  return out;
}
