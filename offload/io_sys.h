// The system calls the NVMe tier makes, behind one virtual interface: the real ones in production,
// a fault-injecting wrapper in tests (tests/offload/faulty_io_sys.h). Every call keeps the
// kernel's convention (libaio: negative errno; POSIX: -1 with errno).
#pragma once

#include <libaio.h>
#include <sys/stat.h>
#include <sys/types.h>

namespace strata::offload {

class IoSys {
 public:
  virtual ~IoSys() = default;
  virtual int open(const char* path, int flags, mode_t mode) = 0;
  virtual int close(int fd) = 0;
  virtual int fallocate(int fd, int mode, off_t offset, off_t len) = 0;
  virtual int ftruncate(int fd, off_t len) = 0;
  virtual int fstat(int fd, struct stat* st) = 0;
  virtual int unlink(const char* path) = 0;
  virtual int io_setup(int maxevents, io_context_t* ctx) = 0;                // 0 or -errno
  virtual int io_destroy(io_context_t ctx) = 0;                              // 0 or -errno
  virtual int io_submit(io_context_t ctx, long n, struct iocb** iocbs) = 0;  // count or -errno
  virtual int io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event* events,
                           struct timespec* timeout) = 0;  // count or -errno
};

// The process-wide real implementation.
IoSys& real_io_sys();

}  // namespace strata::offload
