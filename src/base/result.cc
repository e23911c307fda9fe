#include "base/result.h"

namespace ringvm {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kPermissionDenied: return "permission denied";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kCorrupt: return "corrupt";
    case ErrorCode::kOutOfRange: return "out of range";
    case ErrorCode::kResourceExhausted: return "resource exhausted";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Error::message() const {
  if (sys_errno != 0) return fmt::format("{}: {}", context, std::strerror(sys_errno));
  return context;
}

ErrorCode code_from_errno(int err) {
  switch (err) {
    case ENOENT: case ENODEV: case ENXIO: return ErrorCode::kNotFound;
    case EACCES: case EPERM: return ErrorCode::kPermissionDenied;
    case EINVAL: return ErrorCode::kInvalidArgument;
    case ENOSYS: case EOPNOTSUPP: return ErrorCode::kUnsupported;
    case ENOMEM: case ENOSPC: case EMFILE: case ENFILE: return ErrorCode::kResourceExhausted;
    case ERANGE: case EFBIG: return ErrorCode::kOutOfRange;
    default: return ErrorCode::kIo;
  }
}

Error sys_error(std::string context, int err) {
  return Error{code_from_errno(err), err, std::move(context)};
}

}  // namespace ringvm
