// Tracer: spans in memory, written as Chrome trace-event JSON ("X" complete events, one thread
// per lane, named by "thread_name" metadata events).
#include "src/engine/trace.h"

#include <cstdio>
#include <memory>

#include "src/common/fs.h"

namespace strata::engine {

const char* trace_lane_name(TraceLane lane) {
  switch (lane) {
    case TraceLane::kHost:
      return "host program (forward / backward)";
    case TraceLane::kCompute:
      return "compute stream";
    case TraceLane::kH2D:
      return "H2D copies";
    case TraceLane::kD2H:
      return "D2H copies";
    case TraceLane::kNvmeRead:
      return "NVMe read";
    case TraceLane::kNvmeWrite:
      return "NVMe write";
    case TraceLane::kUpdate:
      return "CPU optimizer";
    case TraceLane::kEngine:
      return "engine (stalls, step)";
    case TraceLane::kCollective:
      return "collectives";
    case TraceLane::kCount:
      break;
  }
  return "?";
}

Tracer::Tracer(std::string path) : path_(std::move(path)), origin_(Clock::now()) {}

void Tracer::span(TraceLane lane, std::string name, Clock::time_point begin, Clock::time_point end) {
  const double b = std::chrono::duration<double, std::micro>(begin - origin_).count();
  const double d = std::chrono::duration<double, std::micro>(end - begin).count();
  std::lock_guard<std::mutex> l(mu_);
  if (spans_.size() >= kMaxSpans) {
    ++dropped_;
    return;
  }
  spans_.push_back(Span{lane, std::move(name), b, d < 0 ? 0 : d});
}

size_t Tracer::spans() const {
  std::lock_guard<std::mutex> l(mu_);
  return spans_.size();
}

size_t Tracer::dropped() const {
  std::lock_guard<std::mutex> l(mu_);
  return dropped_;
}

namespace {
void json_escape(std::string& out, const std::string& s) {
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\u%04x", ch);
      out += b;
    } else {
      out += ch;
    }
  }
}
}  // namespace

Status Tracer::write() const {
  std::string out = "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n";
  for (int l = 0; l < static_cast<int>(TraceLane::kCount); ++l) {
    out += "{\"ph\": \"M\", \"name\": \"thread_name\", \"pid\": 1, \"tid\": " + std::to_string(l) +
           ", \"args\": {\"name\": \"";
    json_escape(out, trace_lane_name(static_cast<TraceLane>(l)));
    out += "\"}},\n{\"ph\": \"M\", \"name\": \"thread_sort_index\", \"pid\": 1, \"tid\": " + std::to_string(l) +
           ", \"args\": {\"sort_index\": " + std::to_string(l) + "}},\n";
  }
  out += "{\"ph\": \"M\", \"name\": \"process_name\", \"pid\": 1, \"args\": {\"name\": \"strata engine\"}}";
  {
    std::lock_guard<std::mutex> lk(mu_);
    char num[96];
    for (const Span& s : spans_) {
      out += ",\n{\"ph\": \"X\", \"pid\": 1, \"tid\": " + std::to_string(static_cast<int>(s.lane)) + ", \"name\": \"";
      json_escape(out, s.name);
      std::snprintf(num, sizeof(num), "\", \"ts\": %.3f, \"dur\": %.3f}", s.begin_us, s.dur_us);
      out += num;
    }
  }
  out += "\n]}\n";
  return fs::write_file_atomic(path_, out).annotate("trace");
}

Status traced_copy(Tracer* tracer, offload::Stream& s, TraceLane lane, std::string name, void* dst, const void* src,
                   size_t bytes, offload::CopyKind kind) {
  if (tracer == nullptr) return s.copy(dst, src, bytes, kind);
  auto t0 = std::make_shared<Clock::time_point>();
  STRATA_RETURN_IF_ERROR(s.launch_host([t0] {
    *t0 = Clock::now();
    return Status::ok();
  }));
  STRATA_RETURN_IF_ERROR(s.copy(dst, src, bytes, kind));
  return s.launch_host([tracer, t0, lane, name = std::move(name)] {
    tracer->span(lane, name, *t0, Clock::now());
    return Status::ok();
  });
}

}  // namespace strata::engine
