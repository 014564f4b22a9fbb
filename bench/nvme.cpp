// bench/nvme: sequential write then read of >= 4 GiB of tensors through NvmeStore, and in the
// same run fio (ioengine=libaio, direct=1) on the same directory with the same block size, queue
// depth and thread count. Prints GB/s and the ratio to fio; one JSON object per configuration on
// stdout, a table on stderr. The default configuration runs with the store's xxh3 checksums off
// and on (on is strata's default), and the hash's own speed in memory is printed beside them.
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bench_util.h"
#include "fio.h"
#include "offload/nvme_store.h"
#include "src/common/xxh3.h"

namespace strata::bench {
namespace {

constexpr size_t kTensorBytes = size_t{64} << 20;
constexpr size_t kBuffers = 16;  // source/target buffers, reused round-robin (1 GiB)

struct Config : FioConfig {
  bool checksum = false;
};

// xxh3 over the buffers in memory, one thread: GB/s (the checksum's own limit), by `path`.
double xxh3_gbps(const std::vector<offload::AlignedBuffer>& bufs, Xxh3Path path) {
  uint64_t sink = 0;
  const double s = seconds([&] {
    for (int r = 0; r < 4; ++r)
      for (const auto& b : bufs) sink ^= xxh3_64_by(path, b.data(), kTensorBytes);
  });
  if (sink == 42) std::fprintf(stderr, " ");
  return 4.0 * static_cast<double>(bufs.size() * kTensorBytes) / s / 1e9;
}

// The same over one 512 KiB piece again and again (a chunk's array, in cache as the update's
// write-back checksums find it): GB/s.
double xxh3_cache_gbps(const offload::AlignedBuffer& b, Xxh3Path path) {
  constexpr size_t kPiece = size_t{512} << 10;
  constexpr int kReps = 8192;
  uint64_t sink = 0;
  const double s = seconds([&] {
    for (int r = 0; r < kReps; ++r) sink ^= xxh3_64_by(path, b.data(), kPiece);
  });
  if (sink == 42) std::fprintf(stderr, " ");
  return static_cast<double>(kPiece) * kReps / s / 1e9;
}

// NvmeStore with the same settings: put every tensor (fresh files), then get every tensor; GB/s.
StatusOr<Rates> store_once(offload::NvmeStore& st, size_t total, std::vector<offload::AlignedBuffer>& bufs) {
  const size_t n = total / kTensorBytes;
  Rates r;
  Status failed;
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<offload::IoHandle> inflight(kBuffers);
    const double s = seconds([&] {
      for (size_t i = 0; i < n; ++i) {
        offload::IoHandle& slot = inflight[i % kBuffers];
        if (slot.valid()) {
          Status e = slot.wait();
          if (!e.is_ok() && failed.is_ok()) failed = e;
        }
        const std::string key = "tensor" + std::to_string(i);
        slot =
            pass == 0 ? st.put(key, bufs[i % kBuffers], kTensorBytes) : st.get(key, bufs[i % kBuffers], kTensorBytes);
      }
      for (auto& h : inflight) {
        if (!h.valid()) continue;
        Status e = h.wait();
        if (!e.is_ok() && failed.is_ok()) failed = e;
      }
    });
    STRATA_RETURN_IF_ERROR(failed);
    (pass == 0 ? r.write_gbps : r.read_gbps) = static_cast<double>(n * kTensorBytes) / s / 1e9;
  }
  for (size_t i = 0; i < n; ++i) STRATA_RETURN_IF_ERROR(st.remove("tensor" + std::to_string(i)));
  return r;
}

// Best of `reps` interleaved store / fio runs, so the disk's drifts hit both alike.
Status measure(const std::string& dir, size_t total, const Config& c, int reps,
               std::vector<offload::AlignedBuffer>& bufs, Rates* best_store, Rates* best_fio) {
  offload::NvmeStoreOptions o;
  o.dir = dir;
  o.checksum = c.checksum;
  o.aio.block_size = c.block_size;
  o.aio.queue_depth = c.queue_depth;
  o.aio.intra_op_parallelism = c.threads;
  STRATA_ASSIGN_OR_RETURN(auto st, offload::NvmeStore::open(o));
  for (int r = 0; r < reps; ++r) {
    STRATA_ASSIGN_OR_RETURN(Rates s, store_once(*st, total, bufs));
    STRATA_ASSIGN_OR_RETURN(Rates f, fio_once(dir, total, c));
    best_store->write_gbps = std::max(best_store->write_gbps, s.write_gbps);
    best_store->read_gbps = std::max(best_store->read_gbps, s.read_gbps);
    best_fio->write_gbps = std::max(best_fio->write_gbps, f.write_gbps);
    best_fio->read_gbps = std::max(best_fio->read_gbps, f.read_gbps);
  }
  return st->close();
}

std::string fs_type(const std::string& dir) {
  struct statfs s {};
  if (::statfs(dir.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x58465342:
      return "xfs";
    case 0x01021994:
      return "tmpfs";
    case 0x9123683E:
      return "btrfs";
    default: {
      char b[32];
      std::snprintf(b, sizeof(b), "0x%lx", static_cast<unsigned long>(s.f_type));
      return b;
    }
  }
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::bench;
  std::string dir = "/tmp/strata_nvme_bench";
  size_t gib = 4;
  bool quick = false;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (a == "--gib" && i + 1 < argc) {
      gib = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--defaults-only") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--gib N>=1] [--reps R>=1] [--defaults-only]\n", argv[0]);
      return 2;
    }
  }
  if (gib == 0 || reps < 1) {
    std::fprintf(stderr, "--gib and --reps must be at least 1\n");
    return 2;
  }
  std::filesystem::create_directories(dir);
  const size_t total = gib << 30;
  const offload::AioConfig d;
  auto config = [](size_t bs, int qd, int threads, bool checksum) {
    Config c;
    c.block_size = bs;
    c.queue_depth = qd;
    c.threads = threads;
    c.checksum = checksum;
    return c;
  };
  std::vector<Config> configs = {config(d.block_size, d.queue_depth, d.intra_op_parallelism, false),
                                 config(d.block_size, d.queue_depth, d.intra_op_parallelism, true)};
  if (!quick) {
    for (size_t bs : {size_t{256} << 10, size_t{1} << 20, size_t{4} << 20})
      for (int qd : {8, 32})
        if (!(bs == d.block_size && qd == d.queue_depth)) configs.push_back(config(bs, qd, 1, false));
    configs.push_back(config(d.block_size, d.queue_depth, 2, false));
  }
  std::vector<offload::AlignedBuffer> bufs;
  for (size_t i = 0; i < kBuffers; ++i) {
    auto b = offload::AlignedBuffer::create(kTensorBytes, offload::PinMode::kAuto);
    if (!b.is_ok()) {
      std::fprintf(stderr, "%s\n", b.status().to_string().c_str());
      return 1;
    }
    std::memset(b.value().data(), static_cast<int>(i * 37 + 1), kTensorBytes);
    bufs.push_back(std::move(b).value());
  }
  std::fprintf(stderr, "nvme: %zu GiB of 64 MiB tensors in %s (%s), NvmeStore vs fio, same settings, best of %d\n", gib,
               dir.c_str(), fs_type(dir).c_str(), reps);
  // The store's hash (the widest vector loop this CPU has) against the baseline x86-64 loop,
  // which is what the distribution's libxxhash runs.
  const double hash = xxh3_gbps(bufs, xxh3_best_path()), hash_base = xxh3_gbps(bufs, Xxh3Path::kBaseline);
  const double hot = xxh3_cache_gbps(bufs[0], xxh3_best_path()),
               hot_base = xxh3_cache_gbps(bufs[0], Xxh3Path::kBaseline);
  std::fprintf(stderr,
               "xxh3, one thread: in memory %.2f GB/s (baseline loop %.2f, %.2fx); 512 KiB in cache %.2f GB/s "
               "(baseline %.2f, %.2fx)\n",
               hash, hash_base, hash / hash_base, hot, hot_base, hot / hot_base);
  for (const Config& c : configs) {
    Rates r, q;
    const Status st = measure(dir, total, c, reps, bufs, &r, &q);
    if (!st.is_ok()) {
      std::fprintf(stderr, "%s\n", st.to_string().c_str());
      return 1;
    }
    std::printf(
        "{\"bench\": \"nvme\", \"git_sha\": \"" STRATA_GIT_SHA
        "\", \"where\": {\"dir\": \"%s\", \"fs\": \"%s\", "
        "\"cpu\": \"%s\"}, \"bytes\": %zu, \"reps\": %d, \"block_size\": %zu, \"queue_depth\": %d, \"threads\": %d, "
        "\"checksum\": %s, \"xxh3_memory_gbps\": %.2f, \"xxh3_baseline_memory_gbps\": %.2f, "
        "\"xxh3_cache_gbps\": %.2f, \"xxh3_baseline_cache_gbps\": %.2f, "
        "\"store_write_gbps\": %.3f, \"fio_write_gbps\": %.3f, \"write_ratio\": %.3f, "
        "\"store_read_gbps\": %.3f, \"fio_read_gbps\": %.3f, \"read_ratio\": %.3f}\n",
        dir.c_str(), fs_type(dir).c_str(), cpu_model().c_str(), total, reps, c.block_size, c.queue_depth, c.threads,
        c.checksum ? "true" : "false", hash, hash_base, hot, hot_base, r.write_gbps, q.write_gbps,
        r.write_gbps / q.write_gbps, r.read_gbps, q.read_gbps, r.read_gbps / q.read_gbps);
    std::fflush(stdout);
    std::fprintf(stderr,
                 "bs %5zu KiB qd %3d thr %d%s | write %5.2f GB/s fio %5.2f ratio %5.3f | read %5.2f GB/s fio %5.2f "
                 "ratio %5.3f\n",
                 c.block_size >> 10, c.queue_depth, c.threads, c.checksum ? " xxh3" : "     ", r.write_gbps,
                 q.write_gbps, r.write_gbps / q.write_gbps, r.read_gbps, q.read_gbps, r.read_gbps / q.read_gbps);
  }
  return 0;
}
