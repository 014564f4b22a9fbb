// Optimizers as plug-ins. An optimizer names its fp32 arrays per parameter element ("master"
// first, then its state), turns a step's learning rate and gradient scale into constants for its
// kernels, and updates tensors on the CPU (oneTBB + SIMD) or on a CUDA stream. Everything else
// follows from that: the engine allocates and places one buffer per array, the planner counts
// 4 bytes per array, the NVMe store and the checkpoint manifest name the arrays, the stats count
// the update. A new optimizer is its kernel, its file here and a line in registry.cpp
// (docs/adding-an-optimizer.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::optim {

// "optimizer.params" of a DeepSpeed config. Each optimizer reads the fields its registration
// lists as keys; its defaults are its registration's.
struct Hyper {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool bias_correction = true;  // Adam
  bool adam_w_mode = true;      // Adam: decoupled weight decay
};

inline constexpr int kMaxArrays = 3;  // master + two states (Adam); raise when an optimizer needs more

// One tensor of an update. array[0] is the fp32 master, array[1..] the optimizer's state in the
// order of Optimizer::arrays(); each [count] fp32, updated in place. grads: [count] of grad_dtype;
// params_out: [count] bf16 / fp16 copy of the updated params, or null.
struct Tensor {
  float* array[kMaxArrays] = {};
  const void* grads = nullptr;
  DType grad_dtype = DType::kF32;
  void* params_out = nullptr;
  DType out_dtype = DType::kBF16;
  size_t count = 0;
};

// A step's constants, computed once per step on the host; opaque outside the optimizer (its
// kernels' coefficient struct). Plain bytes, so a stream can carry it by value.
struct StepCoeffs {
  alignas(8) unsigned char bytes[64] = {};
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string_view type() const = 0;  // as registered: "AdamW", "Lion", ...
  // The fp32 arrays per parameter element, "master" first.
  virtual std::span<const char* const> arrays() const = 0;
  int num_arrays() const { return static_cast<int>(arrays().size()); }
  size_t bytes_per_element() const { return 4 * arrays().size(); }
  const Hyper& hyper() const { return hyper_; }
  // Constants for step number `step` (1 for the first) at learning rate lr, every gradient
  // multiplied by grad_scale. An error names the hyper-parameter that is out of range.
  virtual StatusOr<StepCoeffs> coeffs(int64_t step, double lr, float grad_scale) const = 0;
  // The update of every tensor on the calling thread's task arena (no argument checks); false when
  // an updated param is inf or NaN. Bit-identical for any thread count.
  virtual bool update_host(const kernels::KernelTable& k, const StepCoeffs& c, std::span<const Tensor> t) const = 0;
  // Enqueues the update of t (device pointers) on a cudaStream_t; unsupported in a build without CUDA.
  virtual Status update_cuda(const StepCoeffs& c, const Tensor& t, void* cuda_stream) const = 0;
  // Benchmark limit: moves the same bytes as update_host with trivial arithmetic.
  virtual void stream_limit(const kernels::KernelTable& k, std::span<const Tensor> t) const = 0;

 protected:
  explicit Optimizer(const Hyper& h) : hyper_(h) {}
  Hyper hyper_;
};

struct Registration {
  const char* type;                   // matched case-insensitively, as DeepSpeed does
  std::span<const char* const> keys;  // the "params" keys it accepts
  Hyper defaults;
  std::unique_ptr<Optimizer> (*make)(const Hyper& h);
};

// Every optimizer, in the order docs list them.
std::span<const Registration> registry();
// The registration of `type`; an unknown type is an error naming the accepted ones.
StatusOr<const Registration*> find(std::string_view type);
std::string accepted_types();  // "Adam, AdamW, Lion, Adagrad"
// Checks for the hyper-parameters the type uses (ranges), then makes it.
StatusOr<std::unique_ptr<Optimizer>> make(std::string_view type, const Hyper& h);

// Helpers for optimizer files.
template <class T>
StepCoeffs pack(const T& c) {
  static_assert(sizeof(T) <= sizeof(StepCoeffs::bytes), "coefficients larger than StepCoeffs");
  StepCoeffs s;
  __builtin_memcpy(s.bytes, &c, sizeof(T));
  return s;
}
template <class T>
T unpack(const StepCoeffs& s) {
  T c;
  __builtin_memcpy(&c, s.bytes, sizeof(T));
  return c;
}

}  // namespace strata::optim
