// OptimizerRunner: allocation of the optimizer's arrays, initial values, checkpoint reads and
// writes, and the update of every chunk. With overlap, NVMe reads start during the forward /
// backward of the micro-batch that ends the accumulation cycle (the state does not change before
// the step) and the last write-backs finish during the next one. Results do not depend on the
// order or on the overlap: each chunk's update reads only its own state and gradient.
#include "src/engine/optimizer_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/cpu/parallel.h"

namespace strata::engine {

Status OptimizerRunner::allocate(const Context& ctx, const std::vector<size_t>& shard_numel,
                                 const std::vector<Tier>& tiers) {
  ctx_ = ctx;
  chunks_.resize(shard_numel.size());
  size_t max_shard = 0, max_nvme_shard = 0, max_device_shard = 0;
  bool nvme = false;
  for (size_t ci = 0; ci < chunks_.size(); ++ci) {
    chunks_[ci].shard = shard_numel[ci];
    chunks_[ci].tier = tiers[ci];
    max_shard = std::max(max_shard, shard_numel[ci]);
    if (tiers[ci] == Tier::kNvme) max_nvme_shard = std::max(max_nvme_shard, shard_numel[ci]);
    if (tiers[ci] == Tier::kDevice) max_device_shard = std::max(max_device_shard, shard_numel[ci]);
    nvme |= tiers[ci] == Tier::kNvme;
  }
  if (nvme) {
    if (ctx_.store == nullptr) return internal_error("optimizer state on NVMe without a store");
    sets_.resize(static_cast<size_t>(std::max(1, ctx_.buffer_count)));
    for (Set& set : sets_) {
      for (int a = 0; a < num_arrays(); ++a) {
        STRATA_ASSIGN_OR_RETURN(set.buf[a], offload::AlignedBuffer::create(max_shard * 4, ctx_.pin));
      }
      if (ctx_.nvme_grads) {
        STRATA_ASSIGN_OR_RETURN(set.grad.buf, offload::AlignedBuffer::create(max_nvme_shard * 4, ctx_.pin));
      }
    }
  }
  slots_.resize(ctx_.spec_slots);
  for (Slot& slot : slots_) {
    for (int a = 0; a < num_arrays(); ++a) {
      STRATA_ASSIGN_OR_RETURN(slot.buf[a], offload::AlignedBuffer::create(max_shard * 4, offload::PinMode::kNone));
    }
    STRATA_ASSIGN_OR_RETURN(slot.bit16, offload::AlignedBuffer::create(max_shard * 2, offload::PinMode::kNone));
    if (ctx_.nvme_grads && nvme) {
      // As large as GradientPath's assembly buffers (the largest NVMe chunk's): adopt_grads swaps them.
      STRATA_ASSIGN_OR_RETURN(slot.grad.buf,
                              offload::AlignedBuffer::create(max_nvme_shard * 4, offload::PinMode::kNone));
    }
  }
  spec_.assign(chunks_.size(), -1);
  spec_finite_.assign(slots_.size(), 1);
  check_results_.assign(slots_.size(), Status::ok());
  if (ctx_.background_arena != nullptr && !slots_.empty())
    background_ = std::make_unique<SerialQueue>(ctx_.background_idle ? SerialQueue::Priority::kIdle
                                                                     : SerialQueue::Priority::kNormal);
  // Device slots: the arrays (shards are multiples of 64 elements: 256-byte aligned), then bit16.
  dslots_.resize(max_device_shard > 0 ? ctx_.device_spec_slots : 0);
  for (DeviceSlot& d : dslots_) {
    const size_t array_bytes = max_device_shard * 4;
    STRATA_ASSIGN_OR_RETURN(d.mem,
                            ctx_.dev->allocate(array_bytes * static_cast<size_t>(num_arrays()) + max_device_shard * 2));
    for (int a = 0; a < num_arrays(); ++a)
      d.a[static_cast<size_t>(a)] =
          reinterpret_cast<float*>(static_cast<uint8_t*>(d.mem) + array_bytes * static_cast<size_t>(a));
    d.bit16 = static_cast<uint8_t*>(d.mem) + array_bytes * static_cast<size_t>(num_arrays());
  }
  dspec_.assign(chunks_.size(), -1);
  for (size_t ci = 0; ci < chunks_.size(); ++ci) {
    Chunk& c = chunks_[ci];
    for (int a = 0; a < num_arrays(); ++a) {
      const ArraySite site{ctx_.dev,  ctx_.compute, ctx_.ops,
                           ctx_.pin,  ctx_.store,   sets_.empty() ? nullptr : &sets_[0].buf[a],
                           ctx_.stats};
      const std::string key = "c" + std::to_string(ci) + "." + opt_->arrays()[static_cast<size_t>(a)];
      STRATA_ASSIGN_OR_RETURN(c.a[a], make_array(c.tier, site, key, c.shard * 4));
    }
  }
  return Status::ok();
}

Status OptimizerRunner::free() {
  join_background();
  background_.reset();
  Status first = quiesce();
  for (Chunk& c : chunks_)
    for (auto& a : c.a)
      if (a) {
        if (Status s = a->release(); first.is_ok() && !s.is_ok()) first = std::move(s);
        a.reset();
      }
  chunks_.clear();
  sets_.clear();
  slots_.clear();
  spec_.clear();
  for (DeviceSlot& d : dslots_)
    if (d.mem != nullptr)
      if (Status s = ctx_.dev->free(std::exchange(d.mem, nullptr)); first.is_ok() && !s.is_ok()) first = std::move(s);
  dslots_.clear();
  dspec_.clear();
  return first;
}

Status OptimizerRunner::init(uint32_t ci, const float* master) {
  join_background();
  Chunk& c = chunks_[ci];
  STRATA_RETURN_IF_ERROR(c.a[0]->write(0, master, c.shard * 4));
  for (int a = 1; a < num_arrays(); ++a) STRATA_RETURN_IF_ERROR(c.a[a]->zero());
  return Status::ok();
}

Status OptimizerRunner::read_arrays(uint32_t ci, float* const* dst) {
  join_background();
  Chunk& c = chunks_[ci];
  for (int a = 0; a < num_arrays(); ++a) STRATA_RETURN_IF_ERROR(c.a[a]->read(0, dst[a], c.shard * 4));
  return Status::ok();
}

Status OptimizerRunner::write_arrays(uint32_t ci, const float* const* src) {
  join_background();
  Chunk& c = chunks_[ci];
  for (int a = 0; a < num_arrays(); ++a) STRATA_RETURN_IF_ERROR(c.a[a]->write(0, src[a], c.shard * 4));
  return Status::ok();
}

Status OptimizerRunner::read_master(uint32_t ci, size_t off, float* dst, size_t n) {
  join_background();
  return chunks_[ci].a[0]->read(off * 4, dst, n * 4);
}

std::vector<uint32_t> OptimizerRunner::order() const {
  std::vector<uint32_t> o(chunks_.size());
  for (size_t i = 0; i < o.size(); ++i) o[i] = static_cast<uint32_t>(o.size() - 1 - i);
  return o;
}

void OptimizerRunner::span(TraceLane lane, std::string name, Clock::time_point b) const {
  if (ctx_.tracer) ctx_.tracer->span(lane, std::move(name), b, Clock::now());
}

std::function<void()> OptimizerRunner::io_span(TraceLane lane, std::string name) const {
  if (!ctx_.tracer) return {};
  return [t = ctx_.tracer, lane, name = std::move(name), t0 = Clock::now()] { t->span(lane, name, t0, Clock::now()); };
}

// --- the NVMe pipeline's buffer sets ---

Status OptimizerRunner::wait_set(int s) {
  Set& set = sets_[static_cast<size_t>(s)];
  if (set.state != Set::State::kReading && set.state != Set::State::kWriting) return Status::ok();
  Status first = wait_handles(set.io);
  if (set.state == Set::State::kReading && first.is_ok()) {
    set.state = Set::State::kReady;
  } else {
    set.state = Set::State::kFree;
    set.chunk = -1;
  }
  return first;
}

bool OptimizerRunner::all_done(const Handles& io) {
  return std::all_of(io.begin(), io.end(), [](const offload::IoHandle& h) { return !h.valid() || h.done(); });
}

// Every valid handle waited for and reset (the time counts as NVMe wait); the first error.
Status OptimizerRunner::wait_handles(Handles& io) {
  const Clock::time_point t0 = Clock::now();
  Status first;
  for (offload::IoHandle& h : io) {
    if (!h.valid()) continue;
    Status r = h.wait();
    if (first.is_ok() && !r.is_ok()) first = std::move(r);
    h = offload::IoHandle();
  }
  ctx_.stats->step_nvme_s += seconds_since(t0);
  return first;
}

StatusOr<int> OptimizerRunner::free_set(bool block) {
  int oldest = -1;
  for (size_t s = 0; s < sets_.size(); ++s) {
    Set& set = sets_[s];
    if (set.state == Set::State::kWriting && all_done(set.io)) STRATA_RETURN_IF_ERROR(wait_set(static_cast<int>(s)));
    if (set.state == Set::State::kFree) return static_cast<int>(s);
    if (set.state == Set::State::kWriting && (oldest < 0 || set.issued < sets_[static_cast<size_t>(oldest)].issued))
      oldest = static_cast<int>(s);
  }
  if (!block || oldest < 0) return -1;
  STRATA_RETURN_IF_ERROR(wait_set(oldest));
  return oldest;
}

Status OptimizerRunner::reap_sets() {
  for (size_t s = 0; s < sets_.size(); ++s)
    if (sets_[s].state == Set::State::kWriting && all_done(sets_[s].io))
      STRATA_RETURN_IF_ERROR(wait_set(static_cast<int>(s)));
  return Status::ok();
}

bool OptimizerRunner::writing(uint32_t ci) const {
  for (const Set& set : sets_)
    if (set.state == Set::State::kWriting && set.chunk == static_cast<int>(ci)) return true;
  for (const Slot& slot : slots_)
    if ((slot.state == Slot::State::kWriting || slot.state == Slot::State::kUpdated) &&
        slot.chunk == static_cast<int>(ci))
      return true;
  return false;
}

int OptimizerRunner::set_of(uint32_t ci) const {
  for (size_t s = 0; s < sets_.size(); ++s)
    if (sets_[s].chunk == static_cast<int>(ci) && sets_[s].state != Set::State::kWriting) return static_cast<int>(s);
  return -1;
}

Status OptimizerRunner::read_set(int s, uint32_t ci, bool demand) {
  // The chunk's write-back of the previous step must land before it is read again.
  STRATA_RETURN_IF_ERROR(wait_write(ci));
  Set& set = sets_[static_cast<size_t>(s)];
  STRATA_RETURN_IF_ERROR(reset_grads(set.grad));
  set.chunk = static_cast<int>(ci);
  set.state = Set::State::kReading;
  set.issued = ++issue_;
  return transfer(ci, false, set.buf, set.io, demand, nullptr, &set.checks);
}

// Every array of chunk ci from its NVMe home into buf (put: from buf into its home), handles into io.
Status OptimizerRunner::transfer(uint32_t ci, bool put, Buffers& buf, Handles& io, bool demand, Sums* sums,
                                 Checks* checks) {
  const auto priority = demand || !ctx_.overlap ? offload::IoPriority::kDemand : offload::IoPriority::kBackground;
  for (int a = 0; a < num_arrays(); ++a) {
    const std::string name =
        std::string(put ? "write c" : "read c") + std::to_string(ci) + "." + opt_->arrays()[static_cast<size_t>(a)];
    ArrayHome& home = *chunks_[ci].a[a];
    const std::optional<uint64_t> sum = sums != nullptr ? (*sums)[static_cast<size_t>(a)] : std::nullopt;
    STRATA_ASSIGN_OR_RETURN(io[a],
                            put ? home.put_async(buf[a], io_span(TraceLane::kNvmeWrite, name), priority, sum)
                                : home.get_async(buf[a], io_span(TraceLane::kNvmeRead, name), priority,
                                                 checks != nullptr ? &(*checks)[static_cast<size_t>(a)] : nullptr));
  }
  return Status::ok();
}

// Set s's arrays written back to its chunk's NVMe home (waited for at once without overlap).
Status OptimizerRunner::write_set(int s) {
  Set& set = sets_[static_cast<size_t>(s)];
  const auto ci = static_cast<uint32_t>(set.chunk);
  set.state = Set::State::kWriting;
  set.issued = ++issue_;
  STRATA_RETURN_IF_ERROR(transfer(ci, true, set.buf, set.io, false, &set.sums));
  set.sums.fill(std::nullopt);
  return ctx_.overlap ? Status::ok() : wait_set(s);
}

Status OptimizerRunner::start_reads() {
  STRATA_RETURN_IF_ERROR(progress_io(true));
  check_landed();
  return Status::ok();
}

// One slot per call of the host program (fetch), so the checks of the state read ahead spread over
// the forward and backward instead of standing in the step's update, where every chunk's arrays
// would be hashed between the last gradient and the new params. A read that failed is left for
// the update, which reports it; a mismatch is kept and reported there too (nothing updated).
void OptimizerRunner::check_landed() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.state != Slot::State::kReading || s.checked || s.check_pending || !all_done(s.io)) continue;
    bool ok = true;
    for (int a = 0; a < num_arrays(); ++a) ok = ok && s.io[static_cast<size_t>(a)].wait().is_ok();  // done: no wait
    if (!ok) continue;
    std::array<float*, optim::kMaxArrays> state{};
    slot_arrays(s, state.data());
    const auto ci = static_cast<uint32_t>(s.chunk);
    ++ctx_.stats->chunks_checked_ahead;  // counted as queued
    if (!background_) {
      s.check_result = check_slot(ci, state.data(), s.checks, *ctx_.arena);
      s.checked = true;
      return;
    }
    s.check_pending = true;
    background_->post([this, i, ci, state, checks = &s.checks] {
      check_results_[i] = check_slot(ci, state.data(), *checks, *ctx_.background_arena);
      return Status::ok();
    });
    return;
  }
}

Status OptimizerRunner::check_slot(uint32_t ci, float* const* state, const Checks& checks, tbb::task_arena& arena) {
  const Clock::time_point t0 = Clock::now();
  Status s = kernels::arena_execute(arena, [&] { return verify_reads(ci, state, checks); });
  span(TraceLane::kUpdate, "check reads c" + std::to_string(ci), t0);
  return s;
}

// The slots' I/O in the background of the host program's calls: write-backs of the last step
// first (in update order), then — `reads` — the state of the next one. At most 2 x buffer_count
// chunks in flight, so that the reads the forward waits for (params on NVMe) are not queued
// behind the whole optimizer state (bench/train, params + optimizer on NVMe: 1, 2, 4, 8 and
// unbounded chunks in flight gave 1.47, 1.38, 1.22, 1.19 and 1.47x the bound).
Status OptimizerRunner::progress_io(bool reads) {
  if (sets_.empty() || !ctx_.overlap) return Status::ok();
  STRATA_RETURN_IF_ERROR(reap_sets());
  STRATA_RETURN_IF_ERROR(reap_slots());
  int in_flight = 0;
  for (const Set& s : sets_) in_flight += s.state == Set::State::kReading;
  for (const Slot& s : slots_)
    in_flight += (s.state == Slot::State::kReading || s.state == Slot::State::kWriting) && !all_done(s.io);
  for (uint32_t ci : order()) {
    if (in_flight >= 2 * ctx_.buffer_count) return Status::ok();
    const int s = updated_slot(ci);
    if (s < 0) continue;
    STRATA_RETURN_IF_ERROR(write_slot(s));
    ++in_flight;
  }
  if (!reads) return Status::ok();
  for (uint32_t ci : order()) {
    if (chunks_[ci].tier != Tier::kNvme || set_of(ci) >= 0 || spec_[ci] >= 0) continue;
    if (writing(ci) || in_flight >= 2 * ctx_.buffer_count) break;
    ++in_flight;
    STRATA_ASSIGN_OR_RETURN(const int slot, take_slot());  // read ahead into a slot, else a buffer set
    if (slot >= 0) {
      STRATA_RETURN_IF_ERROR(read_slot(slot, ci));
      continue;
    }
    STRATA_ASSIGN_OR_RETURN(int s, free_set(false));
    if (s < 0) break;
    STRATA_RETURN_IF_ERROR(read_set(s, ci, false));
  }
  return Status::ok();
}

// Reads ahead into slots are dropped (read again when needed); backups of speculated chunks stay.
Status OptimizerRunner::quiesce() {
  join_background();
  Status first;
  for (size_t s = 0; s < slots_.size(); ++s)  // write-backs not started yet start now
    if (slots_[s].state == Slot::State::kUpdated) {
      Status w = write_slot(static_cast<int>(s));
      if (first.is_ok() && !w.is_ok()) first = std::move(w);
    }
  for (Slot& slot : slots_) {
    if (slot.state == Slot::State::kFree || slot.state == Slot::State::kSpeculated) continue;
    if (Status g = give_back(slot); first.is_ok() && !g.is_ok()) first = std::move(g);
    const bool read_ahead = slot.state == Slot::State::kReading;  // its data is dropped: so is its error
    Status r = wait_slot(slot);
    if (first.is_ok() && !r.is_ok() && !read_ahead) first = std::move(r);
    if (slot.chunk >= 0) spec_[static_cast<size_t>(slot.chunk)] = -1;
    slot.state = Slot::State::kFree;
    slot.chunk = -1;
  }
  for (size_t s = 0; s < sets_.size(); ++s) {
    Status r = wait_set(static_cast<int>(s));
    if (first.is_ok() && !r.is_ok()) first = std::move(r);
    sets_[s].state = Set::State::kFree;
    sets_[s].chunk = -1;
  }
  // Gradient reads land in buffers about to be reused or freed; nothing uses their data now.
  for (Set& s : sets_) (void)reset_grads(s.grad);
  for (Slot& s : slots_) (void)reset_grads(s.grad);
  return first;
}

// --- gradients read from NVMe ---

Status OptimizerRunner::reset_grads(GradIn& g) {
  Status s;
  if (g.io.valid()) s = g.io.wait();
  g.io = offload::IoHandle();
  g.issued = false;
  return s;
}

bool OptimizerRunner::adopt_grads(uint32_t ci, offload::AlignedBuffer& buf, size_t n) {
  if (!ctx_.nvme_grads || spec_[ci] < 0) return false;
  Slot& slot = slots_[static_cast<size_t>(spec_[ci])];
  if (slot.state != Slot::State::kReading && slot.state != Slot::State::kStaged) return false;
  if (slot.grad.issued || slot.grad.buf.capacity() < n * 4) return false;
  // The slot's buffer is idle (nothing issued into it): of the same size, it becomes the giver's
  // for its next chunk, else the gradient is copied.
  if (slot.grad.buf.capacity() == buf.capacity())
    std::swap(slot.grad.buf, buf);
  else
    std::memcpy(slot.grad.buf.data(), buf.data(), n * 4);
  slot.grad.issued = slot.grad.adopted = true;
  return true;
}

Status OptimizerRunner::give_back(Slot& slot) {
  if (!slot.grad.adopted || slot.chunk < 0) return Status::ok();
  slot.grad.adopted = slot.grad.issued = false;
  if (!ctx_.give_back_grads) return internal_error("an adopted gradient with nowhere to go");
  return ctx_.give_back_grads(static_cast<uint32_t>(slot.chunk), slot.grad.buf);
}

Status OptimizerRunner::issue_grads(uint32_t ci, GradIn& g, ChunkSink& sink) {
  if (g.issued || sink.grads(ci) != nullptr) return Status::ok();
  STRATA_ASSIGN_OR_RETURN(g.io, sink.read_grads(ci, g.buf));
  g.issued = true;
  return Status::ok();
}

StatusOr<const void*> OptimizerRunner::chunk_grads(uint32_t ci, GradIn& g, ChunkSink& sink) {
  if (const void* p = sink.grads(ci)) return p;
  STRATA_RETURN_IF_ERROR(issue_grads(ci, g, sink));
  g.adopted = false;  // used now (the buffer is reused only by the next read into it)
  if (!g.io.valid()) return static_cast<const void*>(g.buf.data());  // adopted
  const Clock::time_point t0 = Clock::now();
  Status s = g.io.wait();
  g.io = offload::IoHandle();
  ctx_.stats->step_nvme_s += seconds_since(t0);
  if (seconds_since(t0) > 1e-5) span(TraceLane::kEngine, "step waits for grads c" + std::to_string(ci), t0);
  STRATA_RETURN_IF_ERROR(s);
  return static_cast<const void*>(g.buf.data());
}

// --- the update ---

Status OptimizerRunner::update_device(uint32_t ci, const optim::StepCoeffs& c, ChunkSink& sink) {
  float* home[optim::kMaxArrays] = {};
  STRATA_ASSIGN_OR_RETURN(void* out, sink.bit16_out(ci));
  return ctx_.ops->update(*ctx_.compute, *opt_, c, tensor_of(ci, home_arrays(ci, home), sink.grads(ci), out));
}

// The host kernel over one chunk whose arrays are in host memory (`state`, master first); false
// when a master came out inf / NaN.
bool OptimizerRunner::run_kernel(uint32_t ci, float* const* state, const void* grads, void* out,
                                 const optim::StepCoeffs& c, KernelIo* io) {
  const bool take =
      io != nullptr && io->sums != nullptr && chunks_[ci].tier == Tier::kNvme && chunks_[ci].a[0]->checksummed();
  const Checks* checks = io != nullptr ? io->checks : nullptr;
  // Segmented checks run inside the summed update, each segment hashed as the kernel needs it.
  const bool inside = take && checks != nullptr &&
                      std::none_of(checks->begin(), checks->end(), [](const auto& k) { return k.active && k.whole; });
  // There an output where the params rest waits in checked_out_ until the checks passed.
  const bool hold = inside && io->out_in_place;
  const optim::Tensor t = tensor_of(ci, state, grads, hold ? checked_out_.data() : out);
  const Clock::time_point ta = Clock::now();
  bool finite = true;
  if (io != nullptr && io->sums != nullptr) io->sums->fill(std::nullopt);
  kernels::arena_execute(*ctx_.arena, [&] {
    if (checks != nullptr && !inside) {
      io->verified = verify_reads(ci, state, *checks);
      if (!io->verified.is_ok()) return;
    }
    finite = take ? update_summed(t, c, *io->sums, inside ? checks : nullptr, &io->verified)
                  : opt_->update_host(*ctx_.k, c, {&t, 1});
  });
  if (hold && io->verified.is_ok()) std::memcpy(out, checked_out_.data(), t.count * dtype_size(ctx_.bit16));
  ctx_.stats->step_update_s += seconds_since(ta);
  span(TraceLane::kUpdate, "update c" + std::to_string(ci), ta);
  return finite;
}

// The update of one chunk whose arrays are in host memory, then the new bit16 values handed to the sink.
Status OptimizerRunner::update_host(uint32_t ci, float* const* state, const void* grads, const optim::StepCoeffs& c,
                                    ChunkSink& sink, KernelIo* io) {
  STRATA_ASSIGN_OR_RETURN(void* out, sink.bit16_out(ci));
  if (io != nullptr) io->out_in_place = sink.bit16_in_place(ci);
  if (io != nullptr && io->out_in_place && io->checks != nullptr && checked_out_.capacity() == 0) {
    // Only params in host memory with NVMe state checked in the update need it: taken then.
    size_t most = 0;
    for (const Chunk& ch : chunks_)
      if (ch.tier == Tier::kNvme) most = std::max(most, ch.shard);
    STRATA_ASSIGN_OR_RETURN(checked_out_,
                            offload::AlignedBuffer::create(most * dtype_size(ctx_.bit16), offload::PinMode::kNone));
  }
  const bool finite = run_kernel(ci, state, grads, out, c, io);
  if (io != nullptr) STRATA_RETURN_IF_ERROR(io->verified);  // nothing updated, nothing written
  if (!finite && (bad_master_ < 0 || static_cast<int>(ci) < bad_master_)) bad_master_ = static_cast<int>(ci);
  return sink.bit16_written(ci);
}

Status OptimizerRunner::update(const optim::StepCoeffs& c, ChunkSink& sink) {
  std::vector<char> settled_on_device(chunks_.size(), 0);  // device chunks speculated: settle updates them
  for (size_t ci = 0; ci < chunks_.size(); ++ci) settled_on_device[ci] = dspec_[ci] >= 0;
  STRATA_RETURN_IF_ERROR(settle_speculated(c, sink));
  std::vector<uint32_t> all;   // the chunks not updated during backward, in update order
  std::vector<uint32_t> nvme;  //   of which NVMe-resident and not read ahead into a slot
  for (uint32_t ci : order()) {
    if (spec_[ci] >= 0 && slots_[static_cast<size_t>(spec_[ci])].state == Slot::State::kSpeculated) continue;
    if (settled_on_device[ci]) continue;
    all.push_back(ci);
    if (chunks_[ci].tier == Tier::kNvme && spec_[ci] < 0) nvme.push_back(ci);
  }
  const size_t depth = ctx_.overlap ? sets_.size() : 1;  // chunks read ahead, this one included
  size_t next_read = 0, done = 0;
  // Reads started before the norm was known count as issued.
  while (next_read < nvme.size() && set_of(nvme[next_read]) >= 0) ++next_read;
  // Gradients on NVMe: read beside the state already read ahead (now that they are written).
  for (uint32_t ci : all) {
    if (chunks_[ci].tier != Tier::kNvme) continue;
    if (spec_[ci] >= 0) STRATA_RETURN_IF_ERROR(issue_grads(ci, slots_[static_cast<size_t>(spec_[ci])].grad, sink));
    if (const int s = set_of(ci); s >= 0)
      STRATA_RETURN_IF_ERROR(issue_grads(ci, sets_[static_cast<size_t>(s)].grad, sink));
  }

  for (uint32_t ci : all) {
    Chunk& ch = chunks_[ci];
    if (ch.tier == Tier::kDevice) {
      STRATA_RETURN_IF_ERROR(update_device(ci, c, sink));
      continue;
    }
    if (spec_[ci] >= 0) {
      STRATA_RETURN_IF_ERROR(update_staged(ci, c, sink));
      continue;
    }
    if (ch.tier == Tier::kHost) {
      float* state[optim::kMaxArrays] = {};
      for (int a = 0; a < num_arrays(); ++a) state[a] = static_cast<float*>(ch.a[a]->resident());
      STRATA_RETURN_IF_ERROR(update_host(ci, state, sink.grads(ci), c, sink));
      continue;
    }
    // Keep `depth` chunks read ahead, waiting for a write-back only for the chunk needed now.
    while (next_read < nvme.size() && next_read < done + depth) {
      STRATA_ASSIGN_OR_RETURN(int s, free_set(next_read == done));
      if (s < 0) break;
      STRATA_RETURN_IF_ERROR(read_set(s, nvme[next_read], true));
      STRATA_RETURN_IF_ERROR(issue_grads(nvme[next_read], sets_[static_cast<size_t>(s)].grad, sink));
      ++next_read;
    }
    const int s = set_of(ci);
    if (s < 0) return internal_error("optimizer pipeline: chunk " + std::to_string(ci) + " was not read");
    Set& set = sets_[static_cast<size_t>(s)];
    const Clock::time_point tr = Clock::now();
    STRATA_RETURN_IF_ERROR(wait_set(s));
    if (seconds_since(tr) > 1e-5) span(TraceLane::kEngine, "step waits for read c" + std::to_string(ci), tr);
    float* state[optim::kMaxArrays] = {};
    STRATA_ASSIGN_OR_RETURN(const void* grads, chunk_grads(ci, set.grad, sink));
    KernelIo kio{&set.checks, &set.sums, Status::ok()};
    STRATA_RETURN_IF_ERROR(update_host(ci, slot_arrays(set, state), grads, c, sink, &kio));
    STRATA_RETURN_IF_ERROR(write_set(s));
    ++done;
  }
  STRATA_RETURN_IF_ERROR(release_slots());
  // With overlap the last write-backs land during the next forward (write-behind); whoever reads
  // the state next (the next step's reads, read_master, save) waits for them.
  return ctx_.overlap ? Status::ok() : quiesce();
}

// Host updates flagged their chunks as they went; device-resident masters get a sum of squares
// each (in stream order, so they share the scratch).
StatusOr<int> OptimizerRunner::first_nonfinite_master() {
  join_background();
  int bad = std::exchange(bad_master_, -1);
  std::vector<double> sums(chunks_.size(), 0.0);
  for (size_t ci = 0; ci < chunks_.size(); ++ci)
    if (chunks_[ci].tier == Tier::kDevice)
      STRATA_RETURN_IF_ERROR(ctx_.ops->sumsq(
          *ctx_.compute, kernels::TensorView{chunks_[ci].a[0]->resident(), DType::kF32, chunks_[ci].shard},
          ctx_.scratch, &sums[ci]));
  STRATA_RETURN_IF_ERROR(ctx_.compute->synchronize());
  for (size_t ci = 0; ci < chunks_.size(); ++ci)
    if (!std::isfinite(sums[ci]) && (bad < 0 || static_cast<int>(ci) < bad)) bad = static_cast<int>(ci);
  return bad;
}

}  // namespace strata::engine
