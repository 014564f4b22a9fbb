// OptimizerRunner: the NVMe store's checksums of a chunk's optimizer arrays — verified after a
// read, taken during the update for the write-back. Both hash the checksum's segments
// (NvmeStore::kChecksumSegment) over the arena's threads rather than one array per thread, so
// that every optimizer thread takes part (a chunk has 2-4 arrays and there are often more
// threads), and the update hashes each segment right after it wrote it.
#include <atomic>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "src/common/xxh3.h"
#include "src/engine/optimizer_runner.h"

namespace strata::engine {

using offload::NvmeStore;

Status OptimizerRunner::verify_reads(uint32_t ci, float* const* state, const Checks& checks) {
  const size_t na = static_cast<size_t>(num_arrays());
  std::array<size_t, optim::kMaxArrays + 1> first{};  // array a's pieces: [first[a], first[a + 1])
  for (size_t a = 0; a < na; ++a) {
    const size_t bytes = chunks_[ci].a[a]->bytes();
    first[a + 1] = first[a] + (!checks[a].active ? 0 : checks[a].whole ? 1 : NvmeStore::checksum_segments(bytes));
  }
  std::vector<uint64_t> sums(first[na]);
  kernels::parallel_for(tbb::blocked_range<size_t>(0, first[na], 1), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t p = r.begin(); p != r.end(); ++p) {
      size_t a = 0;
      while (p >= first[a + 1]) ++a;
      const size_t bytes = chunks_[ci].a[a]->bytes();
      sums[p] = checks[a].whole ? xxh3_64(state[a], bytes) : NvmeStore::segment_checksum(state[a], bytes, p - first[a]);
    }
  });
  for (size_t a = 0; a < na; ++a) {
    if (!checks[a].active) continue;
    const uint64_t got =
        checks[a].whole ? sums[first[a]] : NvmeStore::combine_checksums(&sums[first[a]], first[a + 1] - first[a]);
    STRATA_RETURN_IF_ERROR(checks[a].verify_sum(got));
  }
  return Status::ok();
}

bool OptimizerRunner::update_summed(const optim::Tensor& t, const optim::StepCoeffs& c, Sums& sums,
                                    const Checks* checks, Status* verified) {
  const size_t na = static_cast<size_t>(num_arrays());
  const size_t bytes = t.count * 4, seg = NvmeStore::kChecksumSegment / 4;  // elements a segment
  const size_t n = NvmeStore::checksum_segments(bytes);  // every array holds t.count floats (allocate)
  std::vector<uint64_t> got(n * na), read(checks != nullptr ? n * na : 0);
  std::atomic<bool> finite{true};
  kernels::parallel_for(tbb::blocked_range<size_t>(0, n, 1), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i != r.end(); ++i) {
      // The kernel is elementwise: a segment's update is the whole update's on those elements.
      const size_t at = i * seg;
      optim::Tensor s = t;
      s.count = std::min(seg, t.count - at);
      for (size_t a = 0; a < na; ++a) s.array[a] = t.array[a] + at;
      s.grads = t.grads == nullptr ? nullptr : static_cast<const float*>(t.grads) + at;
      s.params_out = t.params_out == nullptr ? nullptr : static_cast<uint16_t*>(t.params_out) + at;
      for (size_t a = 0; checks != nullptr && a < na; ++a)  // the state as read, about to come into cache
        if ((*checks)[a].active) read[a * n + i] = NvmeStore::segment_checksum(t.array[a], bytes, i);
      if (!opt_->update_host(*ctx_.k, c, {&s, 1})) finite = false;
      for (size_t a = 0; a < na; ++a) got[a * n + i] = NvmeStore::segment_checksum(t.array[a], bytes, i);
    }
  });
  for (size_t a = 0; a < na; ++a) sums[a] = NvmeStore::combine_checksums(&got[a * n], n);
  for (size_t a = 0; checks != nullptr && a < na && verified->is_ok(); ++a)
    if ((*checks)[a].active) *verified = (*checks)[a].verify_sum(NvmeStore::combine_checksums(&read[a * n], n));
  return finite;
}

}  // namespace strata::engine
