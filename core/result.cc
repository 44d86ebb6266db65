#include "core/result.h"

#include <cstring>

namespace mailvault {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kAlreadyExists: return "already exists";
    case ErrorCode::kCorruption: return "corruption";
    case ErrorCode::kBadKey: return "wrong key";
    case ErrorCode::kLimitExceeded: return "limit exceeded";
    case ErrorCode::kMalformedInput: return "malformed input";
    case ErrorCode::kIoError: return "I/O error";
    case ErrorCode::kBusy: return "busy";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kConflict: return "conflict";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

ErrorMeaning MeaningOf(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return {400, "bad-request", kExitUsage};
    case ErrorCode::kLimitExceeded:
    case ErrorCode::kMalformedInput: return {400, "bad-request", kExitFailure};
    case ErrorCode::kNotFound: return {404, "not-found", kExitFailure};
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kConflict: return {409, "conflict", kExitFailure};
    case ErrorCode::kBusy: return {503, "busy", kExitFailure};
    case ErrorCode::kCorruption:
    case ErrorCode::kBadKey:
    case ErrorCode::kIoError:
    case ErrorCode::kUnsupported:
    case ErrorCode::kInternal: return {500, "internal", kExitFailure};
  }
  return {500, "internal", kExitFailure};
}

std::string Error::ToString() const { return std::string(ErrorCodeName(code_)) + ": " + message_; }

Error ErrnoError(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOSPC) msg += " (free space on the vault's file system and retry; nothing acknowledged was lost)";
  if (err == EACCES || err == EPERM) msg += " (check the file's owner and mode)";
  return IoError(msg);
}

}  // namespace mailvault
