// LossScaler against DeepSpeed's DynamicLossScaler.update_scale, traced by hand: the scale doubles
// every loss_scale_window overflow-free iterations counted from the last overflow, an overflow
// first uses up the hysteresis, then halves, never below min_loss_scale.
#include "src/engine/loss_scaler.h"

#include <gtest/gtest.h>

namespace strata::engine {
namespace {

TEST(LossScaler, Bf16AndStaticScalesNeverChange) {
  LossScaler bf16(LossScaleConfig{}, /*fp16=*/false);
  EXPECT_EQ(bf16.scale(), 1.0);
  EXPECT_FALSE(bf16.dynamic());
  bf16.update(true);
  EXPECT_EQ(bf16.scale(), 1.0);
  LossScaleConfig c;
  c.loss_scale = 128;
  LossScaler fixed(c, true);
  EXPECT_FALSE(fixed.dynamic());
  for (int i = 0; i < 5; ++i) fixed.update(i % 2 == 0);
  EXPECT_EQ(fixed.scale(), 128.0);
}

TEST(LossScaler, WindowHysteresisAndHalvingFollowDeepSpeed) {
  LossScaleConfig c;
  c.initial_scale_power = 4;
  c.loss_scale_window = 4;
  c.hysteresis = 2;
  LossScaler s(c, true);
  ASSERT_TRUE(s.dynamic());
  EXPECT_EQ(s.scale(), 16.0);
  // iterations 0..3 without overflow: (3 - (-1)) % 4 == 0 doubles at iteration 3
  const double expect_clean[4] = {16, 16, 16, 32};
  for (double e : expect_clean) {
    s.update(false);
    EXPECT_EQ(s.scale(), e);
  }
  s.update(true);  // iteration 4: hysteresis 2 -> 1, scale kept
  EXPECT_EQ(s.scale(), 32.0);
  EXPECT_EQ(s.hysteresis_left(), 1);
  s.update(true);  // iteration 5: halves
  EXPECT_EQ(s.scale(), 16.0);
  s.update(false);  // 6, 7, 8: (i - 5) % 4 != 0
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 16.0);
  EXPECT_EQ(s.hysteresis_left(), 1) << "not reset by clean iterations alone (consecutive_hysteresis false)";
  s.update(false);  // 9: (9 - 5) % 4 == 0
  EXPECT_EQ(s.scale(), 32.0);
  EXPECT_EQ(s.hysteresis_left(), 2);
  EXPECT_EQ(s.iteration(), 10);
}

TEST(LossScaler, NeverBelowTheMinimum) {
  LossScaleConfig c;
  c.initial_scale_power = 2;
  c.hysteresis = 1;
  c.min_loss_scale = 2.0;
  LossScaler s(c, true);
  s.update(true);
  EXPECT_EQ(s.scale(), 2.0);
  s.update(true);
  EXPECT_EQ(s.scale(), 2.0);
}

TEST(LossScaler, StateRoundTrips) {
  LossScaleConfig c;
  c.loss_scale_window = 3;
  LossScaler a(c, true), b(c, true);
  a.update(true);
  a.update(false);
  b.restore(a.state());
  for (int i = 0; i < 7; ++i) {
    a.update(i == 4);
    b.update(i == 4);
    EXPECT_EQ(a.scale(), b.scale());
  }
}

}  // namespace
}  // namespace strata::engine
