// Engine: the optimizer step. At the end of each accumulation cycle: gather the gradients
// (drain the buckets), compute the global norm and the overflow flag over every chunk, update the
// loss scale, then let the OptimizerRunner update every chunk where its state lives, the updated
// bit16 params going where they rest (Bit16Sink).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/parallel.h"

#include "kernels/cpu/grad_norm.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {

// The runner's view of a chunk: its fp32 gradient (GradientPath), and where the updated bit16
// values go (ParamCache).
class Engine::Impl::Bit16Sink final : public OptimizerRunner::ChunkSink {
 public:
  explicit Bit16Sink(Impl& m) : m_(m) {}
  const void* grads(uint32_t ci) override { return m_.gradients->grads(ci); }
  StatusOr<void*> bit16_out(uint32_t ci) override {
    return m_.cache->update_out(ci, m_.chunks[ci].at.optimizer == Tier::kDevice);
  }
  Status bit16_written(uint32_t ci) override { return m_.cache->update_written(ci); }
  bool bit16_in_place(uint32_t ci) override {
    return m_.cache->update_in_place(ci, m_.chunks[ci].at.optimizer == Tier::kDevice);
  }
  StatusOr<offload::IoHandle> read_grads(uint32_t ci, offload::AlignedBuffer& buf) override {
    return m_.gradients->read(ci, buf);
  }

 private:
  Impl& m_;
};

Status Engine::Impl::check_step_call() const {
  if (in_eval) return failed_precondition("step during an evaluation pass (begin_eval): end_eval first");
  for (size_t i = 0; i < params.size(); ++i)
    if (cache->fetches(static_cast<uint32_t>(i)) > 0)
      return failed_precondition("step while '" + layout->params()[i].name +
                                 "' is fetched: release every param before step");
  return Status::ok();
}

void Engine::Impl::end_micro() {
  ++micro;
  ++st.micro_steps;
  cache->end_pass();
  for (ParamState& p : params) p.fetched_in_micro = p.grad_in_micro = false;
  gradients->new_micro();
}

// Every gradient of the cycle in its fp32 shard, summed over the ranks where they are replicated.
// Optimizer state on NVMe is read ahead meanwhile (reads only: safe before the norm is known).
Status Engine::Impl::gather_grads() {
  Status s = runner->start_reads();
  if (s.is_ok()) s = gradients->reduce_all();
  if (!s.is_ok()) (void)quiesce_io();
  return s;
}

double Engine::Impl::grad_unscale() const {
  return 1.0 / (scaler.scale() * cfg.gradient_accumulation_steps * gradients->ranks_in_sum());
}

// Chunks whose gradients of the cycle became final since the last call (only in the cycle's last
// micro-batch): their update with the coefficients of the step that neither clips nor overflows.
Status Engine::Impl::speculate_ready() {
  if (!speculating() || speculation_paused || !runner->can_speculate()) return Status::ok();
  STRATA_RETURN_IF_ERROR(gradients->poll(!dev->is_cuda()));
  const std::vector<uint32_t> ready = gradients->take_final();
  if (ready.empty()) return Status::ok();
  const optim::Optimizer& opt = runner->optimizer();
  auto coeffs = opt.coeffs(opt_step + 1, next_lr < 0 ? opt.hyper().lr : next_lr, static_cast<float>(grad_unscale()));
  if (!coeffs.is_ok()) return Status::ok();  // step reports the bad lr
  for (uint32_t ci : ready) {
    if (chunks[ci].at.optimizer == Tier::kNvme) continue;  // read ahead, updated at the step
    Status s = runner->speculate(ci, coeffs.value(), gradients->grads(ci)).status();
    if (!s.is_ok()) {
      (void)restore_speculated();
      (void)quiesce_io();
      return std::move(s).annotate("the update during backward");
    }
  }
  return Status::ok();
}

OptimizerRunner::SpecCounts Engine::Impl::count_speculation(OptimizerRunner::SpecCounts n, bool undone) {
  if (undone) n.redone = n.speculated;
  st.chunks_speculated += n.speculated;
  st.chunks_redone += n.redone;
  st.chunks_read_ahead += n.read_ahead;
  return n;
}

Status Engine::Impl::restore_speculated() {
  if (!runner) return Status::ok();
  Status s = runner->restore_speculated();
  count_speculation(runner->take_counts(), true);
  return s;
}

// An overflow: the step is skipped and the loss scale updated. A skip that cannot help (bf16, a
// static scale, or a dynamic scale already at its minimum) counts towards max_consecutive_skips:
// the run stops instead of skipping forever.
StatusOr<StepResult> Engine::Impl::skip_step(StepResult r, Clock::time_point t0) {
  r.overflow = true;
  r.grad_norm = std::numeric_limits<double>::infinity();
  const double scale_before = scaler.scale();
  const bool hopeless = !scaler.dynamic() || scale_before <= cfg.loss_scale.min_loss_scale;
  consecutive_skips = hopeless ? consecutive_skips + 1 : 0;
  Status diverged;
  if (consecutive_skips >= cfg.max_consecutive_skips) {
    STRATA_ASSIGN_OR_RETURN(std::string where, gradients->first_nonfinite());
    char scale[32];
    std::snprintf(scale, sizeof(scale), "%g", scale_before);
    diverged = Status(StatusCode::kNonFinite,
                      "step " + std::to_string(opt_step + 1) + ": the gradients held inf / NaN in " +
                          std::to_string(consecutive_skips) + " steps in a row (strata.max_consecutive_skips = " +
                          std::to_string(cfg.max_consecutive_skips) + ") with the loss scale at " + scale +
                          (scaler.dynamic() ? " (its minimum, fp16.min_loss_scale)" : "") +
                          "; the first non-finite gradient is " + where +
                          ". Training diverged: lower the learning rate, set gradient_clipping, or resume from an "
                          "earlier checkpoint");
    consecutive_skips = 0;
  }
  const OptimizerRunner::SpecCounts n = count_speculation(runner->take_counts(), true);
  STRATA_RETURN_IF_ERROR(runner->restore_speculated(false));  // the gradients go with the step
  r.chunks_speculated = r.chunks_redone = n.speculated;
  speculation_paused = true;
  scaler.update(true);
  ++st.skipped_steps;
  st.last_grad_norm = r.grad_norm;
  STRATA_RETURN_IF_ERROR(gradients->zero());  // reads already done stay valid: the state did not change
  st.step_s += seconds_since(t0);
  if (!diverged.is_ok()) return diverged;
  r.loss_scale = scaler.scale();
  log("step " + std::to_string(opt_step + 1) + ": gradient overflow (inf / NaN), step skipped, loss scale now " +
      std::to_string(scaler.scale()));
  return r;
}

// The update of every chunk, then the gradients cleared and the new params where they are used.
Status Engine::Impl::apply_update(const optim::StepCoeffs& coeffs, StepResult& r) {
  // Loads of working buffers must not race the update of what they read; the copies are stale after it.
  Status s = cache->retire_loads();
  Bit16Sink sink(*this);
  if (s.is_ok()) s = runner->update(coeffs, sink);
  const OptimizerRunner::SpecCounts n = count_speculation(runner->take_counts(), false);
  r.chunks_speculated = n.speculated;
  r.chunks_redone = n.redone;
  if (!s.is_ok()) {
    (void)quiesce_io();
    return s;
  }
  STRATA_RETURN_IF_ERROR(check_masters());
  STRATA_RETURN_IF_ERROR(gradients->zero());
  STRATA_RETURN_IF_ERROR(h2d->synchronize());
  STRATA_RETURN_IF_ERROR(cache->publish_shards());
  cache->step_done();
  return Status::ok();
}

StatusOr<StepResult> Engine::Impl::step(double lr_arg) {
  STRATA_RETURN_IF_ERROR(dev->make_current());
  STRATA_RETURN_IF_ERROR(check_step_call());
  const optim::Optimizer& opt = runner->optimizer();
  const double lr = lr_arg < 0 ? opt.hyper().lr : lr_arg;
  if (Status v = opt.coeffs(opt_step + 1, lr, 1.0f).status(); !v.is_ok())
    return invalid_argument("step: " + v.message());
  end_micro();
  StepResult r;
  r.loss_scale = scaler.scale();
  r.optimizer_step = opt_step;
  if (micro % cfg.gradient_accumulation_steps != 0) {
    STRATA_RETURN_IF_ERROR(gradients->flush_open());
    return r;
  }
  r.boundary = true;
  next_lr = lr_arg;  // the next cycle's, until set_lr says otherwise
  const Clock::time_point t0 = Clock::now();
  STRATA_RETURN_IF_ERROR(gather_grads());
  STRATA_ASSIGN_OR_RETURN(const GradientPath::Norm norm, gradients->norm());
  if (!norm.finite) return skip_step(r, t0);
  // Gradients are sums over the cycle's micro-batches (and the ranks) of scaled gradients:
  // average and unscale.
  const double inv = grad_unscale();
  r.grad_norm = std::sqrt(norm.sumsq) * inv;
  r.clip_coef = kernels::clip_coefficient(r.grad_norm, cfg.gradient_clipping);
  auto coeffs = opt.coeffs(opt_step + 1, lr, static_cast<float>(inv * r.clip_coef));
  if (!coeffs.is_ok()) return internal_error("step: " + coeffs.status().message());
  ++opt_step;
  STRATA_RETURN_IF_ERROR(apply_update(coeffs.value(), r));
  consecutive_skips = 0;
  // (redone without clipping: another lr than announced)
  speculation_paused = r.clip_coef < 1.0 || r.chunks_redone > 0;
  scaler.update(false);
  ++st.optimizer_steps;
  st.last_grad_norm = r.grad_norm;
  r.applied = true;
  r.loss_scale = scaler.scale();
  r.optimizer_step = opt_step;
  st.step_s += seconds_since(t0);
  trace_span(TraceLane::kEngine, "optimizer step", t0, Clock::now());
  return r;
}

// The masters after an update (OptimizerRunner::first_nonfinite_master). Across ranks the lowest
// bad chunk is agreed on, so that every rank stops at the same step.
Status Engine::Impl::check_masters() {
  STRATA_ASSIGN_OR_RETURN(int bad, runner->first_nonfinite_master());
  if (sharded()) {
    const int32_t n = static_cast<int32_t>(chunks.size());
    int32_t v[1] = {bad < 0 ? -n : -bad};
    STRATA_RETURN_IF_ERROR(opts.comm->all_reduce_sync(v, v, 1, comm::Elem::kI32, comm::ReduceOp::kMax));
    bad = -v[0] < n ? -v[0] : -1;
  }
  return bad < 0 ? Status::ok() : nonfinite_masters(static_cast<uint32_t>(bad));
}

Status Engine::Impl::nonfinite_masters(uint32_t ci) const {
  const ChunkState& c = chunks[ci];
  const auto& slots = layout->params();
  const std::string span =
      c.params.empty() ? std::string()
                       : " (params '" + slots[c.params.front()].name + "' .. '" + slots[c.params.back()].name + "')";
  return Status(StatusCode::kNonFinite,
                "step " + std::to_string(opt_step) + ": the fp32 master weights of chunk " + std::to_string(ci) + span +
                    " hold inf / NaN after the update (the learning rate or weight decay is too "
                    "large for them); the engine's state is no longer usable: resume from a checkpoint");
}

// After every step call: start loading the next micro-batch's first chunks, and at the end of an
// optimizer step write the summary line and the trace.
Status Engine::Impl::after_step(const StepResult& r) {
  STRATA_RETURN_IF_ERROR(cache->prefetch());
  if (!r.boundary) return Status::ok();
  const std::function<void(const std::string&)> line = [this](const std::string& l) { log(l); };
  telemetry.step_done(r, opt_step, cfg.step_summary ? &line : nullptr);
  return Status::ok();
}

}  // namespace strata::engine
