// Internal to libstrata.so: the wrapper every C API function body runs in. It turns a Status into
// strata_status_t and the thread's last-error text, and stops every C++ exception at the ABI.
#pragma once

#include <cstring>
#include <new>
#include <string>

#include "src/common/dtype.h"
#include "src/common/status.h"
#include "strata.h"

namespace strata::capi {

// Records `s` as this thread's last error ("" when OK) and returns its C code.
strata_status_t finish(const Status& s);

// Runs `body` (returning Status); exceptions become STRATA_ERR_OUT_OF_MEMORY / _INTERNAL.
template <class F>
strata_status_t guard(const char* function, F&& body) noexcept {
  try {
    Status s = body();
    if (!s.is_ok()) s = Status(s.code(), std::string(function) + ": " + s.message());
    return finish(s);
  } catch (const std::bad_alloc&) {
    return finish(Status(StatusCode::kOutOfMemory, std::string(function) + ": out of host memory"));
  } catch (const std::exception& e) {
    return finish(Status(StatusCode::kInternal, std::string(function) + ": unexpected exception: " + e.what()));
  } catch (...) {
    return finish(Status(StatusCode::kInternal, std::string(function) + ": unexpected exception"));
  }
}

// The integer a C caller stored in an enum-typed field or argument. C lets any int through, and
// loading an out-of-range value as a C++ enum is undefined behaviour, so enums from callers are
// read only through this.
template <class E>
int raw_enum(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "C enums of this API are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof(v));
  return v;
}

// A strata_dtype_t from a caller; the error names `what` and the accepted values.
StatusOr<DType> to_dtype(const strata_dtype_t& field, const std::string& what);

// "<name> is NULL" as INVALID_ARGUMENT.
inline Status null_arg(const char* name) { return invalid_argument(std::string(name) + " is NULL"); }

// Checks a versioned struct: initialised (struct_size set), of the size this library was built
// with (version 0 has one layout per struct), and its reserved bytes zero.
Status check_struct(const char* name, size_t struct_size, size_t known_size, const void* reserved,
                    size_t reserved_bytes, const char* init_macro);

}  // namespace strata::capi
