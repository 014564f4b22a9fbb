// C API: status strings, the thread-local last error, version, and the shared checks.
#include <cstring>
#include <string>

#include "api_guard.h"
#include "src/common/status.h"
#include "strata.h"

static_assert(STRATA_OK == static_cast<int>(strata::StatusCode::kOk));
static_assert(STRATA_ERR_INVALID_ARGUMENT == static_cast<int>(strata::StatusCode::kInvalidArgument));
static_assert(STRATA_ERR_FAILED_PRECONDITION == static_cast<int>(strata::StatusCode::kFailedPrecondition));
static_assert(STRATA_ERR_NOT_FOUND == static_cast<int>(strata::StatusCode::kNotFound));
static_assert(STRATA_ERR_ALREADY_EXISTS == static_cast<int>(strata::StatusCode::kAlreadyExists));
static_assert(STRATA_ERR_OUT_OF_MEMORY == static_cast<int>(strata::StatusCode::kOutOfMemory));
static_assert(STRATA_ERR_NO_SPACE == static_cast<int>(strata::StatusCode::kNoSpace));
static_assert(STRATA_ERR_IO == static_cast<int>(strata::StatusCode::kIo));
static_assert(STRATA_ERR_DATA_LOSS == static_cast<int>(strata::StatusCode::kDataLoss));
static_assert(STRATA_ERR_UNSUPPORTED == static_cast<int>(strata::StatusCode::kUnsupported));
static_assert(STRATA_ERR_CUDA == static_cast<int>(strata::StatusCode::kCuda));
static_assert(STRATA_ERR_NCCL == static_cast<int>(strata::StatusCode::kNccl));
static_assert(STRATA_ERR_COMM == static_cast<int>(strata::StatusCode::kComm));
static_assert(STRATA_ERR_TIMEOUT == static_cast<int>(strata::StatusCode::kTimeout));
static_assert(STRATA_ERR_INTERNAL == static_cast<int>(strata::StatusCode::kInternal));
static_assert(STRATA_ERR_NONFINITE == static_cast<int>(strata::StatusCode::kNonFinite));
static_assert(STRATA_ERR_CANCELLED == static_cast<int>(strata::StatusCode::kCancelled));

namespace strata::capi {
namespace {
thread_local std::string t_last_error;
}  // namespace

strata_status_t finish(const Status& s) {
  try {
    t_last_error = s.is_ok() ? std::string() : s.message();
  } catch (...) {
    t_last_error.clear();  // out of memory for the message: keep the code
  }
  return static_cast<strata_status_t>(s.code());
}

Status check_struct(const char* name, size_t struct_size, size_t known_size, const void* reserved,
                    size_t reserved_bytes, const char* init_macro) {
  if (struct_size == 0)
    return invalid_argument(std::string(name) + ".struct_size is 0: initialise it with " + init_macro);
  if (struct_size != known_size) {
    return invalid_argument(std::string(name) + ".struct_size is " + std::to_string(struct_size) +
                            " but this libstrata expects " + std::to_string(known_size) +
                            ": rebuild against the installed strata.h and initialise with " + init_macro);
  }
  const unsigned char* r = static_cast<const unsigned char*>(reserved);
  for (size_t i = 0; i < reserved_bytes; ++i) {
    if (r[i] != 0)
      return invalid_argument(std::string(name) + ".reserved is not zero: initialise it with " + init_macro);
  }
  return Status::ok();
}

StatusOr<DType> to_dtype(const strata_dtype_t& field, const std::string& what) {
  const int d = raw_enum(field);
  switch (d) {
    case STRATA_DTYPE_FP32:
      return DType::kF32;
    case STRATA_DTYPE_BF16:
      return DType::kBF16;
    case STRATA_DTYPE_FP16:
      return DType::kF16;
    default:
      break;
  }
  return invalid_argument(what + " = " + std::to_string(d) + " is not a strata_dtype_t (FP32 = 0, BF16 = 1, FP16 = 2)");
}

}  // namespace strata::capi

extern "C" {

STRATA_API const char* strata_status_string(strata_status_t status_arg) {
  switch (strata::capi::raw_enum(status_arg)) {
    case STRATA_OK:
      return "success";
    case STRATA_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case STRATA_ERR_FAILED_PRECONDITION:
      return "failed precondition";
    case STRATA_ERR_NOT_FOUND:
      return "not found";
    case STRATA_ERR_ALREADY_EXISTS:
      return "already exists";
    case STRATA_ERR_OUT_OF_MEMORY:
      return "out of memory";
    case STRATA_ERR_NO_SPACE:
      return "no space left on device";
    case STRATA_ERR_IO:
      return "I/O error";
    case STRATA_ERR_DATA_LOSS:
      return "data loss";
    case STRATA_ERR_UNSUPPORTED:
      return "unsupported";
    case STRATA_ERR_CUDA:
      return "CUDA error";
    case STRATA_ERR_NCCL:
      return "NCCL error";
    case STRATA_ERR_COMM:
      return "communication error";
    case STRATA_ERR_TIMEOUT:
      return "timeout";
    case STRATA_ERR_INTERNAL:
      return "internal error";
    case STRATA_ERR_NONFINITE:
      return "non-finite values (training diverged)";
    case STRATA_ERR_CANCELLED:
      return "cancelled";
    default:
      break;
  }
  return "unknown status";
}

STRATA_API const char* strata_last_error(void) { return strata::capi::t_last_error.c_str(); }

STRATA_API int strata_version(void) { return STRATA_VERSION_CODE; }

STRATA_API const char* strata_version_string(void) { return STRATA_VERSION_STRING; }

}  // extern "C"
