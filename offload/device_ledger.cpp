// DeviceLedger: budget and live-allocation bookkeeping for the devices.
#include "offload/device_ledger.h"

#include <string>

namespace strata::offload {

Status DeviceLedger::reserve(size_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  if (bytes > budget_ - std::min(used_, budget_))
    return out_of_memory("device allocation of " + std::to_string(bytes) + " bytes exceeds the device budget: " +
                         std::to_string(used_) + " of " + std::to_string(budget_) + " bytes in use");
  used_ += bytes;
  if (used_ > peak_) peak_ = used_;
  return Status::ok();
}

void DeviceLedger::unreserve(size_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  used_ -= bytes;
}

void DeviceLedger::add(void* p, size_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  allocs_[reinterpret_cast<uintptr_t>(p)] = bytes;
}

StatusOr<size_t> DeviceLedger::remove(void* p) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = allocs_.find(reinterpret_cast<uintptr_t>(p));
  if (it == allocs_.end()) return invalid_argument("free of a pointer that is not a live allocation of this device");
  const size_t bytes = it->second;
  used_ -= bytes;
  allocs_.erase(it);
  return bytes;
}

bool DeviceLedger::contains_range(const void* p, size_t n) const {
  std::lock_guard<std::mutex> l(mu_);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = allocs_.upper_bound(a);
  if (it == allocs_.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

std::vector<void*> DeviceLedger::live() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<void*> out;
  for (const auto& [p, n] : allocs_) out.push_back(reinterpret_cast<void*>(p));
  return out;
}

size_t DeviceLedger::used() const {
  std::lock_guard<std::mutex> l(mu_);
  return used_;
}

size_t DeviceLedger::peak() const {
  std::lock_guard<std::mutex> l(mu_);
  return peak_;
}

}  // namespace strata::offload
