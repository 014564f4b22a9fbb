// Engine: the public calls — each forwards to its part of the engine, marking the host program's
// time between calls on the timeline — and the accessors.
#include <cmath>
#include <cstring>
#include <functional>

#include "src/engine/engine_impl.h"

namespace strata::engine {

std::string Engine::plan_table() const { return impl_->prepared ? impl_->plan.table() : std::string(); }
const Plan* Engine::plan() const { return impl_->prepared ? &impl_->plan : nullptr; }

// The public calls mark the host program's time between them on the timeline.
StatusOr<void*> Engine::fetch(const std::string& name, void* native_stream) {
  impl_->telemetry.call_begin("forward / backward");
  if (!impl_->prepared) STRATA_RETURN_IF_ERROR(prepare());
  auto r = impl_->fetch(name, native_stream);
  impl_->telemetry.call_end();
  return r;
}

Status Engine::begin_eval() {
  Impl& m = *impl_;
  if (!m.prepared) STRATA_RETURN_IF_ERROR(prepare());
  if (m.in_eval) return failed_precondition("begin_eval: an evaluation pass is already open (end_eval first)");
  for (size_t i = 0; i < m.params.size(); ++i)
    if (m.cache->fetches(static_cast<uint32_t>(i)) > 0)
      return failed_precondition("begin_eval while '" + m.layout->params()[i].name +
                                 "' is fetched: release every param first");
  m.in_eval = true;
  m.cache->set_eval(true);
  return Status::ok();
}

Status Engine::end_eval() {
  Impl& m = *impl_;
  if (!m.in_eval) return failed_precondition("end_eval without begin_eval");
  for (size_t i = 0; i < m.params.size(); ++i)
    if (m.cache->fetches(static_cast<uint32_t>(i)) > 0)
      return failed_precondition("end_eval while '" + m.layout->params()[i].name +
                                 "' is fetched: release every param first");
  m.cache->set_eval(false);
  m.in_eval = false;
  return Status::ok();
}

Status Engine::release(const std::string& name) {
  impl_->telemetry.call_begin("forward / backward");
  Status s = impl_->release(name);
  impl_->telemetry.call_end();
  return s;
}

Status Engine::grad(const std::string& name, const void* g, DType dtype, size_t numel, void* native_stream) {
  impl_->telemetry.call_begin("backward");
  Status s = impl_->grad(name, g, dtype, numel, native_stream);
  impl_->telemetry.call_end();
  return s;
}

StatusOr<StepResult> Engine::step(double lr) {
  impl_->telemetry.call_begin("forward / backward");
  if (!impl_->prepared) STRATA_RETURN_IF_ERROR(prepare());
  auto r = impl_->step(lr);
  if (r.is_ok()) STRATA_RETURN_IF_ERROR(impl_->after_step(r.value()));
  impl_->telemetry.call_end();
  return r;
}

Status Engine::set_lr(double lr) {
  if (!(lr < 0) && !std::isfinite(lr)) return invalid_argument("set_lr: the learning rate is not finite");
  impl_->next_lr = lr;
  return Status::ok();
}

Status Engine::synchronize() {
  if (impl_->gradients) STRATA_RETURN_IF_ERROR(impl_->gradients->drain_all());
  STRATA_RETURN_IF_ERROR(impl_->quiesce_io());
  return impl_->synchronize_streams();
}

Status Engine::read_master(const std::string& name, float* dst, size_t numel) {
  Impl& m = *impl_;
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, m.param_index(name, "read_master"));
  const ParamSlot& slot = m.layout->params()[pi];
  if (dst == nullptr) return invalid_argument("read_master of '" + name + "': dst is NULL");
  if (numel != slot.numel)
    return invalid_argument("read_master of '" + name + "': room for " + std::to_string(numel) +
                            " elements, the param has " + std::to_string(slot.numel));
  STRATA_RETURN_IF_ERROR(m.restore_speculated());  // the masters before the step
  STRATA_RETURN_IF_ERROR(synchronize());
  return m.read_master_into(slot, dst);
}

// Needs the engine idle (synchronize). With shards across ranks it is collective: every rank
// calls it for the same param, and the chunk's master is gathered.
Status Engine::Impl::read_master_into(const ParamSlot& slot, float* dst) {
  ChunkState& c = chunks[slot.chunk];
  if (sharded()) {
    std::vector<float> mine(c.shard), all(c.numel);
    const ParamSlot own{slot.name, slot.shape, c.shard, slot.chunk, c.shard_begin};
    STRATA_RETURN_IF_ERROR(read_shard_master(own, mine.data()));
    STRATA_ASSIGN_OR_RETURN(auto w, opts.comm->all_gather(mine.data(), all.data(), c.shard, comm::Elem::kF32));
    STRATA_RETURN_IF_ERROR(w->wait());
    std::memcpy(dst, all.data() + slot.offset, slot.numel * 4);
    return Status::ok();
  }
  return read_shard_master(slot, dst);
}

// The master values of `slot` (which lies inside this rank's shard of its chunk).
Status Engine::Impl::read_shard_master(const ParamSlot& slot, float* dst) {
  const ChunkState& c = chunks[slot.chunk];
  return runner->read_master(slot.chunk, slot.offset - c.shard_begin, dst, slot.numel);
}

// Across ranks, save and export write from rank 0: with DDP only rank 0 runs them (every rank
// holds the same state); with ZeRO shards every rank runs them, gathering its shards. Either way
// every rank learns how that went.
static Status on_rank0(Engine::Impl& m, const char* what, const std::string& dir, const std::function<Status()>& run) {
  if (m.world() == 1) return run();
  Status s = m.rank() == 0 || m.sharded() ? run() : Status::ok();
  int32_t code = static_cast<int32_t>(s.code());
  STRATA_RETURN_IF_ERROR(m.opts.comm->broadcast_sync(&code, 1, comm::Elem::kI32, 0));
  if (m.rank() == 0 || code == 0) return s;
  return Status(static_cast<StatusCode>(code),
                std::string(what) + " of " + dir + " failed on rank 0 (its log says why)");
}

Status Engine::save(const std::string& dir, const std::string& tag) {
  if (!impl_->prepared) return failed_precondition("save before prepare: nothing to save yet");
  return on_rank0(*impl_, "save", dir, [&] { return impl_->save(dir, tag); });
}

Status Engine::load(const std::string& dir, const std::string& tag) {
  if (!impl_->prepared) STRATA_RETURN_IF_ERROR(prepare());
  return impl_->load(dir, tag);
}

Status Engine::export_weights(const std::string& dir, DType dtype) {
  ckpt::ExportOptions o;
  o.dtype = dtype;
  return export_weights(dir, o);
}

Status Engine::export_weights(const std::string& dir, const ckpt::ExportOptions& options) {
  if (!impl_->prepared) return failed_precondition("export before prepare: nothing to export yet");
  return on_rank0(*impl_, "export", dir, [&] { return impl_->export_weights(dir, options); });
}

StatusOr<void*> Engine::map_param(const std::string& name) {
  Impl& m = *impl_;
  if (!m.prepared) STRATA_RETURN_IF_ERROR(prepare());
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, m.param_index(name, "map"));
  const ParamSlot& slot = m.layout->params()[pi];
  const ChunkState& c = m.chunks[slot.chunk];
  if (c.at.params16 != Tier::kDevice || m.gathers())
    return failed_precondition(
        "map of '" + name + "': its bit16 values do not rest on the device (" +
        (m.gathers() ? std::string("ZeRO stage 3 across ranks keeps a shard") : std::string("offload_param")) +
        "); fetch it before each use instead");
  return static_cast<void*>(static_cast<uint8_t*>(m.cache->resident(slot.chunk)) + slot.offset * 2);
}

double Engine::loss_scale() const { return impl_->scaler.scale(); }
int64_t Engine::optimizer_step() const { return impl_->opt_step; }
int64_t Engine::micro_steps() const { return impl_->micro; }
DType Engine::param_dtype() const { return impl_->dtype; }
const EngineConfig& Engine::config() const { return impl_->cfg; }
std::string Engine::device_name() const { return impl_->dev->name(); }

EngineStats Engine::stats() const {
  EngineStats s = impl_->st;
  s.device_peak_bytes = impl_->dev->peak_bytes();
  s.loss_scale = impl_->scaler.scale();
  return s;
}

}  // namespace strata::engine
