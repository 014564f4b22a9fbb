// offload::Device: memory, streams, events and asynchronous copies of the device strata trains
// on — a CUDA GPU (CudaDevice) or a host-emulated one (HostDevice) with the same semantics, so
// the engine's placement, prefetch and overlap logic runs unchanged, and testably, without a GPU.
// Work on one stream runs in order; streams run concurrently; events order work across streams.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "src/common/status.h"

namespace strata::offload {

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice };

// A point in a stream's work. record() on a stream marks it; others may wait for it.
class Event {
 public:
  virtual ~Event() = default;
  // True once the work before the last record() finished (true if never recorded).
  virtual bool query() = 0;
  // Blocks until then.
  virtual Status synchronize() = 0;
};

// An in-order queue of work. Enqueueing never blocks on the work itself. Errors found at enqueue
// time (bad arguments) are returned at once; errors of the work are kept by the stream and
// returned by its next synchronize().
class Stream {
 public:
  virtual ~Stream() = default;
  // Copies `bytes` from src to dst once earlier work on this stream finished.
  virtual Status copy(void* dst, const void* src, size_t bytes, CopyKind kind) = 0;
  // Runs fn on the host once earlier work finished (HostDevice: the emulated device's compute;
  // CudaDevice: a host callback, which must not call CUDA). fn's error becomes the stream's.
  virtual Status launch_host(std::function<Status()> fn) = 0;
  virtual Status record(Event& e) = 0;
  // Later work on this stream waits until `e` (as last recorded) completed.
  virtual Status wait(Event& e) = 0;
  // Waits for all work so far; returns the first error of that work, then clears it.
  virtual Status synchronize() = 0;
  // cudaStream_t for CudaDevice (to launch kernels), nullptr for HostDevice.
  virtual void* native_handle() = 0;
};

class Device {
 public:
  virtual ~Device() = default;
  // "host-emulated device (budget 64.0 MiB)" or "CUDA device 0: NVIDIA H100 ... (sm_90, 79.1 GiB)".
  virtual std::string name() const = 0;
  virtual bool is_cuda() const = 0;

  // Device memory within the budget; kOutOfMemory names the request, the use and the budget.
  virtual StatusOr<void*> allocate(size_t bytes) = 0;
  // nullptr is a no-op; anything else must come from allocate().
  virtual Status free(void* p) = 0;
  virtual size_t budget_bytes() const = 0;
  virtual size_t used_bytes() const = 0;
  virtual size_t peak_bytes() const = 0;

  virtual StatusOr<std::unique_ptr<Stream>> create_stream() = 0;
  virtual StatusOr<std::unique_ptr<Event>> create_event() = 0;

  // Bridges to a caller's own streams (cudaStream_t on a CudaDevice; the host-emulated device has
  // none and returns kInvalidArgument): record `e` at the current end of `native_stream`, or make
  // later work on `native_stream` wait for `e`.
  virtual Status record_native(Event& e, void* native_stream) = 0;
  virtual Status wait_native(void* native_stream, Event& e) = 0;
  // Makes this device current on the calling thread (cudaSetDevice), before kernels are launched
  // from it. A no-op on the host-emulated device.
  virtual Status make_current() = 0;
};

enum class DeviceChoice { kAuto, kHost, kCuda };

// "auto" | "host" | "cuda" (the config's `device`); the error names the accepted values.
StatusOr<DeviceChoice> parse_device_choice(const std::string& s);
// Usable CUDA devices (0 without CUDA or a GPU), and choosing the calling thread's current one
// (each rank of a multi-GPU machine its local rank's).
int usable_cuda_devices();
// One line per usable CUDA device ("0: NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB, 77.8 GiB free");
// empty with *why_none saying why there is none.
std::vector<std::string> describe_cuda_devices(std::string* why_none);
Status use_cuda_device(int index);

// kAuto: the calling thread's current CUDA device (cudaSetDevice; device 0 unless the program
// chose another, e.g. its local rank's GPU) when one is usable, else the host-emulated device; kHost: the
// emulated one; kCuda: a CUDA device or an error that says why there is none. budget_bytes caps
// the device memory strata uses (0: all of a GPU's free memory; required > 0 for the host).
// `log` (may be empty) receives one line saying which device was chosen and why.
StatusOr<std::unique_ptr<Device>> open_device(DeviceChoice choice, size_t budget_bytes,
                                              const std::function<void(const std::string&)>& log = {});

// copy_delay (a test seam): every copy sleeps this long before it moves data, so a consumer that
// does not wait for the copy's event reads stale memory.
std::unique_ptr<Device> make_host_device(size_t budget_bytes,
                                         std::chrono::microseconds copy_delay = std::chrono::microseconds(0));
#if defined(STRATA_HAVE_CUDA)
// index < 0: the calling thread's current device.
StatusOr<std::unique_ptr<Device>> make_cuda_device(int index, size_t budget_bytes);
#endif

}  // namespace strata::offload
