// The standalone CPU optimizer of any registered type, for frameworks that keep their own
// parameters (the C API's strata_cpu_optimizer_*, Python's strata.torch.CPULion / CPUAdagrad):
// a step counter, a task arena of its own threads and the optimizer's CPU kernels.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/isa.h"
#include "src/optim/optimizer.h"

namespace strata::optim {

struct CpuOptimizerOptions {
  std::string type = "AdamW";   // a registered type, any case
  bool bias_correction = true;  // Adam / AdamW
  int num_threads = 0;          // 0: all of oneTBB's default concurrency
  kernels::Isa isa = kernels::best_isa();
};

// A step's hyper-parameters; each optimizer reads those it has (Lion: lr, betas, weight_decay;
// Adagrad: lr, eps, weight_decay).
struct StepArgs {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  float grad_scale = 1.0f;
};

// Not thread-safe: one step at a time per object.
class CpuOptimizer {
 public:
  static StatusOr<std::unique_ptr<CpuOptimizer>> create(const CpuOptimizerOptions& o);

  std::string_view type() const { return type_; }
  // The state arrays per element, without the master ("exp_avg", ...).
  std::vector<std::string> state_names() const;
  // Checks everything first (hyper-parameters by name; tensors: array[0] the params, array[1 ..]
  // the state arrays, the unused ones null, no overlaps); on error nothing changes. Otherwise
  // counts the step and updates every tensor with step number = the new count.
  Status step(const StepArgs& a, std::span<const Tensor> tensors);
  StatusOr<kernels::NormResult> grad_norm(std::span<const kernels::TensorView> grads);
  int64_t step_count() const { return step_; }
  Status set_step_count(int64_t step);
  kernels::Isa isa() const { return options_.isa; }

 private:
  CpuOptimizer(const CpuOptimizerOptions& o, const kernels::KernelTable* k, std::string type,
               std::vector<std::string> names);
  CpuOptimizerOptions options_;
  const kernels::KernelTable* k_;
  std::string type_;
  std::vector<std::string> arrays_;  // master first
  tbb::task_arena arena_;
  int64_t step_ = 0;
};

}  // namespace strata::optim
