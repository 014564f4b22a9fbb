// A fault-injecting IoSys for tests: passes every call to the real system, except those it was
// told to break — io_submit answering EAGAIN or an errno, completions reporting an errno or a
// short transfer, fallocate failing, O_DIRECT refused at open.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "offload/io_sys.h"

namespace strata::testing {

class FaultyIoSys final : public offload::IoSys {
 public:
  std::atomic<int> submit_eagain{0};                // the next N io_submit calls answer -EAGAIN
  std::atomic<int> submit_error{0};                 // errno for the next io_submit call (then cleared)
  std::atomic<int> completion_error{0};             // errno for completions of writes ...
  std::atomic<int> completion_error_count{0};       // ... this many of them
  std::atomic<bool> completion_error_reads{false};  // apply completion_error to reads instead
  std::atomic<int> short_transfers{0};              // the next N completions report half (4096-aligned) the length
  std::atomic<int> write_completion_delay_us{0};    // each reaped write completion is held back this long
  std::atomic<int> fallocate_error{0};              // errno for every fallocate while set
  std::atomic<bool> refuse_o_direct{false};         // open with O_DIRECT fails with EINVAL
  std::atomic<int> submits{0}, completions{0};

  int open(const char* path, int flags, mode_t mode) override {
    if (refuse_o_direct && (flags & O_DIRECT)) {
      errno = EINVAL;
      return -1;
    }
    return real().open(path, flags, mode);
  }
  int close(int fd) override { return real().close(fd); }
  int fallocate(int fd, int mode, off_t offset, off_t len) override {
    if (const int e = fallocate_error.load()) {
      errno = e;
      return -1;
    }
    return real().fallocate(fd, mode, offset, len);
  }
  int ftruncate(int fd, off_t len) override { return real().ftruncate(fd, len); }
  int fstat(int fd, struct stat* st) override { return real().fstat(fd, st); }
  int unlink(const char* path) override { return real().unlink(path); }
  int io_setup(int n, io_context_t* ctx) override { return real().io_setup(n, ctx); }
  int io_destroy(io_context_t ctx) override { return real().io_destroy(ctx); }
  int io_submit(io_context_t ctx, long n, struct iocb** iocbs) override {
    ++submits;
    if (submit_eagain > 0) {
      --submit_eagain;
      return -EAGAIN;
    }
    if (const int e = submit_error.exchange(0)) return -e;
    return real().io_submit(ctx, n, iocbs);
  }
  int io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event* ev, struct timespec* t) override {
    const int got = real().io_getevents(ctx, min_nr, nr, ev, t);
    for (int i = 0; i < got; ++i) {
      ++completions;
      const iocb* cb = ev[i].obj;
      const bool is_read = cb->aio_lio_opcode == IO_CMD_PREAD;
      if (!is_read && write_completion_delay_us > 0)
        std::this_thread::sleep_for(std::chrono::microseconds(write_completion_delay_us.load()));
      const long len = static_cast<long>(cb->u.c.nbytes);
      if (completion_error_count > 0 && is_read == completion_error_reads.load()) {
        --completion_error_count;
        ev[i].res = static_cast<unsigned long>(-static_cast<long>(completion_error.load()));
      } else if (short_transfers > 0 && len >= 8192 && static_cast<long>(ev[i].res) == len) {
        --short_transfers;
        ev[i].res = static_cast<unsigned long>(len / 2 / 4096 * 4096);
      }
    }
    return got;
  }

 private:
  static offload::IoSys& real() { return offload::real_io_sys(); }
};

}  // namespace strata::testing
