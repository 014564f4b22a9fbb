// Tensor checks and the parallel driver shared by the CPU optimizers.
#include "kernels/cpu/opt_tensor.h"

#include <oneapi/tbb/blocked_range.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/work_split.h"

namespace strata::kernels {
namespace {

struct Range {
  uintptr_t begin, end;
  size_t tensor;
  const char* field;
};

}  // namespace

std::string fmt_float(float x) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(x));
  return buf;
}

Status check_buffers(std::vector<BufferField> fields) {
  std::vector<Range> ranges;
  ranges.reserve(fields.size());
  for (const BufferField& f : fields) {
    const std::string who = "tensor " + std::to_string(f.tensor) + ": " + f.name;
    if (f.p == nullptr) {
      if (f.optional) continue;
      return invalid_argument(who + " is NULL");
    }
    const uintptr_t b = reinterpret_cast<uintptr_t>(f.p);
    if (b % f.elem_bytes != 0)
      return invalid_argument(who + " is not aligned to its element size " + std::to_string(f.elem_bytes));
    if (f.count > (UINTPTR_MAX - b) / f.elem_bytes)
      return invalid_argument(who + " with count " + std::to_string(f.count) + " wraps the address space");
    ranges.push_back(Range{b, b + f.count * f.elem_bytes, f.tensor, f.name});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t j = 1; j < ranges.size(); ++j) {
    // Sorted by start and all non-empty: if any two ranges overlap, some neighbours do.
    const Range& a = ranges[j - 1];
    const Range& b = ranges[j];
    if (b.begin < a.end) {
      return invalid_argument("buffers overlap: tensor " + std::to_string(a.tensor) + " " + a.field + " and tensor " +
                              std::to_string(b.tensor) + " " + b.field);
    }
  }
  return Status::ok();
}

Status check_tensor_header(size_t i, size_t count, DType grad_dtype, const void* params_out, DType out_dtype) {
  const std::string who = "tensor " + std::to_string(i);
  if (count == 0) return invalid_argument(who + ": count is 0 (leave empty tensors out)");
  if (!dtype_valid(grad_dtype))
    return invalid_argument(who + ": invalid grad dtype " + std::to_string(static_cast<int>(grad_dtype)));
  if (params_out != nullptr && out_dtype != DType::kBF16 && out_dtype != DType::kF16)
    return invalid_argument(who + ": params_out dtype must be bf16 or fp16, not " + std::string(dtype_name(out_dtype)));
  return Status::ok();
}

Status validate_opt_tensors(std::span<const OptTensor> tensors, const char* state) {
  if (tensors.empty()) return invalid_argument("optimizer step: no tensors given");
  std::vector<BufferField> fields;
  fields.reserve(tensors.size() * 4);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const OptTensor& t = tensors[i];
    STRATA_RETURN_IF_ERROR(check_tensor_header(i, t.count, t.grad_dtype, t.params_out, t.out_dtype));
    fields.push_back({t.params, "params", 4, t.count, i, false});
    fields.push_back({t.state, state, 4, t.count, i, false});
    fields.push_back({t.grads, "grads", dtype_valid(t.grad_dtype) ? dtype_size(t.grad_dtype) : 1, t.count, i, false});
    fields.push_back({t.params_out, "params_out", 2, t.count, i, true});
  }
  return check_buffers(std::move(fields));
}

bool for_each_item(std::span<const size_t> counts, const std::function<bool(size_t, size_t, size_t)>& item) {
  const std::vector<WorkItem> items = split_work(counts);
  std::atomic<bool> all{true};
  kernels::parallel_for(tbb::blocked_range<size_t>(0, items.size()), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i != r.end(); ++i)
      if (!item(items[i].tensor, items[i].begin, items[i].end)) all.store(false, std::memory_order_relaxed);
  });
  return all.load();
}

void stream_mix1(const KernelTable& k, std::span<const OptTensor> tensors) {
  std::vector<size_t> counts(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) counts[i] = tensors[i].count;
  for_each_item(counts, [&](size_t t, size_t b, size_t e) {
    k.stream_mix1(tensors[t], b, e);
    return true;
  });
}

}  // namespace strata::kernels
