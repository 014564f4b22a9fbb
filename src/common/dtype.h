// Element types of tensors that cross strata's boundaries. The values are those of the C API's
// strata_dtype_t. The enum is plain data on purpose: SIMD translation units built with other ISA
// flags include this header, and must not instantiate inline code shared with baseline code.
#pragma once

#include <cstddef>
#include <string_view>

namespace strata {

enum class DType : int {
  kF32 = 0,   // IEEE binary32
  kBF16 = 1,  // bfloat16: the upper 16 bits of a binary32
  kF16 = 2,   // IEEE binary16
};

// Bytes per element; 0 for a value outside the enum.
size_t dtype_size(DType dtype);
// "fp32", "bf16", "fp16"; "invalid" for a value outside the enum.
std::string_view dtype_name(DType dtype);
bool dtype_valid(DType dtype);

}  // namespace strata
