// CPU Adam / AdamW over fp32 master params and moments, with gradients in fp32, bf16 or fp16,
// fused gradient scaling and an optional bf16 / fp16 copy of the updated params; parallel with
// oneTBB, vectorised per ISA (kernels/cpu/isa.h). The optimizer step of ZeRO-Offload.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <cstdint>
#include <memory>
#include <span>

#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels {

// Hyper-parameters of one step (may change every step: schedules, loss scale, clipping).
struct AdamHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;  // 1/loss_scale x clip coefficient, applied to every gradient
};

// lr, weight_decay >= 0 and finite; betas in [0, 1); eps > 0 and finite; grad_scale > 0 and
// finite. The message names the offending field and value.
Status validate_adam_hyper(const AdamHyper& h);

// Each tensor: non-empty; params, exp_avg, exp_avg_sq, grads non-null and aligned to their
// element size; valid grad dtype; out dtype bf16 or fp16 when params_out is set; no byte range
// overlaps another, in the same tensor or any other. The message names the tensor index and field.
Status validate_adam_tensors(std::span<const AdamTensor> tensors);

// Coefficients for step number `step` (1 for the first), computed in double.
AdamCoeffs make_adam_coeffs(AdamMode mode, bool bias_correction, int64_t step, const AdamHyper& h);

// Updates every tensor, in parallel on the calling thread's task arena. No argument checks: the
// caller validated. Each element's result is independent of thread count and chunking. Returns
// false when an updated param is inf or NaN (the update is done either way).
bool adam_update(const KernelTable& k, const AdamCoeffs& c, std::span<const AdamTensor> tensors);

// Benchmark limit: the same memory traffic as adam_update with trivial arithmetic.
void stream_mix(const KernelTable& k, std::span<const AdamTensor> tensors);

struct CpuAdamOptions {
  AdamMode mode = AdamMode::kAdamW;
  bool bias_correction = true;
  int num_threads = 0;  // 0: all of oneTBB's default concurrency
  Isa isa = best_isa();
};

// The standalone optimizer: owns the step counter and a task arena of num_threads threads.
// Not thread-safe: one step at a time per object; distinct objects are independent.
class CpuAdam {
 public:
  static StatusOr<std::unique_ptr<CpuAdam>> create(const CpuAdamOptions& options);

  // Validates everything first; on error nothing is changed and the counter does not move.
  // Otherwise increments the step counter and updates all tensors with step number = counter.
  Status step(const AdamHyper& h, std::span<const AdamTensor> tensors);

  // Sum of squares and finiteness of the gradients (for clipping and loss scaling).
  StatusOr<NormResult> grad_norm(std::span<const TensorView> grads);

  int64_t step_count() const { return step_; }
  // For resuming from a checkpoint; must be >= 0.
  Status set_step_count(int64_t step);
  const CpuAdamOptions& options() const { return options_; }
  int num_threads() const { return arena_.max_concurrency(); }

 private:
  CpuAdam(const CpuAdamOptions& options, const KernelTable* kernels);

  CpuAdamOptions options_;
  const KernelTable* kernels_;
  tbb::task_arena arena_;
  int64_t step_ = 0;
};

}  // namespace strata::kernels
