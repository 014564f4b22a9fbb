// Multi-tensor sum of squares with fixed chunking (see work_split.h).
#include "kernels/cpu/grad_norm.h"

#include <oneapi/tbb/blocked_range.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/work_split.h"

namespace strata::kernels {

Status validate_views(std::span<const TensorView> views) {
  for (size_t i = 0; i < views.size(); ++i) {
    const TensorView& v = views[i];
    const std::string who = "gradient " + std::to_string(i);
    if (!dtype_valid(v.dtype))
      return invalid_argument(who + ": invalid dtype " + std::to_string(static_cast<int>(v.dtype)));
    if (v.count == 0) continue;
    if (v.data == nullptr) return invalid_argument(who + ": data is NULL with count " + std::to_string(v.count));
    if (reinterpret_cast<uintptr_t>(v.data) % dtype_size(v.dtype) != 0)
      return invalid_argument(who + ": data is not aligned to its " + std::string(dtype_name(v.dtype)) +
                              " element size");
  }
  return Status::ok();
}

namespace {

// `f(view, begin, end)` of every fixed chunk, in parallel; the results in chunk order.
template <class F>
std::vector<double> chunked_partials(std::span<const TensorView> views, F&& f) {
  std::vector<size_t> counts(views.size());
  for (size_t i = 0; i < views.size(); ++i) counts[i] = views[i].count;
  const std::vector<WorkItem> items = split_work(counts);
  std::vector<double> partial(items.size(), 0.0);
  kernels::parallel_for(tbb::blocked_range<size_t>(0, items.size()), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i != r.end(); ++i) {
      const WorkItem& w = items[i];
      partial[i] = f(views[w.tensor], w.begin, w.end);
    }
  });
  return partial;
}

// The same, added in chunk order.
template <class F>
double chunked_sum(std::span<const TensorView> views, F&& f) {
  double sum = 0.0;
  for (double p : chunked_partials(views, f)) sum += p;
  return sum;
}

}  // namespace

NormResult multi_tensor_sumsq(const KernelTable& k, std::span<const TensorView> views) {
  NormResult out;
  out.sumsq = chunked_sum(views, k.sumsq);
  out.finite = std::isfinite(out.sumsq);
  return out;
}

std::vector<double> sumsq_partials(const KernelTable& k, std::span<const TensorView> views) {
  return chunked_partials(views, k.sumsq);
}

double stream_read(const KernelTable& k, std::span<const TensorView> views) {
  return chunked_sum(views, k.stream_read);
}

double clip_coefficient(double norm, double max_norm) {
  if (!(max_norm > 0.0)) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace strata::kernels
