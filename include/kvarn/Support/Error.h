//===- Error.h - kvarn's errors: a status and a message ---------*- C++ -*-===//
//
// Internal code reports failures as kvarn::Error values carrying a
// kvarn_status_t and a message, so the C API and the tools can turn any
// failure into the same status code and message. Plain C++ (the runtime core
// links no LLVM); the shape follows LLVM's Error and Expected (an Error is
// true when it is a failure, an Expected when it holds a value). The whole
// project uses them; the few LLVM errors the compiler and tools meet (its
// JSON parser's) become messages where they occur.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_ERROR_H
#define KVARN_SUPPORT_ERROR_H

#include "kvarn/Support/Format.h"
#include "kvarn/kvarn.h"

#include <cassert>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace kvarn {

/// Success, or a failure with a status and a message. Move-only.
class [[nodiscard]] Error {
public:
  static Error success() { return Error(); }
  Error(kvarn_status_t status, std::string message)
      : failure(
            std::make_unique<Failure>(Failure{status, std::move(message)})) {}
  Error(Error &&) = default;
  Error &operator=(Error &&) = default;

  /// True for a failure.
  explicit operator bool() const { return failure != nullptr; }
  /// KVARN_OK for success.
  kvarn_status_t status() const { return failure ? failure->status : KVARN_OK; }
  /// "" for success.
  const std::string &message() const {
    static const std::string none;
    return failure ? failure->message : none;
  }

private:
  Error() = default;
  struct Failure {
    kvarn_status_t status;
    std::string message;
  };
  std::unique_ptr<Failure> failure;
};

/// A value of type T or the Error that prevented it (T may be a reference).
template <typename T> class [[nodiscard]] Expected {
  using Stored =
      std::conditional_t<std::is_reference_v<T>,
                         std::reference_wrapper<std::remove_reference_t<T>>, T>;
  using Value = std::remove_reference_t<T>;

public:
  template <typename U, typename = std::enable_if_t<
                            std::is_convertible_v<U &&, T> &&
                            !std::is_same_v<std::decay_t<U>, Error>>>
  Expected(U &&value) : state(std::in_place_index<0>, std::forward<U>(value)) {}
  /// A failure (never success: there would be no value).
  Expected(Error error) : state(std::in_place_index<1>, std::move(error)) {
    assert(std::get<1>(state) && "an Expected made from success");
  }
  template <typename U,
            typename = std::enable_if_t<!std::is_same_v<U, T> &&
                                        std::is_convertible_v<U, T>>>
  Expected(Expected<U> &&other)
      : state(std::in_place_index<1>, Error::success()) {
    if (other)
      state.template emplace<0>(std::move(*other));
    else
      state.template emplace<1>(other.takeError());
  }

  /// True when it holds a value.
  explicit operator bool() const { return state.index() == 0; }

  Value &get() {
    assert(*this && "the value of a failed Expected");
    return std::get<0>(state);
  }
  const Value &get() const {
    assert(*this && "the value of a failed Expected");
    return std::get<0>(state);
  }
  Value &operator*() { return get(); }
  const Value &operator*() const { return get(); }
  Value *operator->() { return &get(); }
  const Value *operator->() const { return &get(); }

  /// The failure, moved out; success when it holds a value.
  Error takeError() {
    return *this ? Error::success() : std::move(std::get<1>(state));
  }

private:
  std::variant<Stored, Error> state;
};

/// An error with a status and a formatted message (format()'s "{0}" syntax).
template <typename... Ts>
Error makeError(kvarn_status_t status, const char *fmt, const Ts &...vals) {
  return Error(status, kvarn::format(fmt, vals...));
}

/// `err` with " (context)" appended to its message and its status kept, so a
/// low-level failure can say what it was doing ("cuMemAlloc: ... (allocating
/// 64 bytes on GPU 0)"). Success stays success.
Error withContext(Error err, std::string_view context);

/// Consumes `err` and returns its status (KVARN_OK for success) and its
/// message in `message`.
kvarn_status_t consumeError(Error err, std::string &message);

/// Drops `err` (a failure that changes nothing where it happens).
inline void consumeError(Error err) { (void)err; }

/// `err`'s message ("" for success), consuming it.
inline std::string toString(Error err) { return err.message(); }

/// For what cannot fail: aborts with the message where it did.
void cantFail(Error err);
template <typename T> T cantFail(Expected<T> value) {
  if (!value)
    cantFail(value.takeError());
  return std::forward<T>(*value);
}

} // namespace kvarn

#endif // KVARN_SUPPORT_ERROR_H
