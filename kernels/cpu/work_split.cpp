// Fixed-size chunking of tensor lists.
#include "kernels/cpu/work_split.h"

namespace strata::kernels {

std::vector<WorkItem> split_work(std::span<const size_t> counts, size_t chunk) {
  size_t total = 0;
  for (size_t c : counts) total += (c + chunk - 1) / chunk;
  std::vector<WorkItem> items;
  items.reserve(total);
  for (size_t t = 0; t < counts.size(); ++t) {
    for (size_t b = 0; b < counts[t]; b += chunk) {
      const size_t e = counts[t] - b > chunk ? b + chunk : counts[t];
      items.push_back(WorkItem{static_cast<uint32_t>(t), b, e});
    }
  }
  return items;
}

}  // namespace strata::kernels
