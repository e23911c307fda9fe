// Result<T>: the error type every fallible ringvm function returns.
//
// An Error carries a fixed code, the errno that caused it (0 if none) and a context string that
// names the thing that failed (a path, a device, an option) and, where there is one, the fix.
// Exceptions are used only at the edges (argument and config parsing) and caught there.
//
//   Result<UniqueFd> open_image(const std::string& path);
//   auto fd = TRY(open_image(path));          // returns the error from the enclosing function
//   RETURN_IF_ERROR(vm.set_user_memory(...)); // for Result<void>
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace ringvm {

enum class ErrorCode {
  kInvalidArgument,   // the caller or user gave something unusable
  kNotFound,          // a path, device or capability does not exist
  kPermissionDenied,  // the host refuses access
  kUnsupported,       // the host or image lacks a feature ringvm needs
  kIo,                // a read, write or syscall failed
  kCorrupt,           // an image, snapshot or guest structure is malformed
  kOutOfRange,        // an address or size falls outside what is allowed
  kResourceExhausted, // out of memory, slots, vCPUs, queue space
  kInternal,          // a ringvm bug
};

const char* error_code_name(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  int sys_errno = 0;
  std::string context;

  // "context: strerror(errno)" or just "context".
  std::string message() const;
};

// Builds an Error from the current errno: `return sys_error("open /dev/kvm");`
Error sys_error(std::string context, int err = errno);
// Maps an errno to the closest ErrorCode.
ErrorCode code_from_errno(int err);

template <typename... Args>
Error make_error(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Error{code, 0, fmt::format(f, std::forward<Args>(args)...)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}           // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}       // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  void value() const {}
  const Error& error() const& { return err_; }
  Error&& error() && { return std::move(err_); }

 private:
  Error err_;
  bool ok_ = true;
};

inline Result<void> Ok() { return {}; }

// Adds a prefix naming the outer operation: `return wrap(std::move(r).error(), "disk {}", path);`
template <typename... Args>
Error wrap(Error e, fmt::format_string<Args...> f, Args&&... args) {
  e.context = fmt::format(f, std::forward<Args>(args)...) + ": " + e.context;
  return e;
}

}  // namespace ringvm

// GNU statement expressions (GCC and Clang): evaluate to the value or return the error.
#define RINGVM_CONCAT_INNER(a, b) a##b
#define RINGVM_CONCAT(a, b) RINGVM_CONCAT_INNER(a, b)
#define TRY(expr)                                                      \
  ({                                                                   \
    auto RINGVM_CONCAT(_try_, __LINE__) = (expr);                      \
    if (!RINGVM_CONCAT(_try_, __LINE__).ok())                          \
      return std::move(RINGVM_CONCAT(_try_, __LINE__)).error();        \
    std::move(RINGVM_CONCAT(_try_, __LINE__)).value();                 \
  })
#define RETURN_IF_ERROR(expr)                                          \
  do {                                                                 \
    auto _rie = (expr);                                                \
    if (!_rie.ok()) return std::move(_rie).error();                    \
  } while (0)
