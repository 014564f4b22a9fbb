// LossScaler: DeepSpeed's DynamicLossScaler.update_scale (consecutive_hysteresis = false).
#include "src/engine/loss_scaler.h"

#include <algorithm>
#include <cmath>

namespace strata::engine {

LossScaler::LossScaler(const LossScaleConfig& c, bool fp16)
    : c_(c),
      dynamic_(fp16 && c.loss_scale <= 0.0),
      scale_(!fp16                ? 1.0
             : c.loss_scale > 0.0 ? c.loss_scale
                                  : std::ldexp(1.0, c.initial_scale_power)),
      hysteresis_left_(c.hysteresis) {}

void LossScaler::update(bool overflow) {
  if (!dynamic_) {
    ++iter_;
    return;
  }
  if (overflow) {
    if (c_.hysteresis == 1 || hysteresis_left_ == 1) {
      scale_ = std::max(scale_ / 2.0, c_.min_loss_scale);
    } else {
      --hysteresis_left_;
    }
    last_overflow_iter_ = iter_;
  } else if ((iter_ - last_overflow_iter_) % c_.loss_scale_window == 0) {
    hysteresis_left_ = c_.hysteresis;
    scale_ *= 2.0;
  }
  ++iter_;
}

void LossScaler::restore(const State& s) {
  scale_ = s.scale;
  iter_ = s.iter;
  last_overflow_iter_ = s.last_overflow_iter;
  hysteresis_left_ = s.hysteresis_left;
}

}  // namespace strata::engine
