// Status and StatusOr<T>: how every internal strata function reports failure. The codes are the
// values of the C API's strata_status_t (bindings/c/strata.h), so a Status crosses the ABI as is.
// Not for invariants of our own code (those are assertions).
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace strata {

// Keep in step with strata_status_t in bindings/c/strata.h (a static_assert there checks it).
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,     // the caller passed something wrong: a value, a pointer, a size
  kFailedPrecondition = 2,  // the call is not allowed in the current state (order of calls)
  kNotFound = 3,            // a named thing (key, file, parameter) does not exist
  kAlreadyExists = 4,
  kOutOfMemory = 5,  // host or device allocation failed, or a budget is exceeded
  kNoSpace = 6,      // the file system is full (ENOSPC, EDQUOT)
  kIo = 7,           // any other I/O error
  kDataLoss = 8,     // corrupt or truncated data (checksum mismatch, short file)
  kUnsupported = 9,  // not available on this machine or build
  kCuda = 10,        // a CUDA runtime call failed
  kNccl = 11,        // an NCCL call failed
  kComm = 12,        // another collective-communication failure (MPI)
  kTimeout = 13,
  kInternal = 14,   // a bug in strata
  kNonFinite = 15,  // training diverged: gradients or weights are not finite (inf / NaN)
  kCancelled = 16,  // stopped on request (a signal), at a safe point
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "INVALID_ARGUMENT: <message>", or "OK".
  std::string to_string() const;
  // Prefixes the message with what the caller was doing: "writing /x/y: <message>". No-op on OK.
  Status annotate(std::string_view context) &&;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status failed_precondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status out_of_memory(std::string m) { return {StatusCode::kOutOfMemory, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

// A value or the Status that says why there is none. Constructing from an OK Status is a bug.
template <class T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {  // NOLINT(implicit)
    assert(!std::get<Status>(v_).is_ok() && "StatusOr built from an OK Status");
    if (std::get<Status>(v_).is_ok()) v_ = internal_error("StatusOr built from an OK Status");
  }
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT(implicit)

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return is_ok() ? Status() : std::get<Status>(v_); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace strata

#define STRATA_CONCAT_INNER_(a, b) a##b
#define STRATA_CONCAT_(a, b) STRATA_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function unless it is OK.
#define STRATA_RETURN_IF_ERROR(expr)                    \
  do {                                                  \
    ::strata::Status strata_status_ = (expr);           \
    if (!strata_status_.is_ok()) return strata_status_; \
  } while (0)

// `lhs = value of expr` for a StatusOr expression, or return its Status.
#define STRATA_ASSIGN_OR_RETURN(lhs, expr) \
  STRATA_ASSIGN_OR_RETURN_IMPL_(STRATA_CONCAT_(strata_statusor_, __LINE__), lhs, expr)
#define STRATA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.is_ok()) return tmp.status();              \
  lhs = std::move(tmp).value()
