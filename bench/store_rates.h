// The NvmeStore's own read and write rates on a given set of tensor sizes, with nothing else
// running: 12 requests in flight, every tensor written twice (so both slot files exist, as in
// steady state), then read all / write all, best of 2. The disk-side peer of the engine benches.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "fio.h"
#include "offload/nvme_store.h"

namespace strata::bench {

inline StatusOr<Rates> store_rates(const std::string& dir, const std::vector<size_t>& sizes) {
  offload::NvmeStoreOptions o;
  o.dir = dir + "/store_rates";
  std::filesystem::create_directories(o.dir);
  STRATA_ASSIGN_OR_RETURN(auto st, offload::NvmeStore::open(o));
  constexpr size_t kInFlight = 12;
  size_t largest = 0;
  double total = 0;
  for (size_t b : sizes) {
    largest = std::max(largest, b);
    total += static_cast<double>(b);
  }
  std::vector<offload::AlignedBuffer> bufs;
  for (size_t i = 0; i < kInFlight; ++i) {
    STRATA_ASSIGN_OR_RETURN(auto b, offload::AlignedBuffer::create(largest, offload::PinMode::kAuto));
    bufs.push_back(std::move(b));
  }
  Status failed;
  auto pass = [&](bool write) {
    std::vector<offload::IoHandle> h(kInFlight);
    return seconds([&] {
      for (size_t i = 0; i < sizes.size(); ++i) {
        offload::IoHandle& slot = h[i % kInFlight];
        if (slot.valid()) {
          Status e = slot.wait();
          if (failed.is_ok() && !e.is_ok()) failed = e;
        }
        const std::string k = "a" + std::to_string(i);
        slot = write ? st->put(k, bufs[i % kInFlight], sizes[i]) : st->get(k, bufs[i % kInFlight], sizes[i]);
      }
      for (auto& x : h) {
        if (!x.valid()) continue;
        Status e = x.wait();
        if (failed.is_ok() && !e.is_ok()) failed = e;
      }
    });
  };
  (void)pass(true);
  (void)pass(true);
  Rates r;
  for (int rep = 0; rep < 2; ++rep) {
    r.read_gbps = std::max(r.read_gbps, total / pass(false) / 1e9);
    r.write_gbps = std::max(r.write_gbps, total / pass(true) / 1e9);
  }
  STRATA_RETURN_IF_ERROR(failed);
  STRATA_RETURN_IF_ERROR(st->close());
  std::filesystem::remove_all(o.dir);
  return r;
}

}  // namespace strata::bench
