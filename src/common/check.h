// Check macros for system calls: on failure they return a Status from the enclosing function that
// keeps the failing call's text, errno's name and text, and file:line. CUDA and NCCL versions are
// in src/common/cuda_check.h (only for targets that link CUDA).
#pragma once

#include <cerrno>

#include "src/common/status.h"

namespace strata {

// Maps errno to a StatusCode: ENOSPC/EDQUOT -> kNoSpace, ENOMEM -> kOutOfMemory, ENOENT ->
// kNotFound, EEXIST -> kAlreadyExists, EINVAL -> kInvalidArgument, others -> kIo.
StatusCode status_code_from_errno(int err);

// "<call> failed: <strerror> (errno <NAME>=<n>) at <file>:<line>"
Status errno_status(int err, const char* call, const char* file, int line);

}  // namespace strata

// For calls that return -1 and set errno (open, write, fallocate, ...).
#define STRATA_SYSCALL_CHECK(call)                                             \
  do {                                                                         \
    if ((call) == -1) {                                                        \
      const int strata_errno_ = errno;                                         \
      return ::strata::errno_status(strata_errno_, #call, __FILE__, __LINE__); \
    }                                                                          \
  } while (0)

// For calls that return a negative errno on failure (libaio's io_setup, io_submit, ...).
#define STRATA_NEG_ERRNO_CHECK(call)                                                                             \
  do {                                                                                                           \
    const long strata_rc_ = static_cast<long>(call);                                                             \
    if (strata_rc_ < 0) return ::strata::errno_status(static_cast<int>(-strata_rc_), #call, __FILE__, __LINE__); \
  } while (0)
