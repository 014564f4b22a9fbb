// The bookkeeping every Device shares: a byte budget, the live allocations, used and peak bytes,
// and the messages for going over budget or freeing something that is not live. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "src/common/status.h"

namespace strata::offload {

class DeviceLedger {
 public:
  explicit DeviceLedger(size_t budget) : budget_(budget) {}

  // Reserves `bytes` of the budget before allocating: kOutOfMemory naming request, use and budget.
  Status reserve(size_t bytes);
  // After a failed allocation: gives the reservation back.
  void unreserve(size_t bytes);
  // Records a successful allocation of reserved bytes.
  void add(void* p, size_t bytes);
  // Forgets a live allocation and returns its bytes to the budget; kInvalidArgument when p is not live.
  StatusOr<size_t> remove(void* p);
  // True when [p, p + n) lies inside one live allocation.
  bool contains_range(const void* p, size_t n) const;
  std::vector<void*> live() const;

  size_t budget() const { return budget_; }
  size_t used() const;
  size_t peak() const;

 private:
  const size_t budget_;
  mutable std::mutex mu_;
  std::map<uintptr_t, size_t> allocs_;  // start -> bytes
  size_t used_ = 0, peak_ = 0;
};

}  // namespace strata::offload
