// The libaio engine on real files: round trips under every submission mode, hundreds of requests
// in flight, argument errors, and faults injected under it (EAGAIN, errors at submit and at
// completion, short transfers) — each reported with file, offset and errno, nothing else damaged.
#include "offload/aio_engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "faulty_io_sys.h"
#include "offload/aligned_buffer.h"
#include "scratch_dir.h"

namespace strata::offload {
namespace {

using strata::testing::FaultyIoSys;
using strata::testing::ScratchDir;

struct File {
  explicit File(const std::string& p) : path(p), fd(::open(p.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0600)) {}
  ~File() {
    if (fd >= 0) ::close(fd);
  }
  std::string path;
  int fd;
};

AlignedBuffer filled(size_t bytes, uint32_t seed) {
  AlignedBuffer b = AlignedBuffer::create(bytes, PinMode::kNone).value();
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < b.capacity(); ++i) {
    x = x * 1664525u + 1013904223u;
    b.bytes()[i] = static_cast<uint8_t>(x >> 24);
  }
  return b;
}

AioConfig small_blocks(int qd, int threads, bool single, bool overlap) {
  AioConfig c;
  c.block_size = 64 << 10;
  c.queue_depth = qd;
  c.intra_op_parallelism = threads;
  c.single_submit = single;
  c.overlap_events = overlap;
  return c;
}

class EngineModes : public ::testing::TestWithParam<std::tuple<int, int, bool, bool>> {};

TEST_P(EngineModes, ManyRequestsRoundTrip) {
  const auto [qd, threads, single, overlap] = GetParam();
  ScratchDir dir;
  File f(dir.path() + "/data");
  ASSERT_GE(f.fd, 0);
  auto eng = AioEngine::create(small_blocks(qd, threads, single, overlap));
  ASSERT_TRUE(eng.is_ok()) << eng.status().to_string();
  // 200 requests of 12 KiB .. 1 MiB (each split into 64 KiB blocks), all in flight at once.
  std::vector<AlignedBuffer> out, in;
  std::vector<IoHandle> hs;
  uint64_t off = 0;
  std::vector<uint64_t> offs;
  for (int i = 0; i < 200; ++i) {
    const size_t n = align_up(12288 + static_cast<size_t>(i) * 5000);
    out.push_back(filled(n, static_cast<uint32_t>(i)));
    offs.push_back(off);
    hs.push_back(eng.value()->submit(IoOp::kWrite, f.fd, f.path, out.back().data(), off, n, true));
    off += n;
  }
  eng.value()->wait_all();
  for (auto& h : hs) ASSERT_TRUE(h.done());
  for (auto& h : hs) ASSERT_TRUE(h.wait().is_ok()) << h.wait().to_string();
  hs.clear();
  for (int i = 0; i < 200; ++i) {
    in.push_back(AlignedBuffer::create(out[i].capacity(), PinMode::kNone).value());
    hs.push_back(eng.value()->submit(IoOp::kRead, f.fd, f.path, in.back().data(), offs[i], in.back().capacity(), true));
  }
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(hs[i].wait().is_ok()) << hs[i].wait().to_string();
    ASSERT_EQ(std::memcmp(in[i].data(), out[i].data(), out[i].capacity()), 0) << "request " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, EngineModes,
                         ::testing::Values(std::make_tuple(1, 1, false, true), std::make_tuple(32, 1, false, true),
                                           std::make_tuple(32, 1, false, false), std::make_tuple(8, 1, true, true),
                                           std::make_tuple(16, 3, false, true)));

TEST(AioEngine, RejectsMisalignedDirectIo) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  auto eng = AioEngine::create(AioConfig{});
  ASSERT_TRUE(eng.is_ok());
  AlignedBuffer b = filled(8192, 1);
  Status s = eng.value()->submit(IoOp::kWrite, f.fd, f.path, b.data(), 100, 4096, true).wait();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("aligned to 4096"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(f.path), std::string::npos);
  EXPECT_EQ(eng.value()->submit(IoOp::kRead, f.fd, f.path, b.data(), 0, 0, true).wait().code(),
            StatusCode::kInvalidArgument);
}

TEST(AioEngine, InvalidConfigIsRefused) {
  AioConfig c;
  c.queue_depth = 0;
  auto e = AioEngine::create(c);
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.status().message().find("aio.queue_depth"), std::string::npos);
}

// Writes `n` requests of 256 KiB through `sys` and returns their statuses.
std::vector<Status> write_all(FaultyIoSys& sys, const File& f, std::vector<AlignedBuffer>& bufs, int n,
                              AioConfig cfg = small_blocks(8, 1, false, true)) {
  auto eng = AioEngine::create(cfg, &sys);
  EXPECT_TRUE(eng.is_ok());
  std::vector<IoHandle> hs;
  for (int i = 0; i < n; ++i) {
    bufs.push_back(filled(256 << 10, 100 + static_cast<uint32_t>(i)));
    hs.push_back(eng.value()->submit(IoOp::kWrite, f.fd, f.path, bufs.back().data(), uint64_t(i) * (256 << 10),
                                     256 << 10, true));
  }
  std::vector<Status> out;
  for (auto& h : hs) out.push_back(h.wait());
  return out;
}

void expect_file_holds(const File& f, const std::vector<AlignedBuffer>& bufs, const std::vector<int>& which) {
  for (int i : which) {
    AlignedBuffer r = AlignedBuffer::create(256 << 10, PinMode::kNone).value();
    ASSERT_EQ(::pread(f.fd, r.data(), 256 << 10, off_t(i) * (256 << 10)), 256 << 10);
    EXPECT_EQ(std::memcmp(r.data(), bufs[i].data(), 256 << 10), 0) << "request " << i << " damaged";
  }
}

TEST(AioEngineFaults, EagainAtSubmitIsRetried) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  FaultyIoSys sys;
  sys.submit_eagain = 25;
  std::vector<AlignedBuffer> bufs;
  for (const Status& s : write_all(sys, f, bufs, 10)) EXPECT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_GT(sys.submits.load(), 25);
  expect_file_holds(f, bufs, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
}

TEST(AioEngineFaults, ShortTransfersAreCompleted) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  FaultyIoSys sys;
  sys.short_transfers = 30;
  std::vector<AlignedBuffer> bufs;
  for (const Status& s : write_all(sys, f, bufs, 10)) EXPECT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(sys.short_transfers.load(), 0);
  expect_file_holds(f, bufs, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  // Reads too.
  auto eng = AioEngine::create(small_blocks(8, 1, false, true), &sys);
  sys.short_transfers = 10;
  AlignedBuffer r = AlignedBuffer::create(size_t{10} * (256 << 10), PinMode::kNone).value();
  ASSERT_TRUE(eng.value()->submit(IoOp::kRead, f.fd, f.path, r.data(), 0, r.capacity(), true).wait().is_ok());
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(std::memcmp(r.bytes() + size_t(i) * (256 << 10), bufs[i].data(), 256 << 10), 0);
}

TEST(AioEngineFaults, CompletionErrorsNameFileOffsetAndErrno) {
  for (int err : {EIO, ENOSPC}) {
    ScratchDir dir;
    File f(dir.path() + "/data");
    FaultyIoSys sys;
    sys.completion_error = err;
    sys.completion_error_count = 1;
    std::vector<AlignedBuffer> bufs;
    // One request at a time so the failing block belongs to request 0.
    const std::vector<Status> st = write_all(sys, f, bufs, 4, small_blocks(1, 1, false, true));
    ASSERT_FALSE(st[0].is_ok());
    EXPECT_EQ(st[0].code(), err == ENOSPC ? StatusCode::kNoSpace : StatusCode::kIo);
    EXPECT_NE(st[0].message().find("libaio write of " + f.path + " at offset 0, length 65536"), std::string::npos)
        << st[0].message();
    EXPECT_NE(st[0].message().find(err == ENOSPC ? "ENOSPC" : "EIO"), std::string::npos) << st[0].message();
    for (int i = 1; i < 4; ++i) EXPECT_TRUE(st[i].is_ok()) << st[i].to_string();
    expect_file_holds(f, bufs, {1, 2, 3});
  }
}

TEST(AioEngineFaults, SubmitErrorFailsOnlyThatBlock) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  FaultyIoSys sys;
  sys.submit_error = EIO;
  std::vector<AlignedBuffer> bufs;
  const std::vector<Status> st = write_all(sys, f, bufs, 3, small_blocks(1, 1, true, true));
  EXPECT_EQ(st[0].code(), StatusCode::kIo);
  EXPECT_NE(st[0].message().find("Input/output error"), std::string::npos) << st[0].message();
  EXPECT_TRUE(st[1].is_ok());
  EXPECT_TRUE(st[2].is_ok());
  expect_file_holds(f, bufs, {1, 2});
}

TEST(AioEngineFaults, ReadPastEndIsDataLoss) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  auto eng = AioEngine::create(AioConfig{});
  AlignedBuffer b = filled(8192, 3);
  Status s = eng.value()->submit(IoOp::kRead, f.fd, f.path, b.data(), 1 << 20, 8192, true).wait();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("transferred 0 of 8192 bytes"), std::string::npos) << s.message();
}

// Background requests keep at most background_depth blocks in flight per thread; a demand request
// submitted behind many of them goes before all but those: it finishes ahead of nearly all of
// them. Every request still completes with the right bytes.
TEST(AioEngine, DemandRequestsOvertakeBackgroundTraffic) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  ASSERT_GE(f.fd, 0);
  AioConfig c = small_blocks(16, 1, false, true);
  c.background_depth = 1;
  auto eng = AioEngine::create(c);
  ASSERT_TRUE(eng.is_ok()) << eng.status().to_string();
  constexpr int kBackground = 64;
  constexpr size_t kBlock = 64 << 10;
  const AlignedBuffer src = filled(kBackground * kBlock, 5);
  ASSERT_TRUE(eng.value()->submit(IoOp::kWrite, f.fd, f.path, src.data(), 0, src.capacity(), true).wait().is_ok());

  std::atomic<int> finished{0};
  std::atomic<int> demand_after{-1};  // background requests finished before the demand one
  AlignedBuffer dst = AlignedBuffer::create(kBackground * kBlock, PinMode::kNone).value();
  AlignedBuffer one = AlignedBuffer::create(kBlock, PinMode::kNone).value();
  std::vector<IoHandle> bg;
  for (int i = 0; i < kBackground; ++i)
    bg.push_back(eng.value()->submit(
        IoOp::kRead, f.fd, f.path, dst.bytes() + i * kBlock, i * kBlock, kBlock, true,
        [&](Status s) {
          ++finished;
          return s;
        },
        IoPriority::kBackground));
  while (finished.load() == 0) std::this_thread::yield();  // the background traffic is flowing
  const int before = finished.load();
  IoHandle demand = eng.value()->submit(
      IoOp::kRead, f.fd, f.path, one.data(), 0, kBlock, true,
      [&](Status s) {
        demand_after = finished.load();
        return s;
      },
      IoPriority::kDemand);
  ASSERT_TRUE(demand.wait().is_ok());
  for (IoHandle& h : bg) ASSERT_TRUE(h.wait().is_ok());
  // Behind at most the background block in flight and the one or two submitted beside it, not
  // behind the queue_depth (16) of them the thread would otherwise keep in flight.
  EXPECT_LE(demand_after.load() - before, 3) << "the demand read waited behind the background queue";
  EXPECT_EQ(std::memcmp(dst.data(), src.data(), dst.capacity()), 0);
  EXPECT_EQ(std::memcmp(one.data(), src.data(), kBlock), 0);

  c.background_depth = 0;
  EXPECT_NE(AioEngine::create(c).status().message().find("background_depth"), std::string::npos);
}

TEST(AioEngine, OnDoneTransformsTheResult) {
  ScratchDir dir;
  File f(dir.path() + "/data");
  auto eng = AioEngine::create(AioConfig{});
  AlignedBuffer b = filled(4096, 4);
  IoHandle h = eng.value()->submit(IoOp::kWrite, f.fd, f.path, b.data(), 0, 4096, true,
                                   [](Status s) { return s.is_ok() ? Status(StatusCode::kDataLoss, "checked") : s; });
  EXPECT_EQ(h.wait().message(), "checked");
}

}  // namespace
}  // namespace strata::offload
