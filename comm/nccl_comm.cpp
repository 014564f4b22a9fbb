// The NCCL backend of comm::Communicator: a non-blocking NCCL communicator (config.blocking = 0)
// on one CUDA device; each collective is queued on the caller's stream and followed by an event;
// wait() polls the event and ncclCommGetAsyncError under the deadline, and on a timeout or an
// asynchronous error aborts the communicator (ncclCommAbort), so no rank hangs on a dead peer.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "comm/communicator.h"
#include "src/common/cuda_check.h"

namespace strata::comm {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(Elem e) {
  switch (e) {
    case Elem::kF32:
      return ncclFloat32;
    case Elem::kBF16:
      return ncclBfloat16;
    case Elem::kF16:
      return ncclFloat16;
    case Elem::kF64:
      return ncclFloat64;
    case Elem::kI32:
      return ncclInt32;
  }
  return ncclFloat32;
}

// Restores the caller's current device on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&prev_);
    cudaSetDevice(device);
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

class NcclComm;

class NcclWork final : public Work {
 public:
  NcclWork(NcclComm* c, cudaEvent_t ev, std::string what) : comm_(c), ev_(ev), what_(std::move(what)) {}
  ~NcclWork() override {
    if (ev_ != nullptr) cudaEventDestroy(ev_);
  }
  Status wait() override;
  StatusOr<bool> test() override;

 private:
  NcclComm* comm_;
  cudaEvent_t ev_;
  std::string what_;
};

class NcclComm final : public Communicator {
 public:
  NcclComm(ncclComm_t c, int rank, int size, int device, const CommOptions& o)
      : comm_(c), rank_(rank), size_(size), device_(device), opts_(o) {}
  ~NcclComm() override {
    DeviceGuard g(device_);
    if (flag_ != nullptr) cudaFree(flag_);
    if (broken_) return;  // already aborted
    if (ncclCommFinalize(comm_) == ncclSuccess) (void)settle("ncclCommFinalize");
    ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  StatusOr<std::unique_ptr<Work>> all_reduce(const void* send, void* recv, size_t count, Elem e, ReduceOp op,
                                             void* stream) override {
    const std::string what = describe("all_reduce", count, e);
    const size_t b = count * elem_size(e);
    return staged(what, stream, send, b, recv, b, [&](const void* in, void* out, cudaStream_t s) {
      return ncclAllReduce(in, out, count, nccl_type(e), op == ReduceOp::kMax ? ncclMax : ncclSum, comm_, s);
    });
  }
  StatusOr<std::unique_ptr<Work>> reduce_scatter(const void* send, void* recv, size_t count, Elem e, ReduceOp op,
                                                 void* stream) override {
    const std::string what = describe("reduce_scatter", count, e);
    const size_t b = count * elem_size(e);
    return staged(
        what, stream, send, b * static_cast<size_t>(size_), recv, b, [&](const void* in, void* out, cudaStream_t s) {
          return ncclReduceScatter(in, out, count, nccl_type(e), op == ReduceOp::kMax ? ncclMax : ncclSum, comm_, s);
        });
  }
  StatusOr<std::unique_ptr<Work>> all_gather(const void* send, void* recv, size_t count, Elem e,
                                             void* stream) override {
    const std::string what = describe("all_gather", count, e);
    const size_t b = count * elem_size(e);
    return staged(what, stream, send, b, recv, b * static_cast<size_t>(size_),
                  [&](const void* in, void* out, cudaStream_t s) {
                    return ncclAllGather(in, out, count, nccl_type(e), comm_, s);
                  });
  }
  StatusOr<std::unique_ptr<Work>> broadcast(void* buf, size_t count, Elem e, int root, void* stream) override {
    const std::string what = describe("broadcast", count, e);
    if (root < 0 || root >= size_)
      return invalid_argument(what + ": root " + std::to_string(root) + " is not a rank of " + std::to_string(size_));
    const size_t b = count * elem_size(e);
    return staged(what, stream, buf, b, buf, b, [&](const void* in, void* out, cudaStream_t s) {
      return ncclBroadcast(in, out, count, nccl_type(e), root, comm_, s);
    });
  }
  Status barrier() override {
    DeviceGuard g(device_);
    if (flag_ == nullptr) STRATA_CUDA_CHECK(cudaMalloc(&flag_, sizeof(int)));
    STRATA_ASSIGN_OR_RETURN(auto w, all_reduce(flag_, flag_, 1, Elem::kI32, ReduceOp::kSum, nullptr));
    return w->wait();
  }

  // Polls the communicator's asynchronous state: ok, in progress (returned as kTimeout-free
  // "not yet" through *pending), or an error that aborts it.
  Status poll(const std::string& what, bool* pending) {
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess) async = ncclSystemError;
    *pending = async == ncclInProgress;
    if (async == ncclSuccess || async == ncclInProgress) return Status::ok();
    abort();
    return Status(StatusCode::kNccl,
                  what + " failed: " + ncclGetErrorString(async) + " (the communicator was aborted)");
  }
  void abort() {
    if (!broken_) ncclCommAbort(comm_);
    broken_ = true;
  }
  Status set_timeout(std::chrono::milliseconds t) override {
    if (t.count() <= 0) return invalid_argument("comm timeout must be > 0 ms, not " + std::to_string(t.count()));
    opts_.timeout = t;
    return Status::ok();
  }
  std::chrono::milliseconds timeout() const override { return opts_.timeout; }
  const CommOptions& options() const { return opts_; }
  int device() const { return device_; }

 private:
  std::string describe(const char* op, size_t count, Elem e) const {
    return std::string("NCCL ") + op + " of " + std::to_string(count) + " x " + elem_name(e) + " across " +
           std::to_string(size_) + " ranks";
  }
  // Waits until a non-blocking NCCL call has been issued (ncclInProgress → ncclSuccess).
  Status settle(const std::string& what) {
    const Clock::time_point deadline = Clock::now() + opts_.timeout;
    for (;;) {
      bool pending = false;
      STRATA_RETURN_IF_ERROR(poll(what, &pending));
      if (!pending) return Status::ok();
      if (Clock::now() > deadline) {
        abort();
        return Status(StatusCode::kTimeout, what + " was not issued within " + std::to_string(opts_.timeout.count()) +
                                                " ms; the communicator was aborted");
      }
      std::this_thread::yield();
    }
  }
  // Buffers in host memory (the engine's control values, checkpoint gathers, offloaded shards)
  // go through device copies: copied in, the collective on the legacy default stream, waited for,
  // copied out. Such a call has completed when it returns. Device buffers go straight to NCCL on
  // `stream`. In-place use (send inside recv) stays in place on the copy.
  template <class F>
  StatusOr<std::unique_ptr<Work>> staged(const std::string& what, void* stream, const void* send, size_t send_bytes,
                                         void* recv, size_t recv_bytes, F&& call) {
    const bool host_in = is_host(send), host_out = is_host(recv);
    if (!host_in && !host_out) return issue(what, stream, [&](cudaStream_t s) { return call(send, recv, s); });
    if (broken_)
      return Status(StatusCode::kNccl, what + ": the communicator was aborted after an earlier error or timeout");
    DeviceGuard g(device_);
    const auto* in_b = static_cast<const uint8_t*>(send);
    const auto* out_b = static_cast<const uint8_t*>(recv);
    const bool in_place = in_b >= out_b && in_b + send_bytes <= out_b + recv_bytes;
    uint8_t* dev_out = nullptr;
    uint8_t* dev_in = nullptr;
    auto release = [&] {
      if (dev_in != nullptr && !in_place) cudaFree(dev_in);
      if (dev_out != nullptr) cudaFree(dev_out);
    };
    Status st = checked(cudaMalloc(reinterpret_cast<void**>(&dev_out), recv_bytes), "cudaMalloc");
    if (st.is_ok() && in_place) {
      st = checked(cudaMemcpy(dev_out, recv, recv_bytes, cudaMemcpyDefault), "cudaMemcpy");
      dev_in = dev_out + (in_b - out_b);
    } else if (st.is_ok()) {
      st = checked(cudaMalloc(reinterpret_cast<void**>(&dev_in), send_bytes), "cudaMalloc");
      if (st.is_ok()) st = checked(cudaMemcpy(dev_in, send, send_bytes, cudaMemcpyDefault), "cudaMemcpy");
    }
    if (st.is_ok()) {
      auto w = issue(what, nullptr, [&](cudaStream_t s) { return call(dev_in, dev_out, s); });
      st = w.is_ok() ? w.value()->wait() : w.status();
    }
    if (st.is_ok()) st = checked(cudaMemcpy(recv, dev_out, recv_bytes, cudaMemcpyDefault), "cudaMemcpy");
    release();
    if (!st.is_ok()) return std::move(st).annotate(what + " (host buffers staged through the device)");
    return std::unique_ptr<Work>(new NcclWork(this, nullptr, what));
  }
  static Status checked(cudaError_t e, const char* call) {
    return e == cudaSuccess ? Status::ok() : cuda_status(e, call, __FILE__, __LINE__);
  }
  static bool is_host(const void* p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      (void)cudaGetLastError();
      return true;
    }
    return a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged;
  }

  template <class F>
  StatusOr<std::unique_ptr<Work>> issue(const std::string& what, void* stream, F&& call) {
    if (broken_)
      return Status(StatusCode::kNccl, what + ": the communicator was aborted after an earlier error or timeout");
    DeviceGuard g(device_);
    const auto s = static_cast<cudaStream_t>(stream);
    const ncclResult_t r = call(s);
    if (r != ncclSuccess && r != ncclInProgress) {
      abort();
      return Status(StatusCode::kNccl, what + " failed: " + ncclGetErrorString(r));
    }
    STRATA_RETURN_IF_ERROR(settle(what));
    cudaEvent_t ev = nullptr;
    STRATA_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    if (const cudaError_t err = cudaEventRecord(ev, s); err != cudaSuccess) {
      cudaEventDestroy(ev);
      return cuda_status(err, "cudaEventRecord", __FILE__, __LINE__);
    }
    return std::unique_ptr<Work>(new NcclWork(this, ev, what));
  }

  ncclComm_t comm_;
  int rank_, size_, device_;
  CommOptions opts_;
  bool broken_ = false;
  int* flag_ = nullptr;
};

StatusOr<bool> NcclWork::test() {
  if (ev_ == nullptr) return true;
  DeviceGuard g(comm_->device());
  const cudaError_t q = cudaEventQuery(ev_);
  if (q == cudaSuccess) {
    cudaEventDestroy(ev_);
    ev_ = nullptr;
    return true;
  }
  if (q != cudaErrorNotReady) return cuda_status(q, "cudaEventQuery", __FILE__, __LINE__);
  bool pending = false;
  STRATA_RETURN_IF_ERROR(comm_->poll(what_, &pending));
  return false;
}

Status NcclWork::wait() {
  if (ev_ == nullptr) return Status::ok();
  DeviceGuard g(comm_->device());
  const Clock::time_point deadline = Clock::now() + comm_->options().timeout;
  for (;;) {
    const cudaError_t q = cudaEventQuery(ev_);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) return cuda_status(q, "cudaEventQuery", __FILE__, __LINE__);
    bool pending = false;
    STRATA_RETURN_IF_ERROR(comm_->poll(what_, &pending));
    if (Clock::now() > deadline) {
      comm_->abort();
      return Status(StatusCode::kTimeout, what_ + " did not complete within " +
                                              std::to_string(comm_->options().timeout.count()) +
                                              " ms (a rank died, hangs, or did not call the same collective); the "
                                              "communicator was aborted");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  cudaEventDestroy(ev_);
  ev_ = nullptr;
  return Status::ok();
}

}  // namespace

std::string nccl_library_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown (ncclGetVersion failed)";
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

StatusOr<NcclId> nccl_unique_id() {
  ncclUniqueId id;
  if (const ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
    return Status(StatusCode::kNccl, std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(r));
  NcclId out{};
  static_assert(sizeof(id.internal) == out.size(), "an NCCL unique id is 128 bytes");
  std::memcpy(out.data(), id.internal, out.size());
  return out;
}

StatusOr<std::unique_ptr<Communicator>> create_nccl(const NcclId& id, int rank, int size, int device,
                                                    const CommOptions& options) {
  if (size < 1 || rank < 0 || rank >= size)
    return invalid_argument("NCCL communicator: rank " + std::to_string(rank) + " is not in a world of " +
                            std::to_string(size));
  if (options.timeout.count() <= 0) return invalid_argument("comm timeout must be > 0 ms");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return Status(StatusCode::kUnsupported, "the NCCL communicator needs a GPU, and none is usable here");
  }
  if (device < 0 || device >= count)
    return invalid_argument("NCCL communicator: CUDA device " + std::to_string(device) + " of " +
                            std::to_string(count));
  DeviceGuard g(device);
  ncclUniqueId uid;
  std::memcpy(uid.internal, id.data(), id.size());
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t c = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&c, size, uid, rank, &config);
  const Clock::time_point deadline = Clock::now() + options.timeout;
  while (r == ncclInProgress) {
    if (Clock::now() > deadline) {
      ncclCommAbort(c);
      return Status(StatusCode::kTimeout, "NCCL communicator of " + std::to_string(size) + " ranks (this rank " +
                                              std::to_string(rank) + ") did not form within " +
                                              std::to_string(options.timeout.count()) + " ms");
    }
    std::this_thread::yield();
    if (ncclCommGetAsyncError(c, &r) != ncclSuccess) r = ncclSystemError;
  }
  if (r != ncclSuccess) {
    if (c != nullptr) ncclCommAbort(c);
    return Status(StatusCode::kNccl, std::string("ncclCommInitRankConfig failed: ") + ncclGetErrorString(r));
  }
  return std::unique_ptr<Communicator>(new NcclComm(c, rank, size, device, options));
}

}  // namespace strata::comm
