// OptimizerRunner: the update during backward, and NVMe state read ahead into the same slots.
//
// Host-resident state: a chunk whose fp32 gradient of the cycle is final is updated at once with
// the constants of the step that neither clips nor overflows (the engine knows neither until the
// last gradient). Its optimizer arrays are copied into a backup slot first, and its new bit16
// values stay in the slot: nothing outside the runner changes before the step decides. Same
// constants at the step: the speculative result is the synchronous one (same kernel, same inputs,
// same constants), so it commits. Other constants (clipping, another lr): the arrays come back from
// the slot and the chunk is updated again. An overflow: they come back and the step is skipped.
//
// NVMe-resident state: what costs is the I/O, not the kernel, so a slot holds the chunk's state
// read during the cycle's last micro-batch (forward and backward); the step updates it there with
// its true constants and writes it back behind it. No redo is ever needed.
//
// Bit-identical to the synchronous step in every case.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "src/engine/optimizer_runner.h"

namespace strata::engine {

float* const* OptimizerRunner::slot_arrays(Slot& s, float** out) {
  for (int a = 0; a < num_arrays(); ++a) out[a] = static_cast<float*>(s.buf[a].data());
  return out;
}

float* const* OptimizerRunner::slot_arrays(Set& s, float** out) {
  for (int a = 0; a < num_arrays(); ++a) out[a] = static_cast<float*>(s.buf[a].data());
  return out;
}

optim::Tensor OptimizerRunner::tensor_of(uint32_t ci, float* const* state, const void* grads, void* out) const {
  optim::Tensor t;
  for (int a = 0; a < num_arrays(); ++a) t.array[a] = state[a];
  t.grads = grads;
  t.grad_dtype = DType::kF32;
  t.params_out = out;
  t.out_dtype = ctx_.bit16;
  t.count = chunks_[ci].shard;
  return t;
}

float* const* OptimizerRunner::home_arrays(uint32_t ci, float** out) {
  for (int a = 0; a < num_arrays(); ++a) out[a] = static_cast<float*>(chunks_[ci].a[a]->resident());
  return out;
}

namespace {

// num_arrays arrays' n elements, in pieces over the threads of the arena it is called in.
void copy_pieces(float* const* dst, float* const* src, size_t n, int num_arrays) {
  constexpr size_t kPiece = size_t{1} << 18;  // elements
  const size_t per = (n + kPiece - 1) / kPiece;
  const size_t pieces = per * static_cast<size_t>(num_arrays);
  kernels::parallel_for(tbb::blocked_range<size_t>(0, pieces), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i != r.end(); ++i) {
      const size_t a = i / per, off = (i % per) * kPiece;
      std::memcpy(dst[a] + off, src[a] + off, std::min(kPiece, n - off) * 4);
    }
  });
}

}  // namespace

// Every array's n elements, in pieces over the engine's host threads.
void OptimizerRunner::copy_arrays(float* const* dst, float* const* src, size_t n) {
  kernels::arena_execute(*ctx_.arena, [&] { copy_pieces(dst, src, n, num_arrays()); });
}

// --- slots as NVMe buffers ---

Status OptimizerRunner::wait_slot(Slot& s) {
  Status first = wait_handles(s.io);
  if (s.state == Slot::State::kReading && first.is_ok()) {
    s.state = Slot::State::kStaged;
  } else if (s.state == Slot::State::kReading || s.state == Slot::State::kWriting) {
    if (s.state == Slot::State::kReading) spec_[static_cast<size_t>(s.chunk)] = -1;
    s.state = Slot::State::kFree;
    s.chunk = -1;
  }
  return first;
}

Status OptimizerRunner::reap_slots() {
  for (Slot& s : slots_)
    if (s.state == Slot::State::kWriting && all_done(s.io)) STRATA_RETURN_IF_ERROR(wait_slot(s));
  return Status::ok();
}

StatusOr<int> OptimizerRunner::take_slot() {
  STRATA_RETURN_IF_ERROR(reap_slots());
  for (size_t i = 0; i < slots_.size(); ++i)
    if (slots_[i].state == Slot::State::kFree) return static_cast<int>(i);
  return -1;
}

Status OptimizerRunner::wait_write(uint32_t ci) {
  for (size_t s = 0; s < sets_.size(); ++s)
    if (sets_[s].state == Set::State::kWriting && sets_[s].chunk == static_cast<int>(ci))
      STRATA_RETURN_IF_ERROR(wait_set(static_cast<int>(s)));
  if (const int s = updated_slot(ci); s >= 0) STRATA_RETURN_IF_ERROR(write_slot(s));
  for (Slot& s : slots_)
    if (s.state == Slot::State::kWriting && s.chunk == static_cast<int>(ci)) STRATA_RETURN_IF_ERROR(wait_slot(s));
  return Status::ok();
}

Status OptimizerRunner::read_slot(int s, uint32_t ci) {
  STRATA_RETURN_IF_ERROR(wait_write(ci));
  Slot& slot = slots_[static_cast<size_t>(s)];
  STRATA_RETURN_IF_ERROR(reset_grads(slot.grad));
  slot.state = Slot::State::kReading;
  slot.chunk = static_cast<int>(ci);
  slot.checked = false;
  slot.check_result = Status::ok();
  spec_[ci] = s;
  ++counts_.read_ahead;
  return transfer(ci, false, slot.buf, slot.io, false, nullptr, &slot.checks);
}

Status OptimizerRunner::write_slot(int s) {
  Slot& slot = slots_[static_cast<size_t>(s)];
  const auto ci = static_cast<uint32_t>(slot.chunk);
  slot.state = Slot::State::kWriting;
  spec_[ci] = -1;
  STRATA_RETURN_IF_ERROR(transfer(ci, true, slot.buf, slot.io, false, &slot.sums));
  slot.sums.fill(std::nullopt);
  return ctx_.overlap ? Status::ok() : wait_slot(slot);
}

// An NVMe chunk read ahead: updated in its slot with the step's constants; update writes it back
// once every chunk's bit16 params are on their way (they are what the next forward reads first).
Status OptimizerRunner::update_staged(uint32_t ci, const optim::StepCoeffs& c, ChunkSink& sink) {
  Slot& slot = slots_[static_cast<size_t>(spec_[ci])];
  const Clock::time_point tr = Clock::now();
  STRATA_RETURN_IF_ERROR(wait_slot(slot));
  if (seconds_since(tr) > 1e-5) span(TraceLane::kEngine, "step waits for read c" + std::to_string(ci), tr);
  if (slot.checked) STRATA_RETURN_IF_ERROR(slot.check_result);  // checked ahead: a mismatch updates nothing
  float* state[optim::kMaxArrays] = {};
  STRATA_ASSIGN_OR_RETURN(const void* grads, chunk_grads(ci, slot.grad, sink));
  KernelIo kio{slot.checked ? nullptr : &slot.checks, &slot.sums, Status::ok()};
  STRATA_RETURN_IF_ERROR(update_host(ci, slot_arrays(slot, state), grads, c, sink, &kio));
  slot.state = Slot::State::kUpdated;
  spec_[ci] = -1;
  return ctx_.overlap ? Status::ok() : write_slot(static_cast<int>(&slot - slots_.data()));
}

// --- speculation of host-resident chunks ---

bool OptimizerRunner::any_speculated() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state == Slot::State::kSpeculated; }) ||
         std::any_of(dslots_.begin(), dslots_.end(), [](const DeviceSlot& d) { return d.chunk >= 0; });
}

StatusOr<bool> OptimizerRunner::speculate(uint32_t ci, const optim::StepCoeffs& c, const void* grads) {
  Chunk& ch = chunks_[ci];
  if (any_speculated() && std::memcmp(&c, &spec_c_, sizeof(c)) != 0) return false;  // one set of constants per cycle
  if (ch.tier == Tier::kDevice) return speculate_device(ci, c, grads);
  if (ch.tier != Tier::kHost || spec_[ci] >= 0) return false;
  STRATA_ASSIGN_OR_RETURN(const int s, take_slot());
  if (s < 0) return false;
  Slot& slot = slots_[static_cast<size_t>(s)];
  std::array<float*, optim::kMaxArrays> backup{};
  slot_arrays(slot, backup.data());
  void* bit16 = slot.bit16.data();
  slot.state = Slot::State::kSpeculated;
  slot.chunk = static_cast<int>(ci);
  spec_[ci] = s;
  spec_c_ = c;
  ++counts_.speculated;
  if (!background_) {
    speculate_into(s, ci, c, grads, backup.data(), bit16, *ctx_.arena);
    slot.finite = spec_finite_[static_cast<size_t>(s)] != 0;
    ctx_.stats->step_update_s += std::exchange(spec_seconds_, 0.0);
    return true;
  }
  slot.pending = true;
  background_->post([this, s, ci, c, grads, backup, bit16] {
    speculate_into(s, ci, c, grads, backup.data(), bit16, *ctx_.background_arena);
    return Status::ok();
  });
  return true;
}

void OptimizerRunner::speculate_into(int s, uint32_t ci, const optim::StepCoeffs& c, const void* grads,
                                     float* const* backup, void* bit16, tbb::task_arena& arena) {
  float* home[optim::kMaxArrays] = {};
  home_arrays(ci, home);
  const optim::Tensor t = tensor_of(ci, home, grads, bit16);
  const Clock::time_point t0 = Clock::now();
  bool finite = true;
  kernels::arena_execute(arena, [&] {
    copy_pieces(backup, home, t.count, num_arrays());
    finite = opt_->update_host(*ctx_.k, c, {&t, 1});
  });
  spec_finite_[static_cast<size_t>(s)] = finite ? 1 : 0;
  spec_seconds_ += seconds_since(t0);
  span(TraceLane::kUpdate, "update c" + std::to_string(ci), t0);
}

void OptimizerRunner::join_background() {
  if (!background_) return;
  (void)background_->wait();  // its tasks cannot fail: results go to their slots
  for (size_t s = 0; s < slots_.size(); ++s) {
    Slot& slot = slots_[s];
    if (std::exchange(slot.pending, false)) slot.finite = spec_finite_[s] != 0;
    if (std::exchange(slot.check_pending, false)) {
      slot.check_result = std::exchange(check_results_[s], Status::ok());
      slot.checked = true;
    }
  }
  ctx_.stats->step_update_s += std::exchange(spec_seconds_, 0.0);
}

// --- speculation of device-resident chunks ---

Status OptimizerRunner::device_copy_arrays(float* const* dst, float* const* src, size_t n) {
  for (int a = 0; a < num_arrays(); ++a)
    STRATA_RETURN_IF_ERROR(ctx_.compute->copy(dst[a], src[a], n * 4, offload::CopyKind::kDeviceToDevice));
  return Status::ok();
}

// On the compute stream, after the chunk's gradient (accumulated or reduced there): the arrays
// backed up, then the device kernel with the new bit16 values going to the slot, not the params.
StatusOr<bool> OptimizerRunner::speculate_device(uint32_t ci, const optim::StepCoeffs& c, const void* grads) {
  if (dspec_[ci] >= 0 || grads == nullptr) return false;
  auto free_slot = std::find_if(dslots_.begin(), dslots_.end(), [](const DeviceSlot& d) { return d.chunk < 0; });
  if (free_slot == dslots_.end()) return false;
  DeviceSlot& d = *free_slot;
  float* home[optim::kMaxArrays] = {};
  home_arrays(ci, home);
  STRATA_RETURN_IF_ERROR(device_copy_arrays(d.a.data(), home, chunks_[ci].shard));
  STRATA_RETURN_IF_ERROR(ctx_.ops->update(*ctx_.compute, *opt_, c, tensor_of(ci, home, grads, d.bit16)));
  d.chunk = static_cast<int>(ci);
  dspec_[ci] = static_cast<int>(&d - dslots_.data());
  spec_c_ = c;
  ++counts_.speculated;
  return true;
}

// Commit: the new bit16 values where the params rest (device memory, in place); else the arrays
// restored and the chunk updated again with the step's constants. Each slot is free once settled
// (its copies are ahead of any later use in stream order).
Status OptimizerRunner::settle_device(const optim::StepCoeffs& c, bool commit, ChunkSink& sink) {
  for (uint32_t ci : order()) {
    if (dspec_[ci] < 0) continue;
    DeviceSlot& d = dslots_[static_cast<size_t>(dspec_[ci])];
    const size_t n = chunks_[ci].shard;
    d.chunk = -1;
    dspec_[ci] = -1;
    if (commit) {
      STRATA_ASSIGN_OR_RETURN(void* out, sink.bit16_out(ci));
      STRATA_RETURN_IF_ERROR(ctx_.compute->copy(out, d.bit16, n * 2, offload::CopyKind::kDeviceToDevice));
      STRATA_RETURN_IF_ERROR(sink.bit16_written(ci));
      continue;
    }
    ++counts_.redone;
    float* home[optim::kMaxArrays] = {};
    home_arrays(ci, home);
    STRATA_RETURN_IF_ERROR(device_copy_arrays(home, d.a.data(), n));
    STRATA_RETURN_IF_ERROR(update_device(ci, c, sink));
  }
  return Status::ok();
}

Status OptimizerRunner::restore_device() {
  for (DeviceSlot& d : dslots_) {
    if (d.chunk < 0) continue;
    const auto ci = static_cast<uint32_t>(d.chunk);
    float* home[optim::kMaxArrays] = {};
    home_arrays(ci, home);
    STRATA_RETURN_IF_ERROR(device_copy_arrays(home, d.a.data(), chunks_[ci].shard));
    d.chunk = -1;
    dspec_[ci] = -1;
  }
  return Status::ok();
}

// The step's decision over the speculated chunks, in update order.
Status OptimizerRunner::settle_speculated(const optim::StepCoeffs& c, ChunkSink& sink) {
  join_background();
  const bool commit = std::memcmp(&c, &spec_c_, sizeof(c)) == 0;
  STRATA_RETURN_IF_ERROR(settle_device(c, commit, sink));
  for (uint32_t ci : order()) {
    if (spec_[ci] < 0) continue;
    Slot& slot = slots_[static_cast<size_t>(spec_[ci])];
    if (slot.state != Slot::State::kSpeculated) continue;
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
    float* home[optim::kMaxArrays] = {};
    copy_arrays(home_arrays(ci, home), slot_arrays(slot, backup), n);
    STRATA_RETURN_IF_ERROR(update_host(ci, home, sink.grads(ci), c, sink));
  }
  return Status::ok();
}

Status OptimizerRunner::restore_speculated(bool keep_grads) {
  join_background();
  Status first = restore_device();
  for (Slot& slot : slots_) {
    if (slot.state == Slot::State::kSpeculated) {
      float* backup[optim::kMaxArrays] = {};
      float* home[optim::kMaxArrays] = {};
      const auto ci = static_cast<uint32_t>(slot.chunk);
      copy_arrays(home_arrays(ci, home), slot_arrays(slot, backup), chunks_[ci].shard);
    } else if (slot.state == Slot::State::kReading || slot.state == Slot::State::kStaged) {
      // A gradient that joined the state read ahead goes to NVMe first (the step reads it there).
      if (!keep_grads) slot.grad.adopted = slot.grad.issued = false;
      if (Status g = give_back(slot); first.is_ok() && !g.is_ok()) first = std::move(g);
      // The read lands before the buffer is reused; its error concerns no one (nothing uses the
      // data: whoever needs that state reads it again and hears of it).
      if (slot.state == Slot::State::kReading) (void)wait_slot(slot);
    }
    drop(slot);
  }
  return first;
}

// A slot holding a backup, a read ahead or a read in flight's landed buffer freed; one whose state
// must still reach the disk (updated, writing) kept.
void OptimizerRunner::drop(Slot& slot) {
  if (slot.state == Slot::State::kWriting || slot.state == Slot::State::kUpdated || slot.state == Slot::State::kFree)
    return;
  spec_[static_cast<size_t>(slot.chunk)] = -1;
  slot.state = Slot::State::kFree;
  slot.chunk = -1;
}

int OptimizerRunner::updated_slot(uint32_t ci) const {
  for (size_t s = 0; s < slots_.size(); ++s)
    if (slots_[s].state == Slot::State::kUpdated && slots_[s].chunk == static_cast<int>(ci)) return static_cast<int>(s);
  return -1;
}

// After the step: updated NVMe state starts its write-back (the rest follows in the background of
// the next calls: progress_io), settled backups (and any read left over) freed.
Status OptimizerRunner::release_slots() {
  Status first;
  STRATA_RETURN_IF_ERROR(background_io());
  for (Slot& slot : slots_) {
    if (slot.state == Slot::State::kReading) {
      Status r = wait_slot(slot);
      if (first.is_ok() && !r.is_ok()) first = std::move(r);
    }
    drop(slot);
  }
  return first;
}

}  // namespace strata::engine
