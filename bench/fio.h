// fio as the peer of strata's NVMe I/O: the same directory, block size, queue depth and thread
// count (ioengine=libaio, direct=1); a write pass to fresh files, then a read pass of them.
#pragma once

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "src/common/status.h"

namespace strata::bench {

struct FioConfig {
  size_t block_size;
  int queue_depth;
  int threads;
};

struct Rates {
  double write_gbps = 0, read_gbps = 0;
};

inline std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

// GB/s of fio writing then reading `total` bytes under `dir`; its files are removed after.
inline StatusOr<Rates> fio_once(const std::string& dir, size_t total, const FioConfig& c) {
  Rates r;
  for (const char* rw : {"write", "read"}) {
    const std::string cmd = "fio --name=strata_bench --directory=" + dir + " --ioengine=libaio --direct=1 --rw=" + rw +
                            " --bs=" + std::to_string(c.block_size) + " --iodepth=" + std::to_string(c.queue_depth) +
                            " --numjobs=" + std::to_string(c.threads) +
                            " --size=" + std::to_string(total / static_cast<size_t>(c.threads)) +
                            " --group_reporting --output-format=json --filename_format='fio.$jobnum' 2>&1";
    const std::string out = run_command(cmd);
    const auto start = out.find('{');
    nlohmann::json j = nlohmann::json::parse(start == std::string::npos ? "" : out.substr(start), nullptr, false);
    if (j.is_discarded() || !j.contains("jobs"))
      return unsupported("fio did not run (is it installed? scripts/install_deps.sh installs it): " +
                         out.substr(0, 200));
    const double bw = j["jobs"][0][rw]["bw_bytes"].get<double>();
    (std::string(rw) == "write" ? r.write_gbps : r.read_gbps) = bw / 1e9;
  }
  for (int t = 0; t < c.threads; ++t) std::filesystem::remove(dir + "/fio." + std::to_string(t));
  return r;
}

}  // namespace strata::bench
