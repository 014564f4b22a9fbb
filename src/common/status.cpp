// Status names and formatting.
#include "src/common/status.h"

namespace strata {

std::string_view status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case StatusCode::kOutOfMemory:
      return "OUT_OF_MEMORY";
    case StatusCode::kNoSpace:
      return "NO_SPACE";
    case StatusCode::kIo:
      return "IO";
    case StatusCode::kDataLoss:
      return "DATA_LOSS";
    case StatusCode::kUnsupported:
      return "UNSUPPORTED";
    case StatusCode::kCuda:
      return "CUDA";
    case StatusCode::kNccl:
      return "NCCL";
    case StatusCode::kComm:
      return "COMM";
    case StatusCode::kTimeout:
      return "TIMEOUT";
    case StatusCode::kInternal:
      return "INTERNAL";
    case StatusCode::kNonFinite:
      return "NON_FINITE";
    case StatusCode::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

std::string Status::to_string() const {
  if (is_ok()) return "OK";
  std::string s(status_code_name(code_));
  s += ": ";
  s += message_;
  return s;
}

Status Status::annotate(std::string_view context) && {
  if (is_ok()) return std::move(*this);
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

}  // namespace strata
