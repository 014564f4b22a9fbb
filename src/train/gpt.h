// The GPT-style reference model of `strata train`: token + position embedding, pre-LayerNorm
// blocks (causal multi-head attention, GELU MLP, residuals), final LayerNorm, LM head tied to the
// token embedding, mean cross-entropy. Forward and backward of one micro-batch on one of two
// compute paths: CPU (gpt.cpp over kernels/cpu/gpt_ops.h) or CUDA (gpt_cuda.cpp over cuBLAS and
// kernels/cuda/gpt_kernels.h). The model holds no parameters: it fetches each block's bit16
// params from a ParamSource (the engine, or memory), hands each param's gradient back as soon as
// backward produced it, and releases — so the whole state never has to be in one place.
// Activation checkpointing keeps only each block's input and recomputes the block in backward.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "src/common/dtype.h"
#include "src/common/status.h"

namespace strata::train {

struct GptShape {
  int layers = 2, heads = 2, channels = 64, vocab = 256, max_seq = 64;
  size_t num_params() const;
  Status validate() const;  // channels % heads == 0, everything >= 1
};

// "gpt2-124m" (12 x 768, 12 heads), "gpt2-350m" (24 x 1024, 16), "gpt-1.3b" (24 x 2048, 32), with
// max_seq 1024 and the byte vocabulary (256); "tiny" (2 x 64, 2, max_seq 64) for tests. The error
// lists the names.
StatusOr<GptShape> gpt_preset(const std::string& name);

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  size_t numel() const;
};
// Every param in registration order: wte, wpe, then per block h<i>.{ln1.w, ln1.b, qkv.w, qkv.b,
// proj.w, proj.b, ln2.w, ln2.b, fc.w, fc.b, fcproj.w, fcproj.b}, then lnf.w, lnf.b.
std::vector<ParamInfo> gpt_params(const GptShape& s);
// GPT-2's initialisation for `p`, from `seed` and the param's name: weights N(0, 0.02), the
// residual projections (proj.w, fcproj.w) N(0, 0.02 / sqrt(2 * layers)), LayerNorm weights 1,
// biases 0.
void gpt_init(const GptShape& s, const ParamInfo& p, uint64_t seed, float* out);

// Where the model gets its params and leaves its gradients.
class ParamSource {
 public:
  virtual ~ParamSource() = default;
  // The CPU path. The param's values ([numel] of dtype(), host memory), valid until release.
  virtual StatusOr<const void*> fetch(const std::string& name) = 0;
  virtual Status release(const std::string& name) = 0;
  // The param's gradient of this micro-batch, [numel] fp32 (already multiplied by the loss scale).
  virtual Status grad(const std::string& name, const float* g, size_t numel) = 0;
  virtual DType dtype() const = 0;  // kBF16, kF16 or kF32

  // The CUDA path (a source without device memory refuses). The param's values in device memory,
  // valid until release for work queued on `stream` (a cudaStream_t) after this call.
  virtual StatusOr<const void*> fetch_device(const std::string& name, void* stream);
  // The gradient as [numel] of dtype() in device memory, ready once the work queued on `stream`
  // so far has run; the buffer may be reused by work queued on `stream` after this call.
  virtual Status grad_device(const std::string& name, const void* g, size_t numel, void* stream);
};

// Where the model computes: the CPU path (fp32, oneDNN + oneTBB) or the CUDA path (bf16 matmuls
// with fp32 accumulation through cuBLAS, fp32 activations, our kernels for the rest).
enum class Compute { kCpu, kCuda };

class GptModel {
 public:
  // B sequences of T tokens per micro-batch (T <= max_seq). kCuda needs a CUDA build and a GPU
  // (the error says which is missing); its activations live in device memory.
  static StatusOr<std::unique_ptr<GptModel>> create(const GptShape& s, int B, int T, bool checkpointing,
                                                    Compute compute = Compute::kCpu);
  virtual ~GptModel();

  // inputs, targets: [B, T] token ids < vocab (host memory). Forward, mean loss, backward of
  // loss * loss_scale handing every param's gradient to `src` once. Returns the mean loss.
  virtual StatusOr<double> train_micro(ParamSource& src, const int32_t* inputs, const int32_t* targets,
                                       float loss_scale) = 0;
  // Forward only: the mean loss.
  virtual StatusOr<double> eval_loss(ParamSource& src, const int32_t* inputs, const int32_t* targets) = 0;

  const GptShape& shape() const { return shape_; }
  // Floating-point operations of one train_micro (forward + backward, matmuls and attention;
  // recomputation not counted), for TFLOPS figures.
  double flops_per_micro() const;
  // Bytes of activations (and their gradients' scratch) the model holds.
  virtual size_t activation_bytes() const = 0;

 protected:
  GptModel(const GptShape& s, int B, int T) : shape_(s), B_(B), T_(T) {}
  // Tokens outside [0, vocab) are refused, naming the first.
  Status check_tokens(const int32_t* inputs, const int32_t* targets) const;
  GptShape shape_;
  int B_, T_;
};

// Floating-point operations of one micro-batch of B x T tokens (GptModel::flops_per_micro).
double gpt_flops(const GptShape& s, int B, int T);

// Host bytes the CPU path holds once it has trained a micro-batch (GptModel::activation_bytes):
// activations, backward scratch, and fp32 copies of the embeddings and one block's params with
// their gradients. Computed without allocating anything, so that a run too large for the machine
// is refused before it starts; saturates at SIZE_MAX instead of wrapping.
size_t gpt_cpu_model_bytes(const GptShape& s, int B, int T, bool checkpointing);

// The name of block l's part k (0..11, the order of gpt_params): "h3.qkv.w".
std::string gpt_block_param(int l, int k);
constexpr int kGptBlockParts = 12;

}  // namespace strata::train
