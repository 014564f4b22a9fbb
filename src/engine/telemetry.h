// The engine's stats and timeline part: the counters every part adds to (EngineStats), the
// Chrome-trace Tracer when strata.trace is set, the host program's time between engine calls, and
// the per-step summary line.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "src/engine/engine.h"
#include "src/engine/trace.h"

namespace strata::engine {

class Telemetry {
 public:
  Telemetry() = default;
  // Tracing to `path` ("" : off); the file is written once now, so a bad path fails at create.
  Status open_trace(const std::string& path);
  Tracer* tracer() const { return tracer_.get(); }
  EngineStats& stats() { return st_; }
  const EngineStats& stats() const { return st_; }
  Status write_trace() const;
  void span(TraceLane lane, std::string name, Clock::time_point b, Clock::time_point e) const {
    if (tracer_) tracer_->span(lane, std::move(name), b, e);
  }
  void call_begin(const char* what);  // the host program's span since the last call returned
  void call_end() { last_return_ = Clock::now(); }
  // At the end of optimizer step `step`: its span on the timeline and, when `line` is set, the
  // summary of what happened since the previous one.
  void step_done(const StepResult& r, int64_t step, const std::function<void(const std::string&)>* line);

 private:
  EngineStats st_;
  std::unique_ptr<Tracer> tracer_;
  Clock::time_point last_return_{};
  Clock::time_point created_ = Clock::now(), summary_at_{};
  EngineStats summary_st_;  // stats at the last summary
};

}  // namespace strata::engine
