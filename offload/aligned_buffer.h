// Page-aligned host buffers usable for O_DIRECT I/O, page-locked and registered with CUDA when a
// GPU is present (so the same buffer feeds H2D copies), and a pool with a byte budget that reuses
// them so steady-state training allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "src/common/status.h"

namespace strata::offload {

inline constexpr size_t kIoAlign = 4096;  // buffer, offset and length alignment for O_DIRECT

inline constexpr size_t align_up(size_t n, size_t a = kIoAlign) { return (n + a - 1) / a * a; }

enum class PinMode {
  kAuto,  // mlock + cudaHostRegister when a CUDA device is usable; plain aligned memory otherwise
  kNone,  // aligned memory only
};

// Move-only owner of `capacity` bytes (a multiple of kIoAlign) at a kIoAlign-aligned address.
class AlignedBuffer {
 public:
  static StatusOr<AlignedBuffer> create(size_t bytes, PinMode pin = PinMode::kAuto);
  AlignedBuffer() = default;
  AlignedBuffer(AlignedBuffer&& o) noexcept { *this = std::move(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { reset(); }

  void* data() const { return data_; }
  uint8_t* bytes() const { return static_cast<uint8_t*>(data_); }
  size_t capacity() const { return capacity_; }
  bool cuda_registered() const { return cuda_registered_; }
  void reset();

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
  bool cuda_registered_ = false;
  bool arena_ = false;  // from HugeArena (large buffers), else aligned_alloc
};

class PinnedPool;

// A buffer on loan from a PinnedPool; goes back to the pool when destroyed.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  PooledBuffer(PooledBuffer&&) noexcept = default;
  PooledBuffer& operator=(PooledBuffer&& o) noexcept;
  ~PooledBuffer();
  AlignedBuffer& buffer() { return buf_; }
  void* data() const { return buf_.data(); }
  size_t capacity() const { return buf_.capacity(); }

 private:
  friend class PinnedPool;
  PooledBuffer(std::shared_ptr<PinnedPool> pool, AlignedBuffer buf) : pool_(std::move(pool)), buf_(std::move(buf)) {}
  std::shared_ptr<PinnedPool> pool_;
  AlignedBuffer buf_;
};

// Thread-safe. acquire() returns a free buffer whose capacity is between the request and twice
// it when one exists, otherwise allocates; beyond the budget it first frees idle buffers, then
// fails with kOutOfMemory saying how much is in use and how much was asked.
class PinnedPool : public std::enable_shared_from_this<PinnedPool> {
 public:
  struct Stats {
    size_t budget_bytes, allocated_bytes, in_use_bytes;
    uint64_t allocations, reuses;
  };
  static std::shared_ptr<PinnedPool> create(size_t budget_bytes, PinMode pin = PinMode::kAuto);
  StatusOr<PooledBuffer> acquire(size_t bytes);
  Stats stats() const;

 private:
  friend class PooledBuffer;
  PinnedPool(size_t budget, PinMode pin) : budget_(budget), pin_(pin) {}
  void give_back(AlignedBuffer buf);

  const size_t budget_;
  const PinMode pin_;
  mutable std::mutex mu_;
  std::vector<AlignedBuffer> free_;
  size_t allocated_ = 0, in_use_ = 0;
  uint64_t allocations_ = 0, reuses_ = 0;
};

}  // namespace strata::offload
