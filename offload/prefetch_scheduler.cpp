// PrefetchScheduler: trace recording, following, lookahead and reuse distance.
#include "offload/prefetch_scheduler.h"

#include <utility>

namespace strata::offload {

PrefetchScheduler::PrefetchScheduler(std::vector<size_t> unit_elems) : elems_(std::move(unit_elems)) {}

PrefetchScheduler::Seen PrefetchScheduler::on_fetch(uint32_t u) {
  const bool repeat = !current_.empty() && current_.back() == u;
  if (!repeat) current_.push_back(u);
  if (trace_.empty() || diverged_) return Seen::kRecording;
  if (repeat) return Seen::kOnTrace;
  if (pos_ < trace_.size() && trace_[pos_] == u) {
    ++pos_;
    return Seen::kOnTrace;
  }
  diverged_ = true;
  ++order_changes_;
  last_change_ = pos_ < trace_.size()
                     ? "expected chunk " + std::to_string(trace_[pos_]) + " at fetch " + std::to_string(pos_ + 1) +
                           " of the recorded order, got chunk " + std::to_string(u)
                     : "the recorded order ended after " + std::to_string(trace_.size()) + " fetches, got chunk " +
                           std::to_string(u);
  return Seen::kOrderChanged;
}

void PrefetchScheduler::end_pass() {
  if (!trace_.empty() && !diverged_ && pos_ != trace_.size() && !current_.empty()) {
    // The pass ended early: a shorter control path.
    ++order_changes_;
    last_change_ =
        "the pass ended after " + std::to_string(pos_) + " of " + std::to_string(trace_.size()) + " recorded fetches";
  }
  if (!current_.empty()) trace_ = std::move(current_);
  current_.clear();
  pos_ = 0;
  diverged_ = false;
}

std::vector<uint32_t> PrefetchScheduler::upcoming(size_t lookahead_elems) const {
  std::vector<uint32_t> out;
  if (!following()) return out;
  size_t sum = 0;
  for (size_t i = pos_; i < trace_.size(); ++i) {
    const uint32_t u = trace_[i];
    bool seen = !current_.empty() && current_.back() == u;
    for (uint32_t v : out) seen |= v == u;
    if (seen) continue;
    if (!out.empty() && sum + elems_[u] > lookahead_elems) break;
    sum += elems_[u];
    out.push_back(u);
  }
  return out;
}

size_t PrefetchScheduler::next_use(uint32_t u) const {
  if (!current_.empty() && current_.back() == u) return 0;
  if (!following()) return kNever;
  size_t dist = 0;
  for (size_t i = pos_; i < trace_.size(); ++i) {
    if (trace_[i] == u) return dist;
    dist += elems_[trace_[i]];
  }
  return kNever;
}

}  // namespace strata::offload
