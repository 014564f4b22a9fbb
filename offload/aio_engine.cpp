// The libaio engine: one shared queue of blocks, worker threads each with an io context.
#include "offload/aio_engine.h"

#include <cerrno>
#include <cstring>

#include "src/common/check.h"

namespace strata::offload {

namespace detail {
struct IoState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status status;  // first error of any block, then the result of on_done
  size_t blocks_left = 0;
  std::function<Status(Status)> on_done;
  std::string path;
};
}  // namespace detail

using detail::IoState;

Status IoHandle::wait() const {
  if (!state_) return failed_precondition("wait on an empty IoHandle");
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  return state_->status;
}

bool IoHandle::done() const {
  if (!state_) return true;
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->done;
}

IoHandle IoHandle::finished(Status s) {
  auto st = std::make_shared<IoState>();
  st->done = true;
  st->status = std::move(s);
  return IoHandle(std::move(st));
}

StatusOr<std::unique_ptr<AioEngine>> AioEngine::create(const AioConfig& config, IoSys* sys) {
  STRATA_RETURN_IF_ERROR(validate_aio_config(config));
  std::unique_ptr<AioEngine> e(new AioEngine(config, sys != nullptr ? sys : &real_io_sys()));
  for (int i = 0; i < config.intra_op_parallelism; ++i) {
    auto w = std::make_unique<Worker>();
    const int rc = e->sys_->io_setup(config.queue_depth, &w->ctx);
    if (rc < 0) {
      Status s = errno_status(-rc, "io_setup(queue_depth, &ctx)", __FILE__, __LINE__);
      return Status(s.code(), s.message() + " (queue_depth " + std::to_string(config.queue_depth) + " x " +
                                  std::to_string(config.intra_op_parallelism) +
                                  " threads; the system-wide limit is /proc/sys/fs/aio-max-nr)");
    }
    e->workers_.push_back(std::move(w));
  }
  for (auto& w : e->workers_) w->thread = std::thread([eng = e.get(), wp = w.get()] { eng->run(wp); });
  return e;
}

AioEngine::~AioEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
    if (w->ctx != nullptr) sys_->io_destroy(w->ctx);
  }
}

IoHandle AioEngine::submit(IoOp op, int fd, const std::string& path, void* buf, uint64_t offset, size_t length,
                           bool direct, std::function<Status(Status)> on_done, IoPriority priority) {
  const char* what = op == IoOp::kRead ? "read" : "write";
  if (length == 0 || buf == nullptr || fd < 0)
    return IoHandle::finished(
        invalid_argument(std::string(what) + " of " + path + ": empty length, NULL buffer or bad fd"));
  if (direct && (reinterpret_cast<uintptr_t>(buf) % 4096 != 0 || offset % 4096 != 0 || length % 4096 != 0)) {
    return IoHandle::finished(invalid_argument(std::string(what) + " of " + path + " at offset " +
                                               std::to_string(offset) + ", length " + std::to_string(length) +
                                               ": O_DIRECT needs buffer, offset and length aligned to 4096"));
  }
  auto st = std::make_shared<IoState>();
  st->on_done = std::move(on_done);
  st->path = path;
  const size_t bs = config_.block_size;
  st->blocks_left = (length + bs - 1) / bs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++outstanding_;
    const bool bg = priority == IoPriority::kBackground;
    for (size_t done = 0; done < length; done += bs) {
      (bg ? background_ : queue_)
          .push_back(
              Block{st, op, fd, static_cast<uint8_t*>(buf) + done, offset + done, std::min(bs, length - done), bg});
    }
  }
  work_cv_.notify_all();
  return IoHandle(st);
}

void AioEngine::wait_all() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return outstanding_ == 0; });
}

void AioEngine::finish_block(Block& b, const Status& s) {
  IoState& st = *b.req;
  bool last = false;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (!s.is_ok() && st.status.is_ok()) st.status = s;
    last = --st.blocks_left == 0;
  }
  if (!last) return;
  Status final_status;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    final_status = st.status;
  }
  if (st.on_done) final_status = st.on_done(final_status);
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.status = std::move(final_status);
    st.done = true;
  }
  st.cv.notify_all();
  {
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
  }
  idle_cv_.notify_all();
}

namespace {

Status block_error(IoOp op, const std::string& path, uint64_t offset, size_t length, int err) {
  const std::string call = std::string("libaio ") + (op == IoOp::kRead ? "read" : "write") + " of " + path +
                           " at offset " + std::to_string(offset) + ", length " + std::to_string(length);
  return errno_status(err, call.c_str(), __FILE__, __LINE__);
}

}  // namespace

void AioEngine::run(Worker* w) {
  const size_t qd = static_cast<size_t>(config_.queue_depth);
  struct Slot {
    iocb cb;
    Block blk;
    bool busy = false;
  };
  std::vector<Slot> slots(qd);
  std::vector<io_event> events(qd);
  std::deque<Block> ready;  // taken from the queues (or to be retried), not yet submitted
  size_t inflight = 0;
  size_t background = 0;  // background blocks ready or in flight
  const size_t bg_cap = static_cast<size_t>(config_.background_depth);

  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (inflight == 0 && ready.empty())
        work_cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !background_.empty(); });
      if (stop_ && queue_.empty() && background_.empty() && inflight == 0 && ready.empty()) return;
      while (inflight + ready.size() < qd && !queue_.empty()) {
        ready.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      while (inflight + ready.size() < qd && background < bg_cap && !background_.empty()) {
        ready.push_back(std::move(background_.front()));
        background_.pop_front();
        ++background;
      }
    }

    // Submit what is ready, in batches (or one by one with single_submit).
    std::vector<iocb*> batch;
    for (size_t s = 0; s < qd && batch.size() < ready.size(); ++s) {
      if (slots[s].busy) continue;
      Slot& slot = slots[s];
      slot.blk = ready[batch.size()];
      slot.busy = true;
      if (slot.blk.op == IoOp::kRead) {
        io_prep_pread(&slot.cb, slot.blk.fd, slot.blk.buf, slot.blk.length, static_cast<long long>(slot.blk.offset));
      } else {
        io_prep_pwrite(&slot.cb, slot.blk.fd, slot.blk.buf, slot.blk.length, static_cast<long long>(slot.blk.offset));
      }
      slot.cb.data = &slot;
      batch.push_back(&slot.cb);
    }
    size_t submitted = 0;
    bool retry_later = false;
    while (submitted < batch.size()) {
      const long n = config_.single_submit ? 1 : static_cast<long>(batch.size() - submitted);
      const int rc = sys_->io_submit(w->ctx, n, batch.data() + submitted);
      if (rc > 0) {
        submitted += static_cast<size_t>(rc);
      } else if (rc == -EAGAIN || rc == -EINTR || rc == 0) {
        retry_later = true;  // the kernel is full or interrupted: reap, then submit again
        break;
      } else {
        // This block cannot be submitted at all: it fails, the rest go on.
        Slot* slot = static_cast<Slot*>(batch[submitted]->data);
        slot->busy = false;
        background -= slot->blk.background ? 1 : 0;
        finish_block(slot->blk,
                     block_error(slot->blk.op, slot->blk.req->path, slot->blk.offset, slot->blk.length, -rc));
        slot->blk = Block{};
        batch.erase(batch.begin() + static_cast<long>(submitted));
        ready.erase(ready.begin() + static_cast<long>(submitted));
      }
    }
    for (size_t i = submitted; i < batch.size(); ++i) static_cast<Slot*>(batch[i]->data)->busy = false;
    ready.erase(ready.begin(), ready.begin() + static_cast<long>(submitted));
    inflight += submitted;

    if (inflight == 0) {
      if (retry_later) std::this_thread::sleep_for(std::chrono::microseconds(100));
      continue;
    }
    // Reap: one at a time and refill at once (overlap_events), or the whole batch.
    const long min_nr = config_.overlap_events ? 1 : static_cast<long>(inflight);
    timespec timeout{0, 50'000'000};  // wake now and then to take new work
    const int got = sys_->io_getevents(w->ctx, min_nr, static_cast<long>(qd), events.data(), &timeout);
    if (got < 0) continue;  // EINTR (others cannot happen with a valid context); try again
    for (int e = 0; e < got; ++e) {
      Slot& slot = *static_cast<Slot*>(events[static_cast<size_t>(e)].data);
      const long res = static_cast<long>(events[static_cast<size_t>(e)].res);
      Block blk = std::move(slot.blk);
      slot.busy = false;
      --inflight;
      // Done with this block unless it goes back to `ready` below.
      const bool requeued = (res < 0 && (res == -EINTR || res == -EAGAIN)) ||
                            (res >= 0 && static_cast<size_t>(res) < blk.length && res != 0);
      if (blk.background && !requeued) --background;
      if (res < 0) {
        if (res == -EINTR || res == -EAGAIN) {
          ready.push_front(std::move(blk));
        } else {
          finish_block(blk, block_error(blk.op, blk.req->path, blk.offset, blk.length, static_cast<int>(-res)));
        }
      } else if (static_cast<size_t>(res) < blk.length) {
        if (res == 0) {
          const std::string what = blk.op == IoOp::kRead ? "read" : "write";
          finish_block(blk, Status(StatusCode::kDataLoss, what + " of " + blk.req->path + " at offset " +
                                                              std::to_string(blk.offset) + " transferred 0 of " +
                                                              std::to_string(blk.length) +
                                                              " bytes (file truncated underneath?)"));
        } else {  // short transfer: resubmit the remainder
          blk.buf += res;
          blk.offset += static_cast<uint64_t>(res);
          blk.length -= static_cast<size_t>(res);
          ready.push_front(std::move(blk));
        }
      } else {
        finish_block(blk, Status::ok());
      }
    }
  }
}

}  // namespace strata::offload
