// Small helpers shared by the benchmarks: stopping at the first error, wall-clock timing,
// best/median of repetitions, a description of the machine, and 64-byte aligned buffers.
#pragma once

#include <errno.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "src/common/status.h"

namespace strata::bench {

// A benchmark stops at the first error: "<program>: <status>" on stderr, exit status 1.
inline void check(const Status& s) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, s.to_string().c_str());
    std::exit(1);
  }
}
template <class T>
T check(StatusOr<T> s) {
  check(s.status());
  return std::move(s).value();
}

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline double best(std::vector<double> v) { return *std::min_element(v.begin(), v.end()); }
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// "AMD EPYC 7B13 64-Core Processor" from /proc/cpuinfo, or "unknown".
inline std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  }
  return "unknown";
}

// {"cpu": ..., "hw_threads": N, "isa": ...}: where a figure was measured.
inline std::string where_json(const std::string& isa) {
  return "{\"cpu\": \"" + cpu_model() + "\", \"hw_threads\": " + std::to_string(std::thread::hardware_concurrency()) +
         ", \"isa\": \"" + isa + "\"}";
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<unsigned char, FreeDeleter>;

// Uninitialised, 64-byte aligned; touch it in parallel before timing.
inline Buffer alloc_buffer(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  return Buffer(static_cast<unsigned char*>(std::aligned_alloc(64, rounded == 0 ? 64 : rounded)));
}

// One thread's memcpy bandwidth (GB/s) over `bytes`, the best of 5.
inline double memcpy_gbps(size_t bytes = size_t{64} << 20) {
  Buffer a = alloc_buffer(bytes), b = alloc_buffer(bytes);
  std::memset(a.get(), 1, bytes);
  std::memset(b.get(), 2, bytes);
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) t.push_back(seconds([&] { std::memcpy(b.get(), a.get(), bytes); }));
  return static_cast<double>(bytes) / best(t) / 1e9;
}

}  // namespace strata::bench
