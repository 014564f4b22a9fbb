// What a framework without a tuned kernel does: one straightforward, correct scalar loop over the
// elements, single-threaded. The peer the CPU Adam benchmark compares against.
#pragma once

#include <cstddef>

#include "kernels/cpu/kernel_types.h"

namespace strata::bench {

void naive_adam(const kernels::AdamCoeffs& c, const kernels::AdamTensor& t);

}  // namespace strata::bench
