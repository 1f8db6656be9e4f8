//===- Format.h - messages with numbered placeholders -----------*- C++ -*-===//
//
// format("{0} of {1}", a, b): the subset of llvm::formatv that kvarn's
// messages use, rendered as formatv renders it (so messages are unchanged),
// without LLVM: "{N}" is the N-th argument, "{{" a literal '{' (styles such
// as "{0:x}" are not supported: kvarn's messages use none). Integers in
// decimal, bool as true/false, floating point fixed with two decimals,
// strings (and string classes: data() and size()) as they are, anything else
// through its operator<<.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_FORMAT_H
#define KVARN_SUPPORT_FORMAT_H

#include <cstdio>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace kvarn {

namespace detail {
/// Whether T holds its characters as data() and size() (a string class).
template <typename T, typename = void> struct IsCharBuffer : std::false_type {};
template <typename T>
struct IsCharBuffer<
    T, std::enable_if_t<std::is_same_v<
           decltype(std::declval<const T &>().data()), const char *>>>
    : std::is_integral<decltype(std::declval<const T &>().size())> {};

template <typename T> std::string formatArgument(const T &value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_same_v<T, char>) {
    return std::string(1, value);
  } else if constexpr (std::is_integral_v<T>) {
    return std::to_string(value);
  } else if constexpr (std::is_floating_point_v<T>) {
    char text[64];
    std::snprintf(text, sizeof text, "%.2f", double(value));
    return text;
  } else if constexpr (std::is_convertible_v<const T &, std::string_view>) {
    return std::string(std::string_view(value));
  } else if constexpr (IsCharBuffer<T>::value) {
    return std::string(value.data(), value.size());
  } else if constexpr (std::is_enum_v<T>) {
    return std::to_string(std::underlying_type_t<T>(value));
  } else {
    std::ostringstream os;
    os << value;
    return os.str();
  }
}

std::string formatArguments(std::string_view fmt,
                            const std::vector<std::string> &arguments);
} // namespace detail

template <typename... Ts>
std::string format(std::string_view fmt, const Ts &...values) {
  return detail::formatArguments(fmt, {detail::formatArgument(values)...});
}

} // namespace kvarn

#endif // KVARN_SUPPORT_FORMAT_H
