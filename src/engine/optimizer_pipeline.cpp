// Engine: the update half of the optimizer step. Every chunk gets the optimizer's update where
// its state lives: device kernels, the host kernels in place, or — for state on NVMe — a pipeline
// over offload_optimizer.buffer_count buffer sets: reads of the next chunks run while this one is
// updated
// this one and the previous ones are written back. With overlap, reads start during the
// forward / backward of the micro-batch that ends the accumulation cycle (the state does not
// change before the step), and the last write-backs finish during the next one. Chunks go in descending order, the order in
// which backward completes them. Results do not depend on the order or on the overlap: each
// chunk's update reads only its own state and gradient.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {

std::vector<uint32_t> Engine::Impl::opt_order() const {
  std::vector<uint32_t> order(chunks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(order.size() - 1 - i);
  return order;
}

Status Engine::Impl::wait_opt_set(int s) {
  OptSet& set = opt_sets[static_cast<size_t>(s)];
  if (set.state != OptSet::State::kReading && set.state != OptSet::State::kWriting) return Status::ok();
  const Clock::time_point t0 = Clock::now();
  Status first;
  for (offload::IoHandle& h : set.io) {
    if (!h.valid()) continue;
    Status r = h.wait();
    if (first.is_ok() && !r.is_ok()) first = std::move(r);
    h = offload::IoHandle();
  }
  st.step_nvme_s += seconds_since(t0);
  if (set.state == OptSet::State::kReading && first.is_ok()) {
    set.state = OptSet::State::kReady;
  } else {
    set.state = OptSet::State::kFree;
    set.chunk = -1;
  }
  return first;
}

StatusOr<int> Engine::Impl::free_opt_set(bool block) {
  int oldest = -1;
  for (size_t s = 0; s < opt_sets.size(); ++s) {
    OptSet& set = opt_sets[s];
    if (set.state == OptSet::State::kWriting &&
        std::all_of(std::begin(set.io), std::end(set.io), [](const offload::IoHandle& h) { return !h.valid() || h.done(); }))
      STRATA_RETURN_IF_ERROR(wait_opt_set(static_cast<int>(s)));
    if (set.state == OptSet::State::kFree) return static_cast<int>(s);
    if (set.state == OptSet::State::kWriting && (oldest < 0 || set.issued < opt_sets[static_cast<size_t>(oldest)].issued))
      oldest = static_cast<int>(s);
  }
  if (!block || oldest < 0) return -1;
  STRATA_RETURN_IF_ERROR(wait_opt_set(oldest));
  return oldest;
}

Status Engine::Impl::reap_opt_sets() {
  for (size_t s = 0; s < opt_sets.size(); ++s) {
    const OptSet& set = opt_sets[s];
    if (set.state == OptSet::State::kWriting &&
        std::all_of(std::begin(set.io), std::end(set.io), [](const offload::IoHandle& h) { return !h.valid() || h.done(); }))
      STRATA_RETURN_IF_ERROR(wait_opt_set(static_cast<int>(s)));
  }
  return Status::ok();
}

bool Engine::Impl::writing(uint32_t ci) const {
  for (const OptSet& set : opt_sets)
    if (set.state == OptSet::State::kWriting && set.chunk == static_cast<int>(ci)) return true;
  return false;
}

Status Engine::Impl::read_opt_set(int s, uint32_t ci) {
  // The chunk's write-back of the previous step must land before it is read again.
  for (size_t o = 0; o < opt_sets.size(); ++o)
    if (opt_sets[o].state == OptSet::State::kWriting && opt_sets[o].chunk == static_cast<int>(ci))
      STRATA_RETURN_IF_ERROR(wait_opt_set(static_cast<int>(o)));
  OptSet& set = opt_sets[static_cast<size_t>(s)];
  const size_t bytes = chunks[ci].shard * 4;
  set.chunk = static_cast<int>(ci);
  set.state = OptSet::State::kReading;
  set.issued = ++opt_issue;
  for (int a = 0; a < narrays(); ++a) {
    set.io[a] = opt_store->get(opt_key(ci, a), set.a[a], bytes, io_span(TraceLane::kNvmeRead, "read " + opt_key(ci, a)));
    st.bytes_nvme_read += bytes;
  }
  return Status::ok();
}

// Never blocks: reads only into free sets, in update order, and stops at a chunk whose
// write-back is still in flight.
Status Engine::Impl::start_opt_reads() {
  if (opt_store == nullptr || !cfg.overlap) return Status::ok();
  STRATA_RETURN_IF_ERROR(reap_opt_sets());
  for (uint32_t ci : opt_order()) {
    if (chunks[ci].at.optimizer != Tier::kNvme) continue;
    bool have = false;
    for (const OptSet& set : opt_sets) have |= set.chunk == static_cast<int>(ci) && set.state != OptSet::State::kWriting;
    if (have) continue;
    if (writing(ci)) break;
    STRATA_ASSIGN_OR_RETURN(int s, free_opt_set(false));
    if (s < 0) break;
    STRATA_RETURN_IF_ERROR(read_opt_set(s, ci));
  }
  return Status::ok();
}

Status Engine::Impl::quiesce_opt_sets() {
  Status first;
  for (size_t s = 0; s < opt_sets.size(); ++s) {
    Status r = wait_opt_set(static_cast<int>(s));
    if (first.is_ok() && !r.is_ok()) first = std::move(r);
    opt_sets[s].state = OptSet::State::kFree;
    opt_sets[s].chunk = -1;
  }
  for (Staging& sb : param_staging) {
    if (!sb.io.valid()) continue;
    Status r = sb.io.wait();
    sb.io = offload::IoHandle();
    sb.put_chunk = -1;
    if (r.is_ok()) continue;  // a finished read stays staged for its working buffer
    // A failed read must not be copied to the device: forget it, and its buffer's chunk.
    if (sb.loading_work >= 0) {
      WorkBuffer& w = work[static_cast<size_t>(sb.loading_work)];
      if (w.chunk >= 0) chunks[static_cast<size_t>(w.chunk)].work = -1;
      w.chunk = -1;
      w.loading = nullptr;
      w.prefetched = false;
    }
    sb.loading_work = sb.staged_chunk = -1;
    if (first.is_ok()) first = std::move(r);
  }
  return first;
}

// The update of one chunk whose fp32 arrays are in host memory (`state`, master first), then the
// updated bit16 values to where the params rest.
Status Engine::Impl::update_host_chunk(uint32_t ci, offload::AlignedBuffer* state, const optim::StepCoeffs& coeffs) {
  ChunkState& c = chunks[ci];
  const size_t rest_off = cfg.placement.stage == 3 ? 0 : c.shard_begin;  // the shard's place in the resting array
  Staging* sb = nullptr;
  void* out = nullptr;
  if (c.at.params16 == Tier::kHost) {
    out = c.p16_host.bytes() + rest_off * 2;
  } else {
    STRATA_ASSIGN_OR_RETURN(sb, take_staging(&st.step_nvme_s));
    out = sb->buf.data();
  }
  optim::Tensor t;
  for (int a = 0; a < narrays(); ++a) t.array[a] = static_cast<float*>(state[a].data());
  t.grads = c.grad_host.data();
  t.grad_dtype = DType::kF32;
  t.params_out = out;
  t.out_dtype = dtype;
  t.count = c.shard;
  const Clock::time_point ta = Clock::now();
  bool finite = true;
  kernels::arena_execute(arena, [&] { finite = optimizer->update_host(*k, coeffs, {&t, 1}); });
  st.step_update_s += seconds_since(ta);
  trace_span(TraceLane::kUpdate, "update c" + std::to_string(ci), ta, Clock::now());
  if (!finite && (bad_master_chunk < 0 || static_cast<int>(ci) < bad_master_chunk))
    bad_master_chunk = static_cast<int>(ci);  // the lowest, reported after the update (engine_step.cpp)
  if (c.at.params16 == Tier::kDevice) {
    STRATA_RETURN_IF_ERROR(h2d->copy(static_cast<uint8_t*>(c.p16_dev) + rest_off * 2, out, c.shard * 2,
                                     offload::CopyKind::kHostToDevice));
    STRATA_RETURN_IF_ERROR(h2d->record(*sb->copied));
    sb->pending = true;
    st.bytes_h2d += c.shard * 2;
  } else if (c.at.params16 == Tier::kNvme) {
    sb->io = param_store->put(key(ci, "p16"), sb->buf, c.rest_numel * 2, io_span(TraceLane::kNvmeWrite, "write " + key(ci, "p16")));
    sb->put_chunk = static_cast<int>(ci);
    st.bytes_nvme_write += c.rest_numel * 2;
    if (!cfg.overlap) {
      const Clock::time_point tn = Clock::now();
      Status r = sb->io.wait();
      sb->io = offload::IoHandle();
      st.step_nvme_s += seconds_since(tn);
      STRATA_RETURN_IF_ERROR(r);
    }
  }
  return Status::ok();
}

Status Engine::Impl::update_chunks(const optim::StepCoeffs& coeffs) {
  const std::vector<uint32_t> order = opt_order();
  std::vector<uint32_t> nvme;  // the NVMe-resident chunks, in update order
  for (uint32_t ci : order)
    if (chunks[ci].at.optimizer == Tier::kNvme) nvme.push_back(ci);
  const size_t depth = cfg.overlap ? opt_sets.size() : 1;  // chunks read ahead, this one included
  size_t next_read = 0, done = 0;
  auto set_of = [&](uint32_t ci) {
    for (size_t s = 0; s < opt_sets.size(); ++s)
      if (opt_sets[s].chunk == static_cast<int>(ci) && opt_sets[s].state != OptSet::State::kWriting) return static_cast<int>(s);
    return -1;
  };
  // Reads started before the norm was known count as issued.
  while (next_read < nvme.size() && set_of(nvme[next_read]) >= 0) ++next_read;

  for (uint32_t ci : order) {
    ChunkState& c = chunks[ci];
    if (c.at.optimizer == Tier::kDevice) {
      optim::Tensor t;
      for (int a = 0; a < narrays(); ++a) t.array[a] = static_cast<float*>(c.opt_dev[a]);
      t.grads = c.grad_dev;
      t.grad_dtype = DType::kF32;
      t.params_out = static_cast<uint8_t*>(c.p16_dev) + (cfg.placement.stage == 3 ? 0 : c.shard_begin) * 2;
      t.out_dtype = dtype;
      t.count = c.shard;
      STRATA_RETURN_IF_ERROR(ops->update(*compute, *optimizer, coeffs, t));
      continue;
    }
    if (c.at.optimizer == Tier::kHost) {
      STRATA_RETURN_IF_ERROR(update_host_chunk(ci, c.opt_host, coeffs));
      continue;
    }
    // Keep `depth` chunks read ahead, waiting for a write-back only for the chunk needed now.
    while (next_read < nvme.size() && next_read < done + depth) {
      STRATA_ASSIGN_OR_RETURN(int s, free_opt_set(next_read == done));
      if (s < 0) break;
      STRATA_RETURN_IF_ERROR(read_opt_set(s, nvme[next_read]));
      ++next_read;
    }
    const int s = set_of(ci);
    if (s < 0) return internal_error("optimizer pipeline: chunk " + std::to_string(ci) + " was not read");
    OptSet& set = opt_sets[static_cast<size_t>(s)];
    const Clock::time_point tr = Clock::now();
    STRATA_RETURN_IF_ERROR(wait_opt_set(s));
    if (seconds_since(tr) > 1e-5) trace_span(TraceLane::kEngine, "step waits for read c" + std::to_string(ci), tr, Clock::now());
    STRATA_RETURN_IF_ERROR(update_host_chunk(ci, set.a, coeffs));
    set.state = OptSet::State::kWriting;
    set.issued = ++opt_issue;
    for (int a = 0; a < narrays(); ++a) {
      set.io[a] = opt_store->put(opt_key(ci, a), set.a[a], c.shard * 4, io_span(TraceLane::kNvmeWrite, "write " + opt_key(ci, a)));
      st.bytes_nvme_write += c.shard * 4;
    }
    if (!cfg.overlap) STRATA_RETURN_IF_ERROR(wait_opt_set(s));
    ++done;
  }
  // With overlap the last write-backs land during the next forward (write-behind); whoever reads
  // the state next (the next step's reads, read_master, save) waits for them.
  return cfg.overlap ? Status::ok() : quiesce_opt_sets();
}

}  // namespace strata::engine
