//===- Span.h - a view of contiguous elements -------------------*- C++ -*-===//
//
// std::span is C++20 and cannot be made from a braced list; Abseil's would
// bring a shared library into the runtime core. Span<const T> takes what
// callers pass today: a vector or array, a braced list, a pointer and a
// count, or any container with data() and size().
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_SPAN_H
#define KVARN_SUPPORT_SPAN_H

#include <cassert>
#include <cstddef>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace kvarn {

template <typename T> class Span {
  template <typename C> using DataOf = decltype(std::declval<C &>().data());
  template <typename C>
  using EnableIfContainer = std::enable_if_t<
      std::is_convertible_v<std::remove_pointer_t<DataOf<C>> (*)[], T (*)[]> &&
      std::is_integral_v<decltype(std::declval<C &>().size())>>;

public:
  using value_type = std::remove_cv_t<T>;
  using iterator = T *;

  constexpr Span() = default;
  constexpr Span(T *data, size_t size) : first(data), count(size) {}
  template <size_t N> constexpr Span(T (&array)[N]) : first(array), count(N) {}
  template <typename C, typename = EnableIfContainer<C>>
  constexpr Span(C &container)
      : first(container.data()), count(container.size()) {}
  template <typename C, typename = EnableIfContainer<const C>>
  constexpr Span(const C &container)
      : first(container.data()), count(container.size()) {}
  /// Valid until the end of the full expression, as for a parameter (what
  /// GCC's -Winit-list-lifetime warns of is the point).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winit-list-lifetime"
#endif
  template <typename U = T, typename = std::enable_if_t<std::is_const_v<U>>>
  constexpr Span(std::initializer_list<value_type> list)
      : first(list.begin()), count(list.size()) {}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

  constexpr T *data() const { return first; }
  constexpr size_t size() const { return count; }
  constexpr bool empty() const { return count == 0; }
  constexpr T *begin() const { return first; }
  constexpr T *end() const { return first + count; }
  constexpr T &operator[](size_t i) const {
    assert(i < count && "Span index out of range");
    return first[i];
  }
  constexpr T &front() const { return (*this)[0]; }
  constexpr T &back() const { return (*this)[count - 1]; }

private:
  T *first = nullptr;
  size_t count = 0;
};

} // namespace kvarn

#endif // KVARN_SUPPORT_SPAN_H
