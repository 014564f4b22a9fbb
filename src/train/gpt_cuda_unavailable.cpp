// make_cuda_gpt in a build without CUDA.
#include "src/train/gpt_cuda.h"

namespace strata::train {

StatusOr<std::unique_ptr<GptModel>> make_cuda_gpt(const GptShape&, int, int, bool) {
  return Status(StatusCode::kUnsupported,
                "the GPT model's CUDA compute path is not in this build (configured without the CUDA toolkit)");
}

}  // namespace strata::train
