// Telemetry: the trace file, host-program spans and the per-step summary line.
#include "src/engine/telemetry.h"

#include <cstdio>

namespace strata::engine {

Status Telemetry::open_trace(const std::string& path) {
  if (path.empty()) return Status::ok();
  tracer_ = std::make_unique<Tracer>(path);
  return tracer_->write();
}

Status Telemetry::write_trace() const {
  if (!tracer_) return failed_precondition("write_trace: tracing is off (set strata.trace to a file path)");
  return tracer_->write();
}

void Telemetry::call_begin(const char* what) {
  if (tracer_ && last_return_.time_since_epoch().count() != 0)
    tracer_->span(TraceLane::kHost, what, last_return_, Clock::now());
}

void Telemetry::step_done(const StepResult& r, int64_t step, const std::function<void(const std::string&)>* line) {
  const Clock::time_point now = Clock::now();
  if (summary_at_.time_since_epoch().count() == 0) summary_at_ = created_;
  const double wall = std::chrono::duration<double>(now - summary_at_).count();
  const EngineStats& a = summary_st_;
  const EngineStats& st = st_;
  const double stall =
      (st.stall_fetch_s - a.stall_fetch_s) + (st.stall_grad_s - a.stall_grad_s) + (st.step_nvme_s - a.step_nvme_s);
  if (line != nullptr) {
    char text[640];
    auto mb = [](size_t b) { return static_cast<double>(b) / 1e6; };
    std::snprintf(
        text, sizeof(text),
        "step %lld%s: %.1f ms (optimizer %.1f ms: update %.1f, NVMe wait %.1f), stall %.1f ms, overlap %.0f%%, "
        "H2D %.1f MB, D2H %.1f MB, NVMe read %.1f MB (params %.1f), write %.1f MB, prefetch %lld (hits %lld), "
        "on demand %lld, chunks updated in backward %d (redone %d), grad norm %.4g, loss scale %g",
        static_cast<long long>(step), r.overflow ? " (skipped: overflow)" : "", wall * 1e3,
        (st.step_s - a.step_s) * 1e3, (st.step_update_s - a.step_update_s) * 1e3,
        (st.step_nvme_s - a.step_nvme_s) * 1e3, stall * 1e3, wall > 0 ? 100.0 * (1.0 - stall / wall) : 100.0,
        mb(st.bytes_h2d - a.bytes_h2d), mb(st.bytes_d2h - a.bytes_d2h), mb(st.bytes_nvme_read - a.bytes_nvme_read),
        mb(st.bytes_param_nvme_read - a.bytes_param_nvme_read), mb(st.bytes_nvme_write - a.bytes_nvme_write),
        static_cast<long long>(st.prefetches - a.prefetches),
        static_cast<long long>(st.prefetch_hits - a.prefetch_hits),
        static_cast<long long>(st.demand_loads - a.demand_loads), r.chunks_speculated, r.chunks_redone, r.grad_norm,
        r.loss_scale);
    (*line)(text);
  }
  span(TraceLane::kEngine, "training step " + std::to_string(step), summary_at_, now);
  summary_at_ = now;
  summary_st_ = st_;
}

}  // namespace strata::engine
