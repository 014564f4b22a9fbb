// Host memory for I/O buffers carved from 2 MiB-aligned regions advised for transparent huge
// pages (madvise MADV_HUGEPAGE). Every O_DIRECT request pins its buffer's pages
// (get_user_pages) and maps them into block-layer segments: a 2 MiB folio takes one step where
// 4 KiB pages take 512, so the I/O thread's kernel time per byte drops. Buffers are mostly
// chunk-sized (often under 2 MiB), hence the shared regions rather than one mapping each.
// Resident memory exceeds the live buffers' bytes by less than one huge page per region (a
// partly used huge page is populated whole). Thread-safe; without THP in the kernel the advice
// is ignored and this is a plain first-fit allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace strata::offload {

class HugeArena {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;
  static constexpr size_t kRegion = size_t{32} << 20;  // regions are at least this large

  static HugeArena& instance();
  // Whether buffers of this size come from the arena: 256 KiB and more, and none under
  // AddressSanitizer (its redzones around each allocation are what catches an overrun).
  static bool serves(size_t bytes);
  // `bytes` (a multiple of 4096) at a 4096-aligned address, or nullptr.
  void* allocate(size_t bytes);
  // Gives back what allocate returned (same size); its pages are returned to the kernel.
  void release(void* p, size_t bytes);
  size_t regions() const;

 private:
  struct Region {
    uint8_t* base = nullptr;
    size_t size = 0, used = 0;
    std::map<size_t, size_t> free;  // offset -> bytes, coalesced
  };
  static void* take(Region& r, size_t bytes);
  mutable std::mutex mu_;
  std::vector<Region> regions_;
};

}  // namespace strata::offload
