// Tracer: the engine's timeline. Spans (begin, end, name) on fixed lanes — the host program
// between engine calls, compute stream, H2D, D2H, NVMe read, NVMe write, CPU optimizer, collectives —
// kept in memory and written as Chrome trace-event JSON (opens in Perfetto or chrome://tracing).
// Thread-safe: stream and I/O threads add spans. Not a profiler: only what the engine drives.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

#include "offload/device.h"
#include "src/common/status.h"

namespace strata::engine {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

enum class TraceLane : int {
  kHost = 0,
  kCompute,
  kH2D,
  kD2H,
  kNvmeRead,
  kNvmeWrite,
  kUpdate,
  kEngine,
  kCollective,
  kCount
};
const char* trace_lane_name(TraceLane lane);

class Tracer {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxSpans = 4'000'000;  // ~400 MB of JSON; later spans are counted, not kept

  explicit Tracer(std::string path);
  void span(TraceLane lane, std::string name, Clock::time_point begin, Clock::time_point end);
  // Writes every span so far to the path: a temporary file, fsync, rename — a reader never sees
  // half a file. Errors name the path.
  Status write() const;
  size_t spans() const;
  size_t dropped() const;
  const std::string& path() const { return path_; }

 private:
  struct Span {
    TraceLane lane;
    std::string name;
    double begin_us, dur_us;
  };
  const std::string path_;
  const Clock::time_point origin_;
  mutable std::mutex mu_;
  std::vector<Span> spans_;
  size_t dropped_ = 0;
};

// A copy on stream s, drawn on `lane` when tracer is not null (timestamps from host functions
// around it on the stream).
Status traced_copy(Tracer* tracer, offload::Stream& s, TraceLane lane, std::string name, void* dst, const void* src,
                   size_t bytes, offload::CopyKind kind);

}  // namespace strata::engine
