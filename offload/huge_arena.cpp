// HugeArena: first fit over a few large THP-advised mappings.
#include "offload/huge_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <iterator>

namespace strata::offload {

HugeArena& HugeArena::instance() {
  static HugeArena* arena = new HugeArena();  // outlives every static buffer
  return *arena;
}

bool HugeArena::serves(size_t bytes) {
#if defined(__SANITIZE_ADDRESS__)
  (void)bytes;
  return false;
#else
  return bytes >= (size_t{256} << 10);
#endif
}

void* HugeArena::take(Region& r, size_t bytes) {
  for (auto it = r.free.begin(); it != r.free.end(); ++it) {
    if (it->second < bytes) continue;
    const size_t off = it->first, left = it->second - bytes;
    r.free.erase(it);
    if (left > 0) r.free.emplace(off + bytes, left);
    r.used += bytes;
    return r.base + off;
  }
  return nullptr;
}

void* HugeArena::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Region& r : regions_)
    if (void* p = take(r, bytes)) return p;
  const size_t size = std::max(kRegion, (bytes + kHugePage - 1) / kHugePage * kHugePage);
  // Map a huge page more than needed and trim both ends to a 2 MiB-aligned region.
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  if (const uintptr_t tail = start + size + kHugePage - (aligned + size); tail > 0)
    munmap(reinterpret_cast<void*>(aligned + size), tail);
  Region r;
  r.base = reinterpret_cast<uint8_t*>(aligned);
  r.size = size;
  (void)madvise(r.base, size, MADV_HUGEPAGE);  // advice: fine to be refused
  r.free.emplace(0, size);
  regions_.push_back(std::move(r));
  return take(regions_.back(), bytes);
}

void HugeArena::release(void* p, size_t bytes) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto* b = static_cast<uint8_t*>(p);
  for (auto ri = regions_.begin(); ri != regions_.end(); ++ri) {
    Region& r = *ri;
    if (b < r.base || b >= r.base + r.size) continue;
    r.used -= bytes;
    if (r.used == 0) {
      munmap(r.base, r.size);
      regions_.erase(ri);
      return;
    }
    (void)madvise(b, bytes, MADV_DONTNEED);  // the memory goes back; the range stays mapped
    size_t off = static_cast<size_t>(b - r.base), len = bytes;
    auto next = r.free.lower_bound(off);
    if (next != r.free.end() && off + len == next->first) {
      len += next->second;
      next = r.free.erase(next);
    }
    if (next != r.free.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == off) {
        off = prev->first;
        len += prev->second;
        r.free.erase(prev);
      }
    }
    r.free.emplace(off, len);
    return;
  }
}

size_t HugeArena::regions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return regions_.size();
}

}  // namespace strata::offload
