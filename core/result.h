// Errors as values. Every fallible call at a module boundary returns a Status or a Result<T>;
// exceptions from libraries (RocksDB, GMime, OpenSSL) are translated where they are called.
//
// An Error carries a code a program can branch on and a message a person can act on: say what
// went wrong, with which file or id, and what to do about it.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace mailvault {

enum class ErrorCode {
  kInvalidArgument,  // the caller (or the user) asked for something malformed
  kNotFound,         // no such message, file, vault
  kAlreadyExists,    // init over an existing vault, etc.
  kCorruption,       // bytes on disk fail a checksum, authentication or structural check
  kBadKey,           // the key or passphrase does not open this vault
  kLimitExceeded,    // hostile or oversized input hit a named limit
  kMalformedInput,   // input that cannot be parsed at all
  kIoError,          // the operating system refused (disk full, permissions)
  kBusy,             // another process holds the vault
  kUnsupported,      // a format version this build does not read
  kConflict,         // the object's state does not allow it (cancelling a finished job)
  kInternal,         // a bug: an invariant did not hold
};

const char* ErrorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "corruption: pack 3 offset 1024: record checksum mismatch"
  std::string ToString() const;

  // Prefixes context, keeping the code: err.With("importing inbox/1.eml").
  Error With(const std::string& context) const { return Error(code_, context + ": " + message_); }

 private:
  ErrorCode code_;
  std::string message_;
};

// The outcome of a call that returns nothing on success.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  static Status Ok() { return Status(); }
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  // REQUIRES: !ok()
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInternal, ""};
  bool ok_ = true;
};

// A value or an Error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}    // NOLINT
  Result(Status status) : v_(status.error()) {}    // NOLINT: REQUIRES !status.ok()

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok()
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // REQUIRES: !ok()
  const Error& error() const { return std::get<1>(v_); }
  Status status() const { return ok() ? Status::Ok() : Status(error()); }

 private:
  std::variant<T, Error> v_;
};

// What an error means outside the process, in one table (core/result.cc): the REST API's
// status and problem type (RFC 9457 "type" slug), and the command line's exit status.
struct ErrorMeaning {
  int http_status;
  const char* problem;
  int exit_status;
};
ErrorMeaning MeaningOf(ErrorCode code);
// The command line's exit statuses besides MeaningOf's (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;           // the command line or a value in it is wrong
inline constexpr int kExitPartly = 3;          // import: some files were rejected; status: serve is not running
inline constexpr int kExitRestart = 75;        // EX_TEMPFAIL: serve stopped to be restarted by its service manager
inline constexpr int kExitNotPermitted = 77;   // EX_NOPERM: the control socket refused this user

inline Error InvalidArgument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Error NotFound(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Error Corruption(std::string m) { return {ErrorCode::kCorruption, std::move(m)}; }
inline Error IoError(std::string m) { return {ErrorCode::kIoError, std::move(m)}; }
inline Error LimitExceeded(std::string m) { return {ErrorCode::kLimitExceeded, std::move(m)}; }
inline Error MalformedInput(std::string m) { return {ErrorCode::kMalformedInput, std::move(m)}; }
inline Error FailedPrecondition(std::string m) { return {ErrorCode::kConflict, std::move(m)}; }
inline Error Internal(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }

// An IoError naming the failed operation, the path and strerror(errno).
Error ErrnoError(const std::string& what, const std::string& path, int err);

}  // namespace mailvault

// Propagates a non-ok Status or Result's error from the enclosing function.
#define MV_RETURN_IF_ERROR(expr)                       \
  do {                                                 \
    auto mv_status_ = (expr);                          \
    if (!mv_status_.ok()) return mv_status_.error();   \
  } while (0)

#define MV_CONCAT_INNER(a, b) a##b
#define MV_CONCAT(a, b) MV_CONCAT_INNER(a, b)
// MV_ASSIGN_OR_RETURN(auto x, Foo()); declares x from Foo()'s value or returns its error.
#define MV_ASSIGN_OR_RETURN(decl, expr) MV_ASSIGN_OR_RETURN_IMPL(MV_CONCAT(mv_res_, __LINE__), decl, expr)
#define MV_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.error();              \
  decl = std::move(tmp).value()
