// Aligned / pinned host buffers and their pool.
#include "offload/aligned_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "offload/cuda_pin.h"
#include "offload/huge_arena.h"

namespace strata::offload {

StatusOr<AlignedBuffer> AlignedBuffer::create(size_t bytes, PinMode pin) {
  const size_t cap = align_up(bytes == 0 ? 1 : bytes);
  const bool arena = HugeArena::serves(cap);
  void* p = arena ? HugeArena::instance().allocate(cap) : std::aligned_alloc(kIoAlign, cap);
  if (p == nullptr) return out_of_memory("cannot allocate " + std::to_string(cap) + " bytes of aligned host memory");
  AlignedBuffer b;
  b.data_ = p;
  b.capacity_ = cap;
  b.arena_ = arena;
  if (pin == PinMode::kAuto && cuda_pinning_available()) {
    STRATA_RETURN_IF_ERROR(cuda_pin(p, cap));  // b's destructor frees p on error
    b.cuda_registered_ = true;
  }
  return b;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    capacity_ = o.capacity_;
    cuda_registered_ = o.cuda_registered_;
    arena_ = o.arena_;
    o.data_ = nullptr;
    o.capacity_ = 0;
    o.cuda_registered_ = false;
  }
  return *this;
}

void AlignedBuffer::reset() {
  if (data_ == nullptr) return;
  if (cuda_registered_) cuda_unpin(data_);
  if (arena_) {
    HugeArena::instance().release(data_, capacity_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  arena_ = false;
  capacity_ = 0;
  cuda_registered_ = false;
}

PooledBuffer& PooledBuffer::operator=(PooledBuffer&& o) noexcept {
  if (this != &o) {
    if (pool_) pool_->give_back(std::move(buf_));
    pool_ = std::move(o.pool_);
    buf_ = std::move(o.buf_);
  }
  return *this;
}

PooledBuffer::~PooledBuffer() {
  if (pool_) pool_->give_back(std::move(buf_));
}

std::shared_ptr<PinnedPool> PinnedPool::create(size_t budget_bytes, PinMode pin) {
  return std::shared_ptr<PinnedPool>(new PinnedPool(budget_bytes, pin));
}

StatusOr<PooledBuffer> PinnedPool::acquire(size_t bytes) {
  const size_t want = align_up(bytes == 0 ? 1 : bytes);
  std::unique_lock<std::mutex> lock(mu_);
  // Best fit among idle buffers no larger than twice the request.
  auto best = free_.end();
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->capacity() >= want && it->capacity() <= 2 * want &&
        (best == free_.end() || it->capacity() < best->capacity()))
      best = it;
  }
  if (best != free_.end()) {
    AlignedBuffer b = std::move(*best);
    free_.erase(best);
    in_use_ += b.capacity();
    ++reuses_;
    return PooledBuffer(shared_from_this(), std::move(b));
  }
  // Make room by releasing idle buffers, largest first.
  std::sort(free_.begin(), free_.end(),
            [](const AlignedBuffer& a, const AlignedBuffer& b) { return a.capacity() < b.capacity(); });
  while (allocated_ + want > budget_ && !free_.empty()) {
    allocated_ -= free_.back().capacity();
    free_.pop_back();
  }
  if (allocated_ + want > budget_) {
    return out_of_memory("pinned host pool budget of " + std::to_string(budget_) +
                         " bytes exhausted: " + std::to_string(in_use_) + " bytes in use, asked for " +
                         std::to_string(want) + " more (raise the host budget or lower buffer_count)");
  }
  allocated_ += want;  // reserve before dropping the lock
  lock.unlock();
  auto b = AlignedBuffer::create(want, pin_);
  lock.lock();
  if (!b.is_ok()) {
    allocated_ -= want;
    return b.status();
  }
  in_use_ += want;
  ++allocations_;
  return PooledBuffer(shared_from_this(), std::move(b).value());
}

void PinnedPool::give_back(AlignedBuffer buf) {
  if (buf.data() == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  in_use_ -= buf.capacity();
  free_.push_back(std::move(buf));
}

PinnedPool::Stats PinnedPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{budget_, allocated_, in_use_, allocations_, reuses_};
}

}  // namespace strata::offload
