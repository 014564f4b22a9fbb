// CudaDevice: the real GPU. cudaMalloc under strata's byte budget, non-blocking streams, events
// without timing, cudaMemcpyAsync, host callbacks through cudaLaunchHostFunc.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <mutex>

#include "offload/device.h"
#include "offload/device_ledger.h"
#include "src/common/cuda_check.h"

namespace strata::offload {
namespace {

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(cudaEvent_t e) : ev_(e) {}
  ~CudaEvent() override { (void)cudaEventDestroy(ev_); }
  bool query() override {
    const cudaError_t e = cudaEventQuery(ev_);
    if (e == cudaErrorNotReady) {
      (void)cudaGetLastError();
      return false;
    }
    return true;  // done, or failed (synchronize() reports the error)
  }
  Status synchronize() override {
    STRATA_CUDA_CHECK(cudaEventSynchronize(ev_));
    return Status::ok();
  }
  cudaEvent_t ev_;
};

class CudaStream final : public Stream {
 public:
  CudaStream(int device, cudaStream_t s) : device_(device), s_(s) {}
  ~CudaStream() override {
    (void)cudaStreamSynchronize(s_);
    (void)cudaStreamDestroy(s_);
  }
  Status copy(void* dst, const void* src, size_t bytes, CopyKind kind) override {
    if (bytes == 0) return Status::ok();
    if (dst == nullptr || src == nullptr)
      return invalid_argument("copy of " + std::to_string(bytes) + " bytes: NULL pointer");
    const cudaMemcpyKind k = kind == CopyKind::kHostToDevice   ? cudaMemcpyHostToDevice
                             : kind == CopyKind::kDeviceToHost ? cudaMemcpyDeviceToHost
                                                               : cudaMemcpyDeviceToDevice;
    STRATA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, k, s_));
    return Status::ok();
  }
  Status launch_host(std::function<Status()> fn) override {
    if (!fn) return invalid_argument("launch_host: empty function");
    auto* call = new Call{this, std::move(fn)};
    const cudaError_t e = cudaLaunchHostFunc(s_, &CudaStream::trampoline, call);
    if (e != cudaSuccess) {
      delete call;
      return cuda_status(e, "cudaLaunchHostFunc(s_, trampoline, call)", __FILE__, __LINE__);
    }
    return Status::ok();
  }
  Status record(Event& e) override {
    auto* ce = dynamic_cast<CudaEvent*>(&e);
    if (ce == nullptr) return invalid_argument("record: the event belongs to another kind of device");
    STRATA_CUDA_CHECK(cudaEventRecord(ce->ev_, s_));
    return Status::ok();
  }
  Status wait(Event& e) override {
    auto* ce = dynamic_cast<CudaEvent*>(&e);
    if (ce == nullptr) return invalid_argument("wait: the event belongs to another kind of device");
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(s_, ce->ev_, 0));
    return Status::ok();
  }
  Status synchronize() override {
    STRATA_CUDA_CHECK(cudaStreamSynchronize(s_));
    std::lock_guard<std::mutex> l(mu_);
    Status s = std::move(error_);
    error_ = Status::ok();
    return s;
  }
  void* native_handle() override { return s_; }

 private:
  struct Call {
    CudaStream* stream;
    std::function<Status()> fn;
  };
  static void CUDART_CB trampoline(void* arg) {
    Call* c = static_cast<Call*>(arg);
    Status s;
    try {
      s = c->fn();
    } catch (const std::exception& e) {
      s = internal_error(std::string("host callback threw: ") + e.what());
    }
    if (!s.is_ok()) {
      std::lock_guard<std::mutex> l(c->stream->mu_);
      if (c->stream->error_.is_ok()) c->stream->error_ = std::move(s);
    }
    delete c;
  }

  int device_;
  cudaStream_t s_;
  std::mutex mu_;
  Status error_;
};

class CudaDevice final : public Device {
 public:
  CudaDevice(int index, size_t budget, std::string desc) : index_(index), desc_(std::move(desc)), ledger_(budget) {}
  std::string name() const override { return desc_; }
  bool is_cuda() const override { return true; }
  StatusOr<void*> allocate(size_t bytes) override {
    STRATA_RETURN_IF_ERROR(ledger_.reserve(bytes));
    void* p = nullptr;
    cudaError_t e = cudaSetDevice(index_);
    if (e == cudaSuccess) e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (e != cudaSuccess) {
      ledger_.unreserve(bytes);
      return cuda_status(e, "cudaMalloc(&p, bytes)", __FILE__, __LINE__);
    }
    ledger_.add(p, bytes);
    return p;
  }
  Status free(void* p) override {
    if (p == nullptr) return Status::ok();
    STRATA_ASSIGN_OR_RETURN(size_t bytes, ledger_.remove(p));
    (void)bytes;
    STRATA_CUDA_CHECK(cudaFree(p));
    return Status::ok();
  }
  size_t budget_bytes() const override { return ledger_.budget(); }
  size_t used_bytes() const override { return ledger_.used(); }
  size_t peak_bytes() const override { return ledger_.peak(); }
  StatusOr<std::unique_ptr<Stream>> create_stream() override {
    STRATA_CUDA_CHECK(cudaSetDevice(index_));
    cudaStream_t s = nullptr;
    STRATA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return std::unique_ptr<Stream>(new CudaStream(index_, s));
  }
  StatusOr<std::unique_ptr<Event>> create_event() override {
    STRATA_CUDA_CHECK(cudaSetDevice(index_));
    cudaEvent_t e = nullptr;
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return std::unique_ptr<Event>(new CudaEvent(e));
  }
  Status record_native(Event& e, void* native_stream) override {
    auto* ce = dynamic_cast<CudaEvent*>(&e);
    if (ce == nullptr) return invalid_argument("record_native: the event belongs to another kind of device");
    STRATA_CUDA_CHECK(cudaEventRecord(ce->ev_, static_cast<cudaStream_t>(native_stream)));
    return Status::ok();
  }
  Status wait_native(void* native_stream, Event& e) override {
    auto* ce = dynamic_cast<CudaEvent*>(&e);
    if (ce == nullptr) return invalid_argument("wait_native: the event belongs to another kind of device");
    STRATA_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(native_stream), ce->ev_, 0));
    return Status::ok();
  }
  Status make_current() override {
    STRATA_CUDA_CHECK(cudaSetDevice(index_));
    return Status::ok();
  }

 private:
  const int index_;
  const std::string desc_;
  DeviceLedger ledger_;
};

}  // namespace

StatusOr<std::unique_ptr<Device>> make_cuda_device(int index, size_t budget_bytes) {
  if (index < 0) STRATA_CUDA_CHECK(cudaGetDevice(&index));  // the calling thread's current device
  STRATA_CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp prop{};
  STRATA_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  size_t free_b = 0, total_b = 0;
  STRATA_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  if (budget_bytes == 0) budget_bytes = free_b;
  if (budget_bytes > free_b)
    return out_of_memory("device budget of " + std::to_string(budget_bytes) + " bytes is more than the " +
                         std::to_string(free_b) + " bytes free on CUDA device " + std::to_string(index));
  char desc[512];
  std::snprintf(desc, sizeof(desc), "CUDA device %d: %s (sm_%d%d, %.1f GiB, budget %.1f GiB)", index, prop.name,
                prop.major, prop.minor, static_cast<double>(total_b) / (1 << 30),
                static_cast<double>(budget_bytes) / (1 << 30));
  return std::unique_ptr<Device>(new CudaDevice(index, budget_bytes, desc));
}

}  // namespace strata::offload
