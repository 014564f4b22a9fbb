// The model and batch flags the training benchmarks share (bench/train, bench/zero).
#pragma once

#include <algorithm>
#include <string>

#include "src/train/trainer.h"

namespace strata::bench {

// Applies --layers, --channels, --heads, --batch, --seq or --steps (plus one warm-up step) with
// value v to o; false when `flag` is none of them.
inline bool gpt_flag(const std::string& flag, int v, train::TrainOptions* o) {
  if (flag == "--layers")
    o->shape.layers = v;
  else if (flag == "--channels")
    o->shape.channels = v;
  else if (flag == "--heads")
    o->shape.heads = v;
  else if (flag == "--batch")
    o->batch = v;
  else if (flag == "--seq")
    o->seq = v, o->shape.max_seq = std::max(o->shape.max_seq, v);
  else if (flag == "--steps")
    o->steps = v + 1;
  else
    return false;
  return true;
}

}  // namespace strata::bench
