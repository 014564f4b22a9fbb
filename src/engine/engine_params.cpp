// Engine: fetch and release of bit16 params on the device, and the checks of a gradient handed
// over before the GradientPath takes it.
#include <algorithm>
#include <cstring>

#include "src/engine/engine_impl.h"

namespace strata::engine {

StatusOr<void*> Engine::Impl::fetch(const std::string& name, void* native_stream) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "fetch"));
  const ParamSlot& slot = layout->params()[pi];
  STRATA_ASSIGN_OR_RETURN(const ParamCache::Fetched f, cache->fetch(slot.chunk, name, native_stream));
  // The last step's NVMe write-backs go on; in the cycle's last forward the state is read ahead
  // (it does not change before the step).
  if (!in_eval && runner->has_nvme())
    STRATA_RETURN_IF_ERROR(boundary_micro() ? runner->start_reads() : runner->background_io());
  if (f.ready != nullptr) {
    if (native_stream != nullptr) {
      STRATA_RETURN_IF_ERROR(dev->wait_native(native_stream, *f.ready));
    } else if (!f.ready->query()) {
      const Clock::time_point t0 = Clock::now();
      STRATA_RETURN_IF_ERROR(f.ready->synchronize());
      st.stall_fetch_s += seconds_since(t0);
      if (tracer() && seconds_since(t0) > 1e-5) trace_span(TraceLane::kEngine, "fetch stall " + name, t0, Clock::now());
    } else {
      STRATA_RETURN_IF_ERROR(f.ready->synchronize());
    }
  } else if (native_stream != nullptr && !dev->is_cuda()) {
    return invalid_argument("fetch of '" + name +
                            "': the host-emulated device has no native streams: pass a NULL stream");
  }
  cache->pin(pi);
  if (!in_eval) params[pi].fetched_in_micro = true;  // an evaluation fetch does not allow a gradient
  STRATA_RETURN_IF_ERROR(cache->prefetch());
  if (runner->has_nvme() && boundary_micro()) STRATA_RETURN_IF_ERROR(runner->start_reads());
  return static_cast<void*>(f.base + slot.offset * 2);
}

Status Engine::Impl::release(const std::string& name) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "release"));
  if (cache->fetches(pi) == 0)
    return failed_precondition("release of '" + name +
                               "': not fetched (every release must match one fetch; double release?)");
  return cache->unpin(pi);
}

Status Engine::Impl::grad(const std::string& name, const void* g, DType gdtype, size_t numel, void* native_stream) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "grad"));
  const ParamSlot& slot = layout->params()[pi];
  if (g == nullptr) return invalid_argument("grad of '" + name + "': the gradient pointer is NULL");
  if (gdtype != dtype)
    return invalid_argument("grad of '" + name + "': dtype " + std::string(dtype_name(gdtype)) +
                            ", the engine trains in " + std::string(dtype_name(dtype)) + " and takes gradients in it");
  if (numel != slot.numel)
    return invalid_argument("grad of '" + name + "': " + std::to_string(numel) + " elements given, the param has " +
                            std::to_string(slot.numel));
  ParamState& ps = params[pi];
  if (in_eval)
    return failed_precondition("grad of '" + name + "' during an evaluation pass (begin_eval): end_eval first");
  if (!ps.fetched_in_micro)
    return failed_precondition("grad of '" + name +
                               "' before fetch: a gradient is taken only for a param fetched in the same micro-batch");
  if (ps.grad_in_micro)
    return failed_precondition(
        "grad of '" + name +
        "': given twice in one micro-batch (accumulation across micro-batches is strata's; call step between them)");
  if (native_stream != nullptr && !dev->is_cuda())
    return invalid_argument("grad of '" + name +
                            "': the host-emulated device has no native streams: pass a NULL stream");

  STRATA_RETURN_IF_ERROR(gradients->add(pi, g, native_stream, boundary_micro()));
  ps.grad_in_micro = true;
  if (runner->has_nvme() && boundary_micro()) STRATA_RETURN_IF_ERROR(runner->start_reads());
  return speculate_ready();
}

// Every NVMe operation finished: the runner's, the gradients', then the param cache's staging reads and writes.
Status Engine::Impl::quiesce_io() {
  Status first = runner ? runner->quiesce() : Status::ok();
  if (gradients) {
    if (Status s = gradients->quiesce(); first.is_ok() && !s.is_ok()) first = std::move(s);
  }
  if (cache) {
    if (Status s = cache->quiesce(); first.is_ok() && !s.is_ok()) first = std::move(s);
  }
  return first;
}

}  // namespace strata::engine
