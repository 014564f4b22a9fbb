// HostDevice: a GPU emulated on the CPU. Memory is host memory under a hard byte budget; each
// stream is a thread running its queue in order; events carry a generation count so a wait sees
// exactly the work recorded before it. Copies check that their device side lies inside a device
// allocation, which catches the engine using freed or foreign memory.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/device_ledger.h"
#include "offload/huge_arena.h"
#include "src/common/serial_queue.h"
#include "src/common/units.h"

namespace strata::offload {
namespace {

constexpr size_t kAllocAlign = 256;

class HostEvent final : public Event {
 public:
  bool query() override {
    std::lock_guard<std::mutex> l(mu_);
    return completed_ >= recorded_;
  }
  Status synchronize() override {
    std::unique_lock<std::mutex> l(mu_);
    const uint64_t target = recorded_;
    cv_.wait(l, [&] { return completed_ >= target; });
    return Status::ok();
  }
  uint64_t next_generation() {
    std::lock_guard<std::mutex> l(mu_);
    return ++recorded_;
  }
  uint64_t current_generation() {
    std::lock_guard<std::mutex> l(mu_);
    return recorded_;
  }
  void complete(uint64_t generation) {
    // Notify under the lock: a waiter that sees the event done may destroy it at once.
    std::lock_guard<std::mutex> l(mu_);
    if (generation > completed_) completed_ = generation;
    cv_.notify_all();
  }
  void wait_for(uint64_t generation) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return completed_ >= generation; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t recorded_ = 0, completed_ = 0;
};

class HostDeviceImpl;

class HostStream final : public Stream {
 public:
  explicit HostStream(HostDeviceImpl* dev) : dev_(dev) {}
  Status copy(void* dst, const void* src, size_t bytes, CopyKind kind) override;
  Status launch_host(std::function<Status()> fn) override {
    if (!fn) return invalid_argument("launch_host: empty function");
    enqueue(std::move(fn));
    return Status::ok();
  }
  Status record(Event& e) override {
    auto* he = dynamic_cast<HostEvent*>(&e);
    if (he == nullptr) return invalid_argument("record: the event belongs to another kind of device");
    const uint64_t g = he->next_generation();
    enqueue([he, g] {
      he->complete(g);
      return Status::ok();
    });
    return Status::ok();
  }
  Status wait(Event& e) override {
    auto* he = dynamic_cast<HostEvent*>(&e);
    if (he == nullptr) return invalid_argument("wait: the event belongs to another kind of device");
    const uint64_t g = he->current_generation();
    enqueue([he, g] {
      he->wait_for(g);
      return Status::ok();
    });
    return Status::ok();
  }
  // Later work still runs after a failed task (event records must complete, or other streams
  // would hang); the first error is kept for synchronize().
  Status synchronize() override { return queue_.wait(); }
  void* native_handle() override { return nullptr; }

 private:
  void enqueue(std::function<Status()> task) { queue_.post(std::move(task)); }

  HostDeviceImpl* dev_;
  SerialQueue queue_;  // last: drained before the members above go
};

class HostDeviceImpl final : public Device {
 public:
  HostDeviceImpl(size_t budget, std::chrono::microseconds copy_delay) : ledger_(budget), copy_delay_(copy_delay) {}
  ~HostDeviceImpl() override {
    for (void* p : ledger_.live()) {
      auto bytes = ledger_.remove(p);
      if (bytes.is_ok()) release(p, bytes.value());
    }
  }
  std::string name() const override { return "host-emulated device (budget " + format_bytes(ledger_.budget()) + ")"; }
  bool is_cuda() const override { return false; }

  StatusOr<void*> allocate(size_t bytes) override {
    const size_t n = (bytes == 0 ? 1 : bytes + kAllocAlign - 1) / kAllocAlign * kAllocAlign;
    STRATA_RETURN_IF_ERROR(ledger_.reserve(n));
    void* p =
        HugeArena::serves(n) ? HugeArena::instance().allocate(align_up(n, 4096)) : std::aligned_alloc(kAllocAlign, n);
    if (p == nullptr) {
      ledger_.unreserve(n);
      return out_of_memory("host memory for the emulated device ran out (" + std::to_string(n) + " bytes)");
    }
    ledger_.add(p, n);
    return p;
  }
  Status free(void* p) override {
    if (p == nullptr) return Status::ok();
    STRATA_ASSIGN_OR_RETURN(size_t bytes, ledger_.remove(p));
    release(p, bytes);
    return Status::ok();
  }
  size_t budget_bytes() const override { return ledger_.budget(); }
  size_t used_bytes() const override { return ledger_.used(); }
  size_t peak_bytes() const override { return ledger_.peak(); }
  StatusOr<std::unique_ptr<Stream>> create_stream() override { return std::unique_ptr<Stream>(new HostStream(this)); }
  StatusOr<std::unique_ptr<Event>> create_event() override { return std::unique_ptr<Event>(new HostEvent()); }
  Status record_native(Event&, void*) override {
    return invalid_argument("the host-emulated device has no native streams: pass a NULL stream");
  }
  Status wait_native(void*, Event&) override {
    return invalid_argument("the host-emulated device has no native streams: pass a NULL stream");
  }
  Status make_current() override { return Status::ok(); }

  // OK when [p, p + n) lies inside one live allocation.
  Status check_device_range(const void* p, size_t n, const char* what) const {
    if (ledger_.contains_range(p, n)) return Status::ok();
    return invalid_argument(std::string("copy: the device ") + what + " range of " + std::to_string(n) +
                            " bytes is not inside a live device allocation");
  }
  std::chrono::microseconds copy_delay() const { return copy_delay_; }

 private:
  // Device memory of 256 KiB and more comes from the huge-page arena (a GPU maps its memory in
  // large pages too), the rest from malloc.
  static void release(void* p, size_t n) {
    if (HugeArena::serves(n)) {
      HugeArena::instance().release(p, align_up(n, 4096));
    } else {
      std::free(p);
    }
  }
  DeviceLedger ledger_;
  const std::chrono::microseconds copy_delay_;
};

Status HostStream::copy(void* dst, const void* src, size_t bytes, CopyKind kind) {
  if (bytes == 0) return Status::ok();
  if (dst == nullptr || src == nullptr)
    return invalid_argument("copy of " + std::to_string(bytes) + " bytes: NULL pointer");
  if (kind != CopyKind::kHostToDevice) STRATA_RETURN_IF_ERROR(dev_->check_device_range(src, bytes, "source"));
  if (kind != CopyKind::kDeviceToHost) STRATA_RETURN_IF_ERROR(dev_->check_device_range(dst, bytes, "destination"));
  enqueue([dst, src, bytes, delay = dev_->copy_delay()] {
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    std::memmove(dst, src, bytes);
    return Status::ok();
  });
  return Status::ok();
}

}  // namespace

std::unique_ptr<Device> make_host_device(size_t budget_bytes, std::chrono::microseconds copy_delay) {
  return std::unique_ptr<Device>(new HostDeviceImpl(budget_bytes, copy_delay));
}

}  // namespace strata::offload
