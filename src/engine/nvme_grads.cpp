// GradientPath: fp32 gradients that rest on NVMe (strata.gradient_tier). Without accumulation a
// chunk's gradient is complete once its buckets of the micro-batch have landed (summed over the
// ranks where it has ranks): it is assembled in one of grad_assembly_buffers() pinned buffers,
// then its norm's partial sums and its first inf / NaN are taken and it is written to the store;
// the optimizer reads it back beside the chunk's state for the step. Host memory holds the
// buffers only, whatever the model's size.
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/parallel.h"
#include "src/engine/gradient_path.h"

namespace strata::engine {

std::function<void()> GradientPath::io_span(TraceLane lane, const char* what, uint32_t ci) const {
  if (!ctx_.tracer) return {};
  return [t = ctx_.tracer, lane, name = what + std::to_string(ci), t0 = Clock::now()] {
    t->span(lane, name, t0, Clock::now());
  };
}

// A buffer whose write is in flight holds no chunk being assembled: once the write lands it is free.
Status GradientPath::reap_write(Assembly& a) {
  if (!a.write.valid()) return Status::ok();
  const Clock::time_point t0 = Clock::now();
  Status s = a.write.wait();
  ctx_.stats->stall_grad_s += seconds_since(t0);
  a.write = offload::IoHandle();
  const int ci = std::exchange(a.chunk, -1);
  if (!s.is_ok()) return std::move(s).annotate("writing the fp32 gradient of chunk " + std::to_string(ci) + " to NVMe");
  return Status::ok();
}

// A write of chunk ci's gradient still in flight (from this cycle, or from one whose step was
// skipped and never read it) lands before the key is written or read again.
Status GradientPath::land_writes_of(uint32_t ci) {
  for (Assembly& a : assembly_)
    if (a.chunk == static_cast<int>(ci) && a.write.valid()) STRATA_RETURN_IF_ERROR(reap_write(a));
  return Status::ok();
}

// A free buffer: one whose write finished; else the oldest write waited for; else (every buffer
// holds a chunk still being assembled: gradients handed over in an order that interleaves many
// chunks) the first buffer's partial sum written out (read back when its chunk goes on).
StatusOr<int> GradientPath::take_assembly() {
  for (size_t i = 0; i < assembly_.size(); ++i) {
    Assembly& a = assembly_[i];
    if (a.chunk < 0 || (a.write.valid() && a.write.done())) {
      STRATA_RETURN_IF_ERROR(reap_write(a));
      if (a.chunk < 0) return static_cast<int>(i);
    }
  }
  for (size_t i = 0; i < assembly_.size(); ++i) {
    Assembly& a = assembly_[i];
    if (!a.write.valid()) continue;
    STRATA_RETURN_IF_ERROR(reap_write(a));
    return static_cast<int>(i);
  }
  const int i = 0;
  Assembly& a = assembly_[0];
  ChunkGrads& c = chunks_[static_cast<size_t>(a.chunk)];
  STRATA_RETURN_IF_ERROR(land_writes_of(static_cast<uint32_t>(a.chunk)));
  const size_t bytes = c.geom.shard * 4;
  ctx_.stats->bytes_nvme_write += bytes;
  STRATA_RETURN_IF_ERROR(ctx_.store->put(grad_key(static_cast<uint32_t>(a.chunk)), a.buf, bytes).wait());
  c.spilled = true;
  c.assembly = -1;
  a.chunk = -1;
  return i;
}

StatusOr<float*> GradientPath::host_grads(uint32_t ci) {
  ChunkGrads& c = chunks_[ci];
  if (c.geom.tier != Tier::kNvme) return static_cast<float*>(c.host.data());
  if (c.assembly < 0) {
    if (c.written)
      return internal_error("chunk " + std::to_string(ci) + ": a gradient arrived after its sum was written");
    STRATA_ASSIGN_OR_RETURN(const int i, take_assembly());
    Assembly& a = assembly_[static_cast<size_t>(i)];
    const size_t bytes = c.geom.shard * 4;
    if (c.spilled) {  // the partial sum written out before
      ctx_.stats->bytes_nvme_read += bytes;
      STRATA_RETURN_IF_ERROR(ctx_.store->get(grad_key(ci), a.buf, bytes).wait());
      c.spilled = false;
    } else {
      std::memset(a.buf.data(), 0, bytes);
    }
    a.chunk = static_cast<int>(ci);
    c.assembly = i;
  }
  return static_cast<float*>(assembly_[static_cast<size_t>(c.assembly)].buf.data());
}

Status GradientPath::write_chunk(uint32_t ci) {
  STRATA_ASSIGN_OR_RETURN(float* g, host_grads(ci));
  ChunkGrads& c = chunks_[ci];
  const kernels::TensorView view{g, DType::kF32, c.geom.shard};
  kernels::arena_execute(*ctx_.arena, [&] { c.partials = kernels::sumsq_partials(*ctx_.k, {&view, 1}); });
  double sum = 0;
  for (double p : c.partials) sum += p;
  c.bad_param = -1;
  if (!std::isfinite(sum)) std::tie(c.bad_param, c.bad_elem) = first_nonfinite_in(ci, g);  // for first_nonfinite
  Assembly& a = assembly_[static_cast<size_t>(c.assembly)];
  c.written = true;
  if (ctx_.adopt && ctx_.adopt(ci, a.buf, c.geom.shard)) {  // it joined its state in a step slot (a.buf swapped)
    c.adopted = true;
    a.chunk = -1;
    c.assembly = -1;
    return Status::ok();
  }
  const size_t bytes = c.geom.shard * 4;
  STRATA_RETURN_IF_ERROR(land_writes_of(ci));
  ctx_.stats->bytes_nvme_write += bytes;
  a.write = ctx_.store->put(grad_key(ci), a.buf, bytes, io_span(TraceLane::kNvmeWrite, "write grads c", ci),
                            offload::IoPriority::kBackground);
  c.assembly = -1;  // the buffer is free once the write is reaped
  return Status::ok();
}

// Chunks some of whose params got no gradient this cycle (or none at all) are complete as they are.
Status GradientPath::finish_nvme() {
  for (uint32_t ci = 0; ci < chunks_.size(); ++ci)
    if (chunks_[ci].geom.tier == Tier::kNvme && !chunks_[ci].written) STRATA_RETURN_IF_ERROR(write_chunk(ci));
  return Status::ok();
}

StatusOr<offload::IoHandle> GradientPath::read(uint32_t ci, offload::AlignedBuffer& buf) {
  ChunkGrads& c = chunks_[ci];
  if (c.geom.tier != Tier::kNvme || !c.written || c.adopted)
    return internal_error("chunk " + std::to_string(ci) + ": no fp32 gradient on NVMe to read");
  STRATA_RETURN_IF_ERROR(land_writes_of(ci));
  const size_t bytes = c.geom.shard * 4;
  ctx_.stats->bytes_nvme_read += bytes;
  // (demand: the step waits for it)
  return ctx_.store->get(grad_key(ci), buf, bytes, io_span(TraceLane::kNvmeRead, "read grads c", ci));
}

Status GradientPath::give_back(uint32_t ci, const offload::AlignedBuffer& buf) {
  ChunkGrads& c = chunks_[ci];
  if (!c.adopted) return internal_error("chunk " + std::to_string(ci) + ": its gradient was not adopted");
  STRATA_RETURN_IF_ERROR(land_writes_of(ci));
  const size_t bytes = c.geom.shard * 4;
  ctx_.stats->bytes_nvme_write += bytes;
  STRATA_RETURN_IF_ERROR(ctx_.store->put(grad_key(ci), buf, bytes)
                             .wait()
                             .annotate("writing the fp32 gradient of chunk " + std::to_string(ci) + " to NVMe"));
  c.adopted = false;
  return Status::ok();
}

Status GradientPath::quiesce() {
  Status first;
  for (Assembly& a : assembly_)
    if (Status s = reap_write(a); first.is_ok() && !s.is_ok()) first = std::move(s);
  return first;
}

}  // namespace strata::engine
