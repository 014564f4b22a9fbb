// The CUDA compute path of GptModel (gpt_cuda.cpp). Without a CUDA build it is gpt_cuda_unavailable.cpp,
// which refuses.
#pragma once

#include <memory>

#include "src/train/gpt.h"

namespace strata::train {

// Shape, B and T are already validated. Errors: no CUDA in this build, no GPU, out of device memory.
StatusOr<std::unique_ptr<GptModel>> make_cuda_gpt(const GptShape& s, int B, int T, bool checkpointing);

}  // namespace strata::train
