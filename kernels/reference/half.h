// The reference's name for the bit16 conversions (src/common/half.h): tests and the reference
// kernels compare the optimised casts against these.
#pragma once

#include "src/common/half.h"

namespace strata::reference {

using ::strata::bf16_to_float;
using ::strata::bits_float;
using ::strata::float_bits;
using ::strata::float_to_bf16;
using ::strata::float_to_fp16;
using ::strata::fp16_to_float;

}  // namespace strata::reference
