// `strata env`: what this machine and this build give an offload run — the questions DeepSpeed's
// ds_report answers and the environment problems behind most offload failures: the build (CUDA,
// NCCL, MPI, the CPU kernels chosen), the GPUs seen, host memory, the pinned-memory limit, the
// kernel's AIO limits and, for --nvme-path DIR, the file system, O_DIRECT, free space and a short
// write / read probe through strata's own NVMe store. Problems are listed at the end as advice.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "kernels/cpu/isa.h"
#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "src/common/fs.h"
#include "src/common/host_memory.h"
#include "src/common/units.h"

namespace {

using namespace strata;
using Clock = std::chrono::steady_clock;

void row(const std::string& key, const std::string& value) {
  std::printf("%-26s %s\n", (key + ":").c_str(), value.c_str());
}

// A /proc/sys value, or -1.
long long proc_value(const char* path) {
  auto t = fs::read_file(path);
  if (!t.is_ok()) return -1;
  return std::strtoll(t.value().c_str(), nullptr, 10);
}

std::string fs_type_name(long type) {
  switch (static_cast<unsigned long>(type)) {
    case 0xEF53:
      return "ext2/3/4";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x01021994:
      return "tmpfs";
    case 0x6969:
      return "nfs";
    case 0x794c7630:
      return "overlayfs";
    case 0x2fc12fc1:
      return "zfs";
    case 0xF2F52010:
      return "f2fs";
    case 0xFF534D42:
      return "cifs";
    case 0x65735546:
      return "fuse";
    default:
      break;
  }
  char b[32];
  std::snprintf(b, sizeof(b), "unknown (0x%lx)", static_cast<unsigned long>(type));
  return b;
}

// Writes then reads `total` bytes in `piece`-sized tensors through an NvmeStore (libaio,
// O_DIRECT) in `dir`; GB/s of each, or the error. Removes what it wrote.
Status probe(const std::string& dir, size_t total, size_t piece, double* write_gbs, double* read_gbs) {
  offload::NvmeStoreOptions o;
  o.dir = dir;
  o.checksum = false;  // the disk's speed, not the hash's
  STRATA_ASSIGN_OR_RETURN(auto store, offload::NvmeStore::open(o));
  const size_t n = total / piece;
  std::vector<offload::AlignedBuffer> bufs;
  for (size_t i = 0; i < std::min<size_t>(n, 4); ++i) {
    STRATA_ASSIGN_OR_RETURN(auto b, offload::AlignedBuffer::create(piece, offload::PinMode::kNone));
    for (size_t j = 0; j < piece; j += 4096) b.bytes()[j] = static_cast<uint8_t>(i + j);
    bufs.push_back(std::move(b));
  }
  auto run = [&](bool write) -> StatusOr<double> {
    const Clock::time_point t0 = Clock::now();
    std::vector<offload::IoHandle> io(bufs.size());
    for (size_t i = 0; i < n; ++i) {
      offload::IoHandle& h = io[i % bufs.size()];
      if (h.valid()) STRATA_RETURN_IF_ERROR(h.wait());
      const std::string key = "probe" + std::to_string(i);
      h = write ? store->put(key, bufs[i % bufs.size()], piece) : store->get(key, bufs[i % bufs.size()], piece);
    }
    for (auto& h : io)
      if (h.valid()) STRATA_RETURN_IF_ERROR(h.wait());
    return static_cast<double>(n * piece) / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
  };
  STRATA_ASSIGN_OR_RETURN(*write_gbs, run(true));
  STRATA_ASSIGN_OR_RETURN(*read_gbs, run(false));
  return store->close();
}

}  // namespace

int env_command(const std::vector<std::string>& args) {
  std::string nvme;
  double probe_mib = 512;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nvme-path" && i + 1 < args.size()) {
      nvme = args[++i];
    } else if (args[i] == "--probe-size" && i + 1 < args.size()) {
      auto v = parse_size(args[++i], "--probe-size", size_t{16} << 20, size_t{64} << 30);
      if (!v.is_ok()) {
        std::fprintf(stderr, "strata env: %s\n", v.status().message().c_str());
        return 1;
      }
      probe_mib = static_cast<double>(v.value()) / (1 << 20);
    } else {
      std::fprintf(stderr, "usage: strata env [--nvme-path DIR] [--probe-size SIZE (default 512M)]\n");
      return 2;
    }
  }
  std::vector<std::string> advice;
  row("strata", STRATA_VERSION_STRING);
#if defined(STRATA_HAVE_CUDA)
  row("CUDA", "built (kernels for the GPU compute path and the device tier)");
#else
  row("CUDA", "not built (configured without nvcc or with STRATA_CUDA=OFF)");
#endif
  row("NCCL", comm::nccl_library_version());
  row("MPI", comm::mpi_library_version());
  const kernels::Isa isa = kernels::best_isa();
  std::string isas;
  for (kernels::Isa i : {kernels::Isa::kScalar, kernels::Isa::kAvx2, kernels::Isa::kAvx512})
    if (kernels::isa_supported(i)) isas += (isas.empty() ? "" : ", ") + std::string(kernels::isa_name(i));
  row("CPU kernels", std::string(kernels::isa_name(isa)) + " (supported here: " + isas + ")");
  row("CPU threads", std::to_string(std::thread::hardware_concurrency()));

  std::string why;
  const std::vector<std::string> gpus = offload::describe_cuda_devices(&why);
  if (gpus.empty()) row("GPUs", "none usable: " + why + " (training runs on the host-emulated device)");
  for (const std::string& g : gpus) row("GPU", g);

  row("host memory",
      format_bytes(host_memory_total()) + " in all, " + format_bytes(host_memory_available()) + " available");
  rlimit lim{};
  if (::getrlimit(RLIMIT_MEMLOCK, &lim) == 0) {
    const bool unlimited = lim.rlim_cur == RLIM_INFINITY;
    row("pinned limit (ulimit -l)", unlimited ? "unlimited" : format_bytes(lim.rlim_cur));
    if (!unlimited && lim.rlim_cur < (size_t{1} << 30) && !gpus.empty())
      advice.push_back("ulimit -l is " + format_bytes(lim.rlim_cur) +
                       ": pinned host buffers larger than that fall back to pageable memory (slower copies); raise it "
                       "(limits.conf memlock, or docker --ulimit memlock=-1)");
  }
  const long long aio_max = proc_value("/proc/sys/fs/aio-max-nr"), aio_nr = proc_value("/proc/sys/fs/aio-nr");
  if (aio_max >= 0) {
    row("AIO requests",
        std::to_string(aio_nr) + " in use of " + std::to_string(aio_max) + " (/proc/sys/fs/aio-max-nr)");
    if (aio_max - aio_nr < 4096)
      advice.push_back("only " + std::to_string(aio_max - aio_nr) +
                       " AIO requests are left system-wide: NVMe stores may fail to start (io_setup EAGAIN); raise "
                       "fs.aio-max-nr (sysctl -w fs.aio-max-nr=1048576)");
  }

  if (!nvme.empty()) {
    struct statfs sf {};
    if (!fs::is_dir(nvme) || ::statfs(nvme.c_str(), &sf) != 0) {
      row("nvme_path", nvme + ": not an existing directory");
      advice.push_back("--nvme-path " + nvme + " does not exist: create it on the NVMe file system");
    } else {
      row("nvme_path", nvme);
      row("  file system", fs_type_name(sf.f_type));
      struct statvfs sv {};
      if (::statvfs(nvme.c_str(), &sv) == 0)
        row("  free space", format_bytes(static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize) + " of " +
                                format_bytes(static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize));
      const std::string p = nvme + "/strata-env.direct_probe";
      const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
      const int err = errno;
      if (fd >= 0) {
        ::close(fd);
        ::unlink(p.c_str());
      }
      row("  O_DIRECT", fd >= 0         ? "yes"
                        : err == EINVAL ? "no (the file system refuses it)"
                                        : std::string("unknown: ") + std::strerror(err));
      if (fd < 0 && err == EINVAL)
        advice.push_back("the file system of " + nvme +
                         " has no O_DIRECT: set aio.allow_buffered_io = true (slower) or use "
                         "a local ext4 / xfs NVMe");
      const size_t piece = size_t{16} << 20;
      double w = 0, r = 0;
      Status s = probe(nvme, static_cast<size_t>(probe_mib) << 20, piece, &w, &r);
      if (s.is_ok()) {
        char b[128];
        std::snprintf(b, sizeof(b), "write %.2f GB/s, read %.2f GB/s (%.0f MiB in 16 MiB tensors, libaio)", w, r,
                      probe_mib);
        row("  probe", b);
      } else {
        row("  probe", "failed: " + s.to_string());
        advice.push_back("the NVMe probe failed: " + s.message());
      }
    }
  }
  if (advice.empty()) {
    std::printf("no problems found\n");
  } else {
    for (const std::string& a : advice) std::printf("advice: %s\n", a.c_str());
  }
  return 0;
}
