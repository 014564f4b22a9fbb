// Real system calls for the NVMe tier.
#include "offload/io_sys.h"

#include <fcntl.h>
#include <unistd.h>

namespace strata::offload {
namespace {

class RealIoSys final : public IoSys {
 public:
  int open(const char* path, int flags, mode_t mode) override { return ::open(path, flags, mode); }
  int close(int fd) override { return ::close(fd); }
  int fallocate(int fd, int mode, off_t offset, off_t len) override { return ::fallocate(fd, mode, offset, len); }
  int ftruncate(int fd, off_t len) override { return ::ftruncate(fd, len); }
  int fstat(int fd, struct stat* st) override { return ::fstat(fd, st); }
  int unlink(const char* path) override { return ::unlink(path); }
  int io_setup(int maxevents, io_context_t* ctx) override { return ::io_setup(maxevents, ctx); }
  int io_destroy(io_context_t ctx) override { return ::io_destroy(ctx); }
  int io_submit(io_context_t ctx, long n, struct iocb** iocbs) override { return ::io_submit(ctx, n, iocbs); }
  int io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event* events, struct timespec* t) override {
    return ::io_getevents(ctx, min_nr, nr, events, t);
  }
};

}  // namespace

IoSys& real_io_sys() {
  static RealIoSys sys;
  return sys;
}

}  // namespace strata::offload
