// Engine: fetch and release of bit16 params on the device, and the checks of a gradient handed
// over before the GradientPath takes it.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/casts.h"
#include "kernels/cpu/parallel.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {

Status Engine::Impl::wait_timed(offload::Event& e, double* counter) {
  if (e.query()) return e.synchronize();
  const Clock::time_point t0 = Clock::now();
  Status s = e.synchronize();
  *counter += seconds_since(t0);
  return s;
}

StatusOr<Staging*> Engine::Impl::take_staging(double* stall) {
  Staging& s = param_staging[next_staging];
  next_staging = (next_staging + 1) % param_staging.size();
  if (s.loading_work >= 0) STRATA_RETURN_IF_ERROR(finish_load(work[static_cast<size_t>(s.loading_work)]));
  if (s.staged_chunk >= 0) drop_staging(s);
  if (s.pending) {
    STRATA_RETURN_IF_ERROR(wait_timed(*s.copied, stall));
    s.pending = false;
  }
  if (s.io.valid()) {
    const Clock::time_point t0 = Clock::now();
    Status r = s.io.wait();
    s.io = offload::IoHandle();
    s.put_chunk = -1;
    *stall += seconds_since(t0);
    STRATA_RETURN_IF_ERROR(r);
  }
  return &s;
}

StatusOr<void*> Engine::Impl::fetch(const std::string& name, void* native_stream) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "fetch"));
  const ParamSlot& slot = layout->params()[pi];
  ChunkState& c = chunks[slot.chunk];
  uint8_t* base = nullptr;
  offload::Event* ready = nullptr;
  if (c.at.params16 == Tier::kDevice && !gathers()) {
    base = static_cast<uint8_t*>(c.p16_dev);  // refreshed by the last step, which finished
  } else {
    if (native_stream != nullptr) last_native = native_stream;
    STRATA_RETURN_IF_ERROR(ensure_loaded(slot.chunk, name));
    WorkBuffer& w = work[static_cast<size_t>(c.work)];
    w.last_use = ++clock;
    base = static_cast<uint8_t*>(w.dev);
    ready = w.ready.get();
  }
  if (ready != nullptr) {
    if (native_stream != nullptr) {
      STRATA_RETURN_IF_ERROR(dev->wait_native(native_stream, *ready));
    } else {
      const Clock::time_point t0 = Clock::now();
      STRATA_RETURN_IF_ERROR(wait_timed(*ready, &st.stall_fetch_s));
      if (tracer && seconds_since(t0) > 1e-5) trace_span(TraceLane::kEngine, "fetch stall " + name, t0, Clock::now());
    }
  } else if (native_stream != nullptr && !dev->is_cuda()) {
    return invalid_argument("fetch of '" + name + "': the host-emulated device has no native streams: pass a NULL stream");
  }
  if (c.work >= 0) ++work[static_cast<size_t>(c.work)].pins;
  ++params[pi].fetches;
  if (!in_eval) params[pi].fetched_in_micro = true;  // an evaluation fetch does not allow a gradient
  STRATA_RETURN_IF_ERROR(prefetch());
  if (runner->has_nvme() && boundary_micro()) STRATA_RETURN_IF_ERROR(runner->start_reads());
  return static_cast<void*>(base + slot.offset * 2);
}

Status Engine::Impl::release(const std::string& name) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "release"));
  if (params[pi].fetches == 0)
    return failed_precondition("release of '" + name + "': not fetched (every release must match one fetch; double release?)");
  --params[pi].fetches;
  const ChunkState& c = chunks[layout->params()[pi].chunk];
  if (c.work >= 0 && --work[static_cast<size_t>(c.work)].pins == 0) return prefetch();
  return Status::ok();
}

Status Engine::Impl::grad(const std::string& name, const void* g, DType gdtype, size_t numel, void* native_stream) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "grad"));
  const ParamSlot& slot = layout->params()[pi];
  if (g == nullptr) return invalid_argument("grad of '" + name + "': the gradient pointer is NULL");
  if (gdtype != dtype)
    return invalid_argument("grad of '" + name + "': dtype " + std::string(dtype_name(gdtype)) + ", the engine trains in " +
                            std::string(dtype_name(dtype)) + " and takes gradients in it");
  if (numel != slot.numel)
    return invalid_argument("grad of '" + name + "': " + std::to_string(numel) + " elements given, the param has " +
                            std::to_string(slot.numel));
  ParamState& ps = params[pi];
  if (in_eval) return failed_precondition("grad of '" + name + "' during an evaluation pass (begin_eval): end_eval first");
  if (!ps.fetched_in_micro)
    return failed_precondition("grad of '" + name + "' before fetch: a gradient is taken only for a param fetched in the same micro-batch");
  if (ps.grad_in_micro)
    return failed_precondition("grad of '" + name + "': given twice in one micro-batch (accumulation across micro-batches is strata's; call step between them)");
  if (native_stream != nullptr && !dev->is_cuda())
    return invalid_argument("grad of '" + name + "': the host-emulated device has no native streams: pass a NULL stream");

  STRATA_RETURN_IF_ERROR(gradients->add(pi, g, native_stream, boundary_micro()));
  ps.grad_in_micro = true;
  if (runner->has_nvme() && boundary_micro()) STRATA_RETURN_IF_ERROR(runner->start_reads());
  return Status::ok();
}

}  // namespace strata::engine
