// errno -> Status.
#include "src/common/check.h"

#include <cstring>
#include <string>

namespace strata {
namespace {

const char* errno_name(int err) {
  switch (err) {
    case EPERM:
      return "EPERM";
    case ENOENT:
      return "ENOENT";
    case EINTR:
      return "EINTR";
    case EIO:
      return "EIO";
    case EBADF:
      return "EBADF";
    case EAGAIN:
      return "EAGAIN";
    case ENOMEM:
      return "ENOMEM";
    case EACCES:
      return "EACCES";
    case EFAULT:
      return "EFAULT";
    case EBUSY:
      return "EBUSY";
    case EEXIST:
      return "EEXIST";
    case ENOTDIR:
      return "ENOTDIR";
    case EISDIR:
      return "EISDIR";
    case EINVAL:
      return "EINVAL";
    case EMFILE:
      return "EMFILE";
    case EFBIG:
      return "EFBIG";
    case ENOSPC:
      return "ENOSPC";
    case EROFS:
      return "EROFS";
    case ENOSYS:
      return "ENOSYS";
    case EOPNOTSUPP:
      return "EOPNOTSUPP";
    case EDQUOT:
      return "EDQUOT";
    case ETIMEDOUT:
      return "ETIMEDOUT";
    default:
      return "E?";
  }
}

}  // namespace

StatusCode status_code_from_errno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return StatusCode::kNoSpace;
    case ENOMEM:
      return StatusCode::kOutOfMemory;
    case ENOENT:
      return StatusCode::kNotFound;
    case EEXIST:
      return StatusCode::kAlreadyExists;
    case EINVAL:
      return StatusCode::kInvalidArgument;
    case ETIMEDOUT:
      return StatusCode::kTimeout;
    default:
      return StatusCode::kIo;
  }
}

Status errno_status(int err, const char* call, const char* file, int line) {
  char buf[256];
  // GNU strerror_r returns the message pointer (may not use buf).
  const char* text = strerror_r(err, buf, sizeof(buf));
  std::string m = std::string(call) + " failed: " + text + " (errno " + errno_name(err) + "=" + std::to_string(err) +
                  ") at " + file + ":" + std::to_string(line);
  return Status(status_code_from_errno(err), std::move(m));
}

}  // namespace strata
