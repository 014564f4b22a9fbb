// Loss scaling for fp16 training, with DeepSpeed's DynamicLossScaler semantics so a config moves
// over unchanged: on an overflow the step is skipped and, once `hysteresis` overflows were seen,
// the scale is halved (never below min_loss_scale); after `loss_scale_window` iterations without
// an overflow it doubles. A static scale (fp16.loss_scale > 0) never changes; bf16 uses scale 1.
#pragma once

#include <cstdint>

#include "src/engine/config.h"

namespace strata::engine {

class LossScaler {
 public:
  // dynamic: fp16 with loss_scale == 0. Otherwise the scale is fixed at `c.loss_scale` (fp16) or 1.
  LossScaler(const LossScaleConfig& c, bool fp16);
  double scale() const { return scale_; }
  bool dynamic() const { return dynamic_; }
  // Called once per optimizer-step boundary with whether the gradients held an inf / NaN.
  void update(bool overflow);
  int64_t iteration() const { return iter_; }
  int hysteresis_left() const { return hysteresis_left_; }

  // For checkpoints: the complete state.
  struct State {
    double scale;
    int64_t iter, last_overflow_iter;
    int hysteresis_left;
  };
  State state() const { return {scale_, iter_, last_overflow_iter_, hysteresis_left_}; }
  void restore(const State& s);

 private:
  LossScaleConfig c_;
  bool dynamic_;
  double scale_;
  int64_t iter_ = 0;
  int64_t last_overflow_iter_ = -1;
  int hysteresis_left_;
};

}  // namespace strata::engine
