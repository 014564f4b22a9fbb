// OptimizerRunner: the update during backward. A chunk whose fp32 gradient of the cycle is final
// is updated at once with the constants of the step that neither clips nor overflows (the engine
// knows neither until the last gradient). Its optimizer arrays are copied into a backup slot
// first, and its new bit16 values stay in the slot: nothing outside the runner changes before the
// step decides. Same constants at the step: the speculative result is the synchronous one (same
// kernel, same inputs, same constants), so it commits. Other constants (clipping, another lr):
// the arrays come back from the slot and the chunk is updated again. An overflow: they come back
// and the step is skipped. Bit-identical to the synchronous step in every case.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "src/engine/optimizer_runner.h"

namespace strata::engine {

float* const* OptimizerRunner::slot_arrays(Slot& s, float** out) {
  for (int a = 0; a < num_arrays(); ++a) out[a] = static_cast<float*>(s.buf[a].data());
  return out;
}

float* const* OptimizerRunner::home_arrays(uint32_t ci, float** out) {
  for (int a = 0; a < num_arrays(); ++a) out[a] = static_cast<float*>(chunks_[ci].a[a]->resident());
  return out;
}

// Every array's n elements, in pieces over the engine's host threads.
void OptimizerRunner::copy_arrays(float* const* dst, float* const* src, size_t n) {
  constexpr size_t kPiece = size_t{1} << 18;  // elements
  const size_t per = (n + kPiece - 1) / kPiece;
  const size_t pieces = per * static_cast<size_t>(num_arrays());
  kernels::arena_execute(*ctx_.arena, [&] {
    kernels::parallel_for(tbb::blocked_range<size_t>(0, pieces), [&](const tbb::blocked_range<size_t>& r) {
      for (size_t i = r.begin(); i != r.end(); ++i) {
        const size_t a = i / per, off = (i % per) * kPiece;
        std::memcpy(dst[a] + off, src[a] + off, std::min(kPiece, n - off) * 4);
      }
    });
  });
}

Status OptimizerRunner::wait_write(uint32_t ci) {
  for (size_t s = 0; s < sets_.size(); ++s)
    if (sets_[s].state == Set::State::kWriting && sets_[s].chunk == static_cast<int>(ci))
      STRATA_RETURN_IF_ERROR(wait_set(static_cast<int>(s)));
  return Status::ok();
}

StatusOr<bool> OptimizerRunner::speculate(uint32_t ci, const optim::StepCoeffs& c, const void* grads) {
  Chunk& ch = chunks_[ci];
  if (ch.tier == Tier::kDevice || spec_[ci] >= 0) return false;
  const bool first = std::none_of(spec_.begin(), spec_.end(), [](int s) { return s >= 0; });
  if (!first && std::memcmp(&c, &spec_c_, sizeof(c)) != 0) return false;  // one set of constants per cycle
  const auto free_slot = std::find_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.chunk < 0; });
  if (free_slot == slots_.end()) return false;
  Slot& slot = *free_slot;
  float* state[optim::kMaxArrays] = {};
  int set = -1;
  if (ch.tier == Tier::kHost) {
    home_arrays(ci, state);
  } else {
    set = set_of(ci);
    if (set < 0) {
      STRATA_ASSIGN_OR_RETURN(set, free_set(true));
      if (set < 0) return false;  // every set holds a chunk read ahead
      STRATA_RETURN_IF_ERROR(read_set(set, ci));
    }
    const Clock::time_point tr = Clock::now();
    STRATA_RETURN_IF_ERROR(wait_set(set));
    if (seconds_since(tr) > 1e-5) span(TraceLane::kEngine, "backward waits for read c" + std::to_string(ci), tr);
    slot_arrays(sets_[static_cast<size_t>(set)], state);
  }
  float* backup[optim::kMaxArrays] = {};
  copy_arrays(slot_arrays(slot, backup), state, ch.shard);
  slot.finite = run_kernel(ci, state, grads, slot.bit16.data(), c);
  slot.chunk = static_cast<int>(ci);
  spec_[ci] = static_cast<int>(free_slot - slots_.begin());
  spec_c_ = c;
  ++counts_.speculated;
  if (set >= 0) {
    STRATA_RETURN_IF_ERROR(write_set(set));
    STRATA_RETURN_IF_ERROR(start_reads());
  }
  return true;
}

float* const* OptimizerRunner::slot_arrays(Set& s, float** out) {
  for (int a = 0; a < num_arrays(); ++a) out[a] = static_cast<float*>(s.buf[a].data());
  return out;
}

// The step's decision over the speculated chunks, in update order.
Status OptimizerRunner::settle_speculated(const optim::StepCoeffs& c, ChunkSink& sink) {
  const bool commit = std::memcmp(&c, &spec_c_, sizeof(c)) == 0;
  for (uint32_t ci : order()) {
    if (spec_[ci] < 0) continue;
    Slot& slot = slots_[static_cast<size_t>(spec_[ci])];
    const size_t n = chunks_[ci].shard;
    if (commit) {
      STRATA_ASSIGN_OR_RETURN(void* out, sink.bit16_out(ci));
      std::memcpy(out, slot.bit16.data(), n * 2);
      if (!slot.finite && (bad_master_ < 0 || static_cast<int>(ci) < bad_master_)) bad_master_ = static_cast<int>(ci);
      STRATA_RETURN_IF_ERROR(sink.bit16_written(ci));
      continue;
    }
    ++counts_.redone;
    float* backup[optim::kMaxArrays] = {};
    slot_arrays(slot, backup);
    if (chunks_[ci].tier == Tier::kHost) {
      float* home[optim::kMaxArrays] = {};
      copy_arrays(home_arrays(ci, home), backup, n);
      STRATA_RETURN_IF_ERROR(update_host(ci, home, c, sink));
      continue;
    }
    // NVMe: the speculative write-back lands first (the file is rewritten in place), then the
    // update runs on the backup and writes it back.
    STRATA_RETURN_IF_ERROR(wait_write(ci));
    STRATA_RETURN_IF_ERROR(update_host(ci, backup, c, sink));
    for (int a = 0; a < num_arrays(); ++a) {
      const std::string name = "rewrite c" + std::to_string(ci) + "." + opt_->arrays()[static_cast<size_t>(a)];
      STRATA_ASSIGN_OR_RETURN(slot.io[a],
                              chunks_[ci].a[a]->put_async(slot.buf[a], io_span(TraceLane::kNvmeWrite, name)));
    }
  }
  return Status::ok();
}

Status OptimizerRunner::restore_speculated() {
  for (uint32_t ci = 0; ci < spec_.size(); ++ci) {
    if (spec_[ci] < 0) continue;
    Slot& slot = slots_[static_cast<size_t>(spec_[ci])];
    float* backup[optim::kMaxArrays] = {};
    slot_arrays(slot, backup);
    if (chunks_[ci].tier == Tier::kHost) {
      float* home[optim::kMaxArrays] = {};
      copy_arrays(home_arrays(ci, home), backup, chunks_[ci].shard);
      continue;
    }
    STRATA_RETURN_IF_ERROR(wait_write(ci));
    for (int a = 0; a < num_arrays(); ++a) {
      const std::string name = "restore c" + std::to_string(ci) + "." + opt_->arrays()[static_cast<size_t>(a)];
      STRATA_ASSIGN_OR_RETURN(slot.io[a],
                              chunks_[ci].a[a]->put_async(slot.buf[a], io_span(TraceLane::kNvmeWrite, name)));
    }
  }
  return release_slots();
}

// The redo / restore write-backs landed; every slot free again.
Status OptimizerRunner::release_slots() {
  Status first;
  const Clock::time_point t0 = Clock::now();
  for (Slot& slot : slots_) {
    for (offload::IoHandle& h : slot.io) {
      if (!h.valid()) continue;
      Status r = h.wait();
      if (first.is_ok() && !r.is_ok()) first = std::move(r);
      h = offload::IoHandle();
    }
    slot.chunk = -1;
  }
  ctx_.stats->step_nvme_s += seconds_since(t0);
  std::fill(spec_.begin(), spec_.end(), -1);
  return first;
}

}  // namespace strata::engine
