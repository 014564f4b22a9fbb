// The independent reference of the engine training tests: the MLP of mlp_model.h trained in
// memory by plain code — a double-precision optimizer of kernels/reference (AdamW, Lion or
// Adagrad), fp32 gradient sums, clipping and loss scaling as torch does them, bit16 params rounded
// from the master.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/reference/adam_ref.h"
#include "kernels/reference/optimizers_ref.h"
#include "tests/engine/engine_harness.h"
#include "tests/engine/mlp_model.h"

namespace strata::engine::reftrain {

using harness::EngineRun;
using harness::kAccum;
using harness::kClip;
using harness::kLionLr;
using harness::kLr;
using harness::kSteps;
using harness::kWeightDecay;
using strata::testing::Mlp;

// AdamW: lr kLr; Lion: lr kLionLr, betas (0.9, 0.99); Adagrad: lr kLr, eps 1e-10; weight decay kWeightDecay.
enum class RefOptimizer { kAdamW, kLion, kAdagrad };

// Plain in-memory training: the independent reference.
class Reference final : public testing::ParamAccess {
 public:
  Reference(const Mlp& mlp, DType dt, double scale, RefOptimizer opt = RefOptimizer::kAdamW)
      : dt_(dt), scale_(scale), opt_(opt) {
    for (const auto& l : mlp.layers()) {
      add(l.w, mlp.init(l, true, 1));
      add(l.b, mlp.init(l, false, 1));
    }
  }
  const uint16_t* fetch(const std::string& n) override { return t_.at(n).p16.data(); }
  void release(const std::string&) override {}
  void grad(const std::string& n, const uint16_t* g, size_t count) override {
    T& t = t_.at(n);
    for (size_t i = 0; i < count; ++i) t.acc[i] += testing::widen(g[i], dt_);
  }
  // Returns {applied, clip coefficient}.
  std::pair<bool, double> step(int64_t* t_count) {
    double sumsq = 0.0;
    for (auto& [n, t] : t_) sumsq += reference::sumsq_ref(t.acc.data(), DType::kF32, t.acc.size());
    const double inv = 1.0 / (scale_ * kAccum);
    if (!std::isfinite(sumsq)) {
      for (auto& [n, t] : t_) std::fill(t.acc.begin(), t.acc.end(), 0.0f);
      scale_ /= 2;  // hysteresis 1
      return {false, 1.0};
    }
    const double norm = std::sqrt(sumsq) * inv;
    const double clip = std::min(1.0, kClip / (norm + 1e-6));  // torch's clip_grad_norm_
    const double gs = static_cast<double>(static_cast<float>(inv * clip));
    ++*t_count;
    for (auto& [n, t] : t_) {
      if (opt_ == RefOptimizer::kAdamW) {
        reference::AdamRefHyper h;
        h.lr = kLr;
        h.weight_decay = kWeightDecay;
        h.grad_scale = gs;
        reference::adam_step_ref(kernels::AdamMode::kAdamW, true, *t_count, h, t.p.data(), t.m.data(), t.v.data(),
                                 t.acc.data(), DType::kF32, t.p.size());
      } else if (opt_ == RefOptimizer::kLion) {
        reference::lion_step_ref({kLionLr, 0.9, 0.99, kWeightDecay, gs}, t.p.data(), t.m.data(), t.acc.data(),
                                 DType::kF32, t.p.size());
      } else {
        reference::adagrad_step_ref({kLr, 1e-10, kWeightDecay, gs}, t.p.data(), t.m.data(), t.acc.data(), DType::kF32,
                                    t.p.size());
      }
      for (size_t i = 0; i < t.p.size(); ++i) t.p16[i] = testing::narrow(static_cast<float>(t.p[i]), dt_);
      std::fill(t.acc.begin(), t.acc.end(), 0.0f);
    }
    return {true, clip};
  }
  const std::vector<double>& master(const std::string& n) const { return t_.at(n).p; }
  double scale() const { return scale_; }

 private:
  struct T {
    std::vector<double> p, m, v;
    std::vector<float> acc;
    std::vector<uint16_t> p16;
  };
  void add(const std::string& n, const std::vector<float>& init) {
    T t;
    t.p.assign(init.begin(), init.end());
    t.m.assign(init.size(), 0.0);
    t.v.assign(init.size(), 0.0);
    t.acc.assign(init.size(), 0.0f);
    for (float f : init) t.p16.push_back(testing::narrow(f, dt_));
    t_.emplace(n, std::move(t));
  }
  DType dt_;
  double scale_;
  RefOptimizer opt_;
  std::map<std::string, T> t_;
};

struct RefRun {
  Reference ref;
  std::vector<double> losses;
  std::vector<bool> applied;
  int clipped = 0;
};

inline RefRun train_reference(const Mlp& mlp, DType dt, double scale, int poison_micro = -1,
                              RefOptimizer opt = RefOptimizer::kAdamW) {
  RefRun r{Reference(mlp, dt, scale, opt), {}, {}, 0};
  std::vector<float> x, y;
  int64_t t = 0;
  for (int micro = 0; micro < kSteps * kAccum; ++micro) {
    mlp.batch(100 + static_cast<uint32_t>(micro), &x, &y);
    r.losses.push_back(mlp.train_micro(r.ref, x, y, dt, r.ref.scale(), micro == poison_micro ? 3 : -1));
    if ((micro + 1) % kAccum == 0) {
      auto [applied, clip] = r.ref.step(&t);
      r.applied.push_back(applied);
      r.clipped += clip < 1.0;
    }
  }
  return r;
}

inline double max_diff(const EngineRun& run, const Reference& ref) {
  double worst = 0.0;
  for (const auto& [n, v] : run.master) {
    const auto& p = ref.master(n);
    for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(v[i]) - p[i]));
  }
  return worst;
}

}  // namespace strata::engine::reftrain
