// Asynchronous file I/O on libaio: requests split into block_size pieces, up to queue_depth in
// flight per thread, kept topped up as completions arrive, over intra_op_parallelism threads that
// share one request queue. Short transfers are resubmitted for the remainder, EINTR / EAGAIN
// retried; any other error completes the request with a Status naming file, offset, length and
// errno. Not a file manager: callers (NvmeStore) open the files and own the buffers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "offload/aio_config.h"
#include "offload/io_sys.h"
#include "src/common/status.h"

namespace strata::offload {

enum class IoOp { kRead, kWrite };
// Demand: someone will wait for it soon (a param the forward needs). Background: bulk traffic
// whose latency matters less (the optimizer's state read ahead and written behind, gradients):
// each thread keeps at most AioConfig::background_depth of its blocks in flight, so that a demand
// request queues behind that much at most, not behind everything submitted.
enum class IoPriority { kDemand, kBackground };

namespace detail {
struct IoState;
}

// The caller's view of one request. Copyable; all copies see the same request.
class IoHandle {
 public:
  IoHandle() = default;
  // Blocks until the request (and its completion step) finished; returns its Status.
  Status wait() const;
  // True once finished; never blocks.
  bool done() const;
  bool valid() const { return state_ != nullptr; }
  // A handle that is already finished with `s` (argument errors found before any I/O).
  static IoHandle finished(Status s);

 private:
  friend class AioEngine;
  explicit IoHandle(std::shared_ptr<detail::IoState> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::IoState> state_;
};

class AioEngine {
 public:
  static StatusOr<std::unique_ptr<AioEngine>> create(const AioConfig& config, IoSys* sys = nullptr);
  ~AioEngine();  // finishes queued work, then stops the threads
  AioEngine(const AioEngine&) = delete;
  AioEngine& operator=(const AioEngine&) = delete;

  // Queues a read or write of `length` bytes at `offset` of `fd` from/into `buf`, which must stay
  // valid until the handle is done. With `direct` (an O_DIRECT fd) buf, offset and length must be
  // multiples of 4096. `on_done` (optional) runs on an engine thread with the request's Status
  // once all its blocks finished, and its result becomes the handle's Status (e.g. a checksum
  // check after a read). `path` names the file in error messages.
  IoHandle submit(IoOp op, int fd, const std::string& path, void* buf, uint64_t offset, size_t length, bool direct,
                  std::function<Status(Status)> on_done = {}, IoPriority priority = IoPriority::kDemand);

  // Waits until every request submitted so far is done.
  void wait_all();
  const AioConfig& config() const { return config_; }

 private:
  struct Block {  // one piece (<= block_size) of a request
    std::shared_ptr<detail::IoState> req;
    IoOp op = IoOp::kRead;
    int fd = -1;
    uint8_t* buf = nullptr;
    uint64_t offset = 0;
    size_t length = 0;
    bool background = false;
  };
  struct Worker {  // a thread and its io context
    io_context_t ctx = nullptr;
    std::thread thread;
  };
  AioEngine(const AioConfig& config, IoSys* sys) : config_(config), sys_(sys) {}
  void run(Worker* w);
  void finish_block(Block& b, const Status& s);

  const AioConfig config_;
  IoSys* const sys_;
  std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<Block> queue_, background_;  // demand blocks, background blocks
  bool stop_ = false;
  size_t outstanding_ = 0;  // requests not yet done
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace strata::offload
