// Engine: the optimizer step. At the end of each accumulation cycle: gather the gradients
// (drain the buckets), compute the global norm and the overflow flag over every chunk, update the
// loss scale, then chunk by chunk run Adam where the optimizer state lives (device, host, or host
// after an NVMe read) and put the updated bit16 params where they rest. Synchronous in this
// version: the overlapped pipeline replaces the loop over chunks without changing its results.
#include <cmath>
#include <cstring>

#include "kernels/cpu/adam.h"
#include "kernels/cpu/grad_norm.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {
namespace {
const char* const kOptKeys[3] = {"master", "exp_avg", "exp_avg_sq"};
}

Status Engine::Impl::zero_grads() {
  for (ChunkState& c : chunks) {
    if (c.grad_dev != nullptr) {
      STRATA_RETURN_IF_ERROR(ops->zero(*compute, c.grad_dev, c.shard * 4));
    } else {
      std::memset(c.grad_host.data(), 0, c.shard * 4);
    }
  }
  return compute->synchronize();
}

StatusOr<StepResult> Engine::Impl::step(double lr_arg) {
  STRATA_RETURN_IF_ERROR(dev->make_current());
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].fetches > 0)
      return failed_precondition("step while '" + layout->params()[i].name + "' is fetched: release every param before step");
  const double lr = lr_arg < 0 ? cfg.optimizer.lr : lr_arg;
  kernels::AdamHyper h;
  h.lr = static_cast<float>(lr);
  h.beta1 = static_cast<float>(cfg.optimizer.beta1);
  h.beta2 = static_cast<float>(cfg.optimizer.beta2);
  h.eps = static_cast<float>(cfg.optimizer.eps);
  h.weight_decay = static_cast<float>(cfg.optimizer.weight_decay);
  if (Status v = kernels::validate_adam_hyper(h); !v.is_ok()) return invalid_argument("step: " + v.message());

  ++micro;
  ++st.micro_steps;
  for (ParamState& p : params) p.fetched_in_micro = p.grad_in_micro = false;
  for (ChunkState& c : chunks) c.grads_in_micro = 0;
  StepResult r;
  r.loss_scale = scaler.scale();
  r.optimizer_step = opt_step;
  if (micro % cfg.gradient_accumulation_steps != 0) {
    for (size_t b = 0; b < buckets.size(); ++b)
      if (buckets[b].state == Bucket::State::kOpen) STRATA_RETURN_IF_ERROR(flush(static_cast<int>(b)));
    return r;
  }
  r.boundary = true;
  const Clock::time_point t0 = Clock::now();
  STRATA_RETURN_IF_ERROR(drain_all());
  STRATA_RETURN_IF_ERROR(compute->synchronize());

  // Global norm and overflow over every chunk's fp32 gradient: host chunks in one deterministic
  // multi-tensor pass, device chunks one by one.
  std::vector<kernels::TensorView> host_views;
  std::vector<double> dev_sumsq(chunks.size(), 0.0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    ChunkState& c = chunks[i];
    if (c.grad_dev != nullptr) {
      STRATA_RETURN_IF_ERROR(ops->sumsq(*compute, kernels::TensorView{c.grad_dev, DType::kF32, c.shard}, scratch, &dev_sumsq[i]));
    } else {
      host_views.push_back(kernels::TensorView{c.grad_host.data(), DType::kF32, c.shard});
    }
  }
  kernels::NormResult hn;
  arena.execute([&] { hn = kernels::multi_tensor_sumsq(*k, host_views); });
  STRATA_RETURN_IF_ERROR(compute->synchronize());
  double sumsq = hn.sumsq;
  for (double d : dev_sumsq) sumsq += d;
  const bool finite = hn.finite && std::isfinite(sumsq);
  // Gradients are sums over the cycle's micro-batches of scaled gradients: average and unscale.
  const double inv = 1.0 / (scaler.scale() * cfg.gradient_accumulation_steps);
  if (!finite) {
    r.overflow = true;
    r.grad_norm = std::numeric_limits<double>::infinity();
    scaler.update(true);
    ++st.skipped_steps;
    st.last_grad_norm = r.grad_norm;
    STRATA_RETURN_IF_ERROR(zero_grads());
    r.loss_scale = scaler.scale();
    log("step " + std::to_string(opt_step + 1) + ": gradient overflow (inf / NaN), step skipped, loss scale now " +
        std::to_string(scaler.scale()));
    st.step_s += seconds_since(t0);
    return r;
  }
  r.grad_norm = std::sqrt(sumsq) * inv;
  r.clip_coef = kernels::clip_coefficient(r.grad_norm, cfg.gradient_clipping);
  h.grad_scale = static_cast<float>(inv * r.clip_coef);
  if (Status v = kernels::validate_adam_hyper(h); !v.is_ok()) return internal_error("step: " + v.message());
  ++opt_step;
  const kernels::AdamCoeffs coeffs = kernels::make_adam_coeffs(
      cfg.optimizer.adamw ? kernels::AdamMode::kAdamW : kernels::AdamMode::kAdam, cfg.optimizer.bias_correction, opt_step, h);

  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    ChunkState& c = chunks[ci];
    const size_t rest_off = cfg.placement.stage == 3 ? 0 : c.shard_begin;  // the shard's place in the resting array
    if (c.at.optimizer == Tier::kDevice) {
      kernels::AdamTensor t;
      t.params = static_cast<float*>(c.opt_dev[0]);
      t.exp_avg = static_cast<float*>(c.opt_dev[1]);
      t.exp_avg_sq = static_cast<float*>(c.opt_dev[2]);
      t.grads = c.grad_dev;
      t.grad_dtype = DType::kF32;
      t.params_out = static_cast<uint8_t*>(c.p16_dev) + rest_off * 2;
      t.out_dtype = dtype;
      t.count = c.shard;
      STRATA_RETURN_IF_ERROR(ops->adam(*compute, coeffs, t));
      continue;
    }
    offload::AlignedBuffer* state = c.at.optimizer == Tier::kHost ? c.opt_host : opt_staging;
    if (c.at.optimizer == Tier::kNvme) {
      const Clock::time_point tn = Clock::now();
      for (int a = 0; a < 3; ++a) STRATA_RETURN_IF_ERROR(nvme_get(opt_store, key(ci, kOptKeys[a]), state[a], c.shard * 4));
      st.step_nvme_s += seconds_since(tn);
    }
    Staging* sb = nullptr;
    void* out = nullptr;
    if (c.at.params16 == Tier::kHost) {
      out = c.p16_host.bytes() + rest_off * 2;
    } else {
      STRATA_ASSIGN_OR_RETURN(sb, take_staging());
      out = sb->buf.data();
    }
    kernels::AdamTensor t;
    t.params = static_cast<float*>(state[0].data());
    t.exp_avg = static_cast<float*>(state[1].data());
    t.exp_avg_sq = static_cast<float*>(state[2].data());
    t.grads = c.grad_host.data();
    t.grad_dtype = DType::kF32;
    t.params_out = out;
    t.out_dtype = dtype;
    t.count = c.shard;
    const Clock::time_point ta = Clock::now();
    arena.execute([&] { kernels::adam_update(*k, coeffs, {&t, 1}); });
    st.step_adam_s += seconds_since(ta);
    if (c.at.params16 == Tier::kDevice) {
      STRATA_RETURN_IF_ERROR(h2d->copy(static_cast<uint8_t*>(c.p16_dev) + rest_off * 2, out, c.shard * 2,
                                       offload::CopyKind::kHostToDevice));
      STRATA_RETURN_IF_ERROR(h2d->record(*sb->copied));
      sb->pending = true;
      st.bytes_h2d += c.shard * 2;
    }
    const Clock::time_point tn = Clock::now();
    if (c.at.params16 == Tier::kNvme) STRATA_RETURN_IF_ERROR(nvme_put(param_store, key(ci, "p16"), sb->buf, c.rest_numel * 2));
    if (c.at.optimizer == Tier::kNvme)
      for (int a = 0; a < 3; ++a) STRATA_RETURN_IF_ERROR(nvme_put(opt_store, key(ci, kOptKeys[a]), state[a], c.shard * 4));
    st.step_nvme_s += seconds_since(tn);
  }
  STRATA_RETURN_IF_ERROR(zero_grads());
  STRATA_RETURN_IF_ERROR(h2d->synchronize());
  for (Staging& s : param_staging) s.pending = false;
  // Working copies of offloaded params are stale now.
  for (WorkBuffer& w : work) w.chunk = -1;
  for (ChunkState& c : chunks) c.work = -1;
  scaler.update(false);
  ++st.optimizer_steps;
  st.last_grad_norm = r.grad_norm;
  r.applied = true;
  r.loss_scale = scaler.scale();
  r.optimizer_step = opt_step;
  st.step_s += seconds_since(t0);
  return r;
}

}  // namespace strata::engine
