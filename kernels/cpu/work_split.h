// Splits a list of tensors into fixed-size chunks of elements, the unit of parallel work of the
// CPU kernels. Chunk boundaries depend only on the tensor sizes, never on the thread count, which
// keeps reductions (the gradient norm) bit-identical whatever the parallelism.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace strata::kernels {

// 32 Ki elements: 512 KiB of fp32 Adam traffic per chunk, a multiple of every vector width.
inline constexpr size_t kChunkElems = size_t{1} << 15;

struct WorkItem {
  uint32_t tensor;  // index into the caller's tensor list
  size_t begin;     // element range [begin, end) of that tensor
  size_t end;
};

// counts[i] = element count of tensor i. Empty tensors produce no items.
std::vector<WorkItem> split_work(std::span<const size_t> counts, size_t chunk = kChunkElems);

}  // namespace strata::kernels
