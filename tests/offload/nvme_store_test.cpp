// NvmeStore: round trips of 1 B .. 256 MiB (unaligned sizes too), hundreds of requests in flight
// from several threads, and every fault the tier must survive: missing / unusable directory, no
// O_DIRECT, a second store on the same directory, ENOSPC (injected and on a real full file
// system), I/O errors, files truncated or deleted underneath, checksum mismatch, unknown keys —
// each with a clear error and the previous content of every tensor still readable.
#include "offload/nvme_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <thread>
#include <vector>

#include "faulty_io_sys.h"
#include "offload/nvme_store_index.h"
#include "scratch_dir.h"

namespace strata::offload {
namespace {

using strata::testing::FaultyIoSys;
using strata::testing::ScratchDir;

AlignedBuffer pattern(size_t bytes, uint32_t seed) {
  AlignedBuffer b = AlignedBuffer::create(bytes, PinMode::kNone).value();
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 7;
  uint8_t* p = b.bytes();
  for (size_t i = 0; i < b.capacity(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(p + i, &x, 8);
  }
  return b;
}

NvmeStoreOptions opts(const std::string& dir) {
  NvmeStoreOptions o;
  o.dir = dir;
  o.checksum = true;
  return o;
}

std::unique_ptr<NvmeStore> open_ok(const NvmeStoreOptions& o, IoSys* sys = nullptr) {
  auto s = NvmeStore::open(o, sys);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return s.is_ok() ? std::move(s).value() : nullptr;
}

// get(key) into a fresh buffer; checks the bytes against `want` (first `n` bytes).
void expect_holds(NvmeStore& st, const std::string& key, const AlignedBuffer& want, size_t n) {
  AlignedBuffer r = AlignedBuffer::create(n, PinMode::kNone).value();
  const Status s = st.get(key, r, n).wait();
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_EQ(std::memcmp(r.data(), want.data(), n), 0) << key << " differs";
}

TEST(NvmeStore, RoundTripsOfAnySize) {
  ScratchDir dir;
  auto st = open_ok(opts(dir.path()));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->direct_io());
  const size_t sizes[] = {1, 7, 4095, 4096, 4097, 65536 + 3, (size_t{1} << 20) + 1, size_t{256} << 20};
  for (size_t n : sizes) {
    const std::string key = "t/" + std::to_string(n);
    AlignedBuffer w = pattern(n, static_cast<uint32_t>(n));
    ASSERT_TRUE(st->put(key, w, n).wait().is_ok());
    EXPECT_EQ(st->size_of(key).value(), n);
    expect_holds(*st, key, w, n);
    // Overwrite with other content (goes to the other slot) and read back.
    AlignedBuffer w2 = pattern(n, static_cast<uint32_t>(n) + 1);
    ASSERT_TRUE(st->put(key, w2, n).wait().is_ok());
    expect_holds(*st, key, w2, n);
    ASSERT_TRUE(st->remove(key).is_ok());
  }
  EXPECT_TRUE(st->close().is_ok());
  // Clean shutdown removes every file.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(NvmeStore, HundredsInFlightFromSeveralThreads) {
  ScratchDir dir;
  NvmeStoreOptions o = opts(dir.path());
  o.aio.block_size = 64 << 10;
  o.aio.intra_op_parallelism = 2;
  auto st = open_ok(o);
  ASSERT_TRUE(st);
  constexpr int kThreads = 4, kPer = 80;
  std::vector<std::thread> ts;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<AlignedBuffer> bufs;
      std::vector<IoHandle> hs;
      for (int i = 0; i < kPer; ++i) {
        const size_t n = 1000 + static_cast<size_t>(i) * 3001;
        bufs.push_back(pattern(n, static_cast<uint32_t>(t * 1000 + i)));
        hs.push_back(st->put("k" + std::to_string(t) + "_" + std::to_string(i), bufs.back(), n));
      }
      for (auto& h : hs) failures[t] += h.wait().is_ok() ? 0 : 1;
      std::vector<AlignedBuffer> reads;
      hs.clear();
      for (int i = 0; i < kPer; ++i) {
        const size_t n = 1000 + static_cast<size_t>(i) * 3001;
        reads.push_back(AlignedBuffer::create(n, PinMode::kNone).value());
        hs.push_back(st->get("k" + std::to_string(t) + "_" + std::to_string(i), reads.back(), n));
      }
      for (int i = 0; i < kPer; ++i) {
        const size_t n = 1000 + static_cast<size_t>(i) * 3001;
        if (!hs[i].wait().is_ok() || std::memcmp(reads[i].data(), bufs[i].data(), n) != 0) ++failures[t];
      }
    });
  }
  for (auto& t : ts) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

TEST(NvmeStoreErrors, DirectoryProblemsAreNamed) {
  auto missing = NvmeStore::open(opts("/nonexistent/strata/nvme"));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nvme_path '/nonexistent/strata/nvme' does not exist"), std::string::npos);

  ScratchDir dir;
  const std::string file = dir.path() + "/plain_file";
  ::close(::open(file.c_str(), O_CREAT | O_WRONLY, 0600));
  auto notdir = NvmeStore::open(opts(file));
  ASSERT_FALSE(notdir.is_ok());
  EXPECT_NE(notdir.status().message().find("is not a directory"), std::string::npos);

  auto a = open_ok(opts(dir.path()));
  auto b = NvmeStore::open(opts(dir.path()));
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(b.status().message().find("in use by another strata store"), std::string::npos) << b.status().message();
  EXPECT_NE(b.status().message().find("pid " + std::to_string(::getpid())), std::string::npos);
  ASSERT_TRUE(a->close().is_ok());
  EXPECT_TRUE(NvmeStore::open(opts(dir.path())).is_ok()) << "the lock is released on close";
}

TEST(NvmeStoreErrors, ReadOnlyDirectory) {
  ScratchDir dir;
  const std::string ro = dir.path() + "/ro";
  ::mkdir(ro.c_str(), 0755);
  if (::mount("tmpfs", ro.c_str(), "tmpfs", MS_RDONLY, "size=1m") != 0)
    GTEST_SKIP() << "cannot mount a read-only tmpfs here (needs root): " << std::strerror(errno);
  auto s = NvmeStore::open(opts(ro));
  ::umount(ro.c_str());
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("nvme_path '" + ro + "' is not writable"), std::string::npos)
      << s.status().message();
}

TEST(NvmeStoreErrors, NoODirectSaysSoAndNamesTheSwitch) {
  ScratchDir dir;
  FaultyIoSys sys;
  sys.refuse_o_direct = true;
  auto s = NvmeStore::open(opts(dir.path()), &sys);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(s.status().message().find("does not support O_DIRECT; set aio.allow_buffered_io = true"), std::string::npos)
      << s.status().message();
  NvmeStoreOptions o = opts(dir.path());
  o.aio.allow_buffered_io = true;
  auto st = open_ok(o, &sys);
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->direct_io());
  AlignedBuffer w = pattern(10000, 5);
  ASSERT_TRUE(st->put("x", w, 10000).wait().is_ok());
  expect_holds(*st, "x", w, 10000);
}

TEST(NvmeStoreErrors, UnknownKeyWrongSizeSmallBuffer) {
  ScratchDir dir;
  auto st = open_ok(opts(dir.path()));
  AlignedBuffer b = pattern(8192, 1);
  Status s = st->get("never", b, 100).wait();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("tensor 'never': it was never written"), std::string::npos) << s.message();
  ASSERT_TRUE(st->put("k", b, 5000).wait().is_ok());
  s = st->get("k", b, 4000).wait();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("holds 5000 bytes, asked for 4000"), std::string::npos) << s.message();
  AlignedBuffer small = pattern(4096, 2);
  s = st->put("k", small, 5000).wait();
  EXPECT_NE(s.message().find("buffer holds 4096 bytes, needs 8192"), std::string::npos) << s.message();
  expect_holds(*st, "k", b, 5000);
  EXPECT_EQ(st->remove("nope").code(), StatusCode::kNotFound);
}

// Puts "keep" and "other", then runs `fault` around a second put of "keep": it must fail with
// `code`, and both tensors must still read back their first content.
void expect_put_fails_and_keeps(FaultyIoSys& sys, const std::function<void()>& fault, StatusCode code,
                                const char* needle, size_t second_size = 100000) {
  ScratchDir dir;
  auto st = open_ok(opts(dir.path()), &sys);
  ASSERT_TRUE(st);
  AlignedBuffer a = pattern(100000, 1), o = pattern(30000, 2), a2 = pattern(second_size, 3);
  ASSERT_TRUE(st->put("keep", a, 100000).wait().is_ok());
  ASSERT_TRUE(st->put("other", o, 30000).wait().is_ok());
  fault();
  const Status s = st->put("keep", a2, second_size).wait();
  sys.fallocate_error = 0;
  sys.completion_error_count = 0;
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), code) << s.to_string();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  expect_holds(*st, "keep", a, 100000);
  expect_holds(*st, "other", o, 30000);
  // And the store still works.
  ASSERT_TRUE(st->put("keep", a2, second_size).wait().is_ok());
  expect_holds(*st, "keep", a2, second_size);
}

TEST(NvmeStoreFaults, EnospcAtPreallocationKeepsPreviousContent) {
  FaultyIoSys sys;
  expect_put_fails_and_keeps(
      sys, [&] { sys.fallocate_error = ENOSPC; }, StatusCode::kNoSpace, "fallocate of 102400 bytes for tensor 'keep'");
}

TEST(NvmeStoreFaults, EnospcAndEioDuringWriteKeepPreviousContent) {
  FaultyIoSys sys;
  expect_put_fails_and_keeps(
      sys, [&] { sys.completion_error = ENOSPC, sys.completion_error_count = 1; }, StatusCode::kNoSpace,
      "previous content kept");
  expect_put_fails_and_keeps(
      sys, [&] { sys.completion_error = EIO, sys.completion_error_count = 1; }, StatusCode::kIo, "EIO");
  expect_put_fails_and_keeps(
      sys, [&] { sys.submit_error = EIO; }, StatusCode::kIo, "put of tensor 'keep'");
}

// In place: one file per key, rewritten where it is. A failed write loses that key's content —
// said by the put, and by every read until the key is written again — and no other key's.
TEST(NvmeStoreInPlace, RewritesOneFileAndAFailedWriteLosesOnlyThatKey) {
  ScratchDir dir;
  FaultyIoSys sys;
  NvmeStoreOptions o = opts(dir.path());
  o.in_place = true;
  auto st = open_ok(o, &sys);
  ASSERT_TRUE(st);
  AlignedBuffer a = pattern(100000, 1), b = pattern(100000, 2), other = pattern(30000, 3);
  ASSERT_TRUE(st->put("keep", a, 100000).wait().is_ok());
  ASSERT_TRUE(st->put("keep", b, 100000).wait().is_ok());
  ASSERT_TRUE(st->put("other", other, 30000).wait().is_ok());
  expect_holds(*st, "keep", b, 100000);
  size_t files = 0;
  for (const auto& f : std::filesystem::directory_iterator(dir.path()))
    files += f.path().filename().string().find("keep") != std::string::npos;
  EXPECT_EQ(files, 1u) << "in place: one file for a key written twice";

  sys.completion_error = EIO;
  sys.completion_error_count = 1;
  Status s = st->put("keep", a, 100000).wait();
  sys.completion_error_count = 0;
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kIo) << s.to_string();
  EXPECT_NE(s.message().find("put of tensor 'keep' (rewritten in place: its previous content is lost"),
            std::string::npos)
      << s.message();
  AlignedBuffer r = AlignedBuffer::create(100000, PinMode::kNone).value();
  s = st->get("keep", r, 100000).wait();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_NE(s.message().find("'keep': its last in-place write failed"), std::string::npos) << s.message();
  expect_holds(*st, "other", other, 30000);
  ASSERT_TRUE(st->put("keep", a, 100000).wait().is_ok());  // written again: readable again
  expect_holds(*st, "keep", a, 100000);
}

TEST(NvmeStoreFaults, ReadErrorIsReported) {
  ScratchDir dir;
  FaultyIoSys sys;
  auto st = open_ok(opts(dir.path()), &sys);
  AlignedBuffer a = pattern(50000, 1);
  ASSERT_TRUE(st->put("k", a, 50000).wait().is_ok());
  sys.completion_error = EIO;
  sys.completion_error_reads = true;
  sys.completion_error_count = 1;
  AlignedBuffer r = pattern(50000, 9);
  const Status s = st->get("k", r, 50000).wait();
  EXPECT_EQ(s.code(), StatusCode::kIo);
  EXPECT_NE(s.message().find("get of tensor 'k': libaio read of"), std::string::npos) << s.message();
  expect_holds(*st, "k", a, 50000);
}

std::string slot_file(const std::string& dir, const std::string& suffix) {
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string p = e.path().string();
    if (p.size() > suffix.size() && p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0) return p;
  }
  return "";
}

// A checksum the caller took while the bytes were in its cache stands in for the store's own: the
// right one reads back, a wrong one is caught on the read like a corrupt file.
TEST(NvmeStore, ChecksumTakenByTheCaller) {
  ScratchDir dir;
  auto st = open_ok(opts(dir.path()));
  ASSERT_TRUE(st->checksums());
  AlignedBuffer a = pattern(70000, 1);
  const uint64_t sum = NvmeStore::checksum_of(a.data(), 70000);
  ASSERT_TRUE(st->put("a", a, 70000, {}, IoPriority::kBackground, sum).wait().is_ok());
  expect_holds(*st, "a", a, 70000);
  ASSERT_TRUE(st->put("b", a, 70000, {}, IoPriority::kBackground, sum ^ 1).wait().is_ok());
  AlignedBuffer r = AlignedBuffer::create(70000, PinMode::kNone).value();
  Status s = st->get("b", r, 70000).wait();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.to_string();
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s.message();
}

// The checksum is XXH3-64 (the xxHash library itself, the reference here) of a tensor up to one
// segment, else of its segments' XXH3-64 values in order; a byte changed in any segment, the last
// (partial) one included, reads back as DATA_LOSS.
TEST(NvmeStore, ChecksumIsTheXxh3OfItsSegmentsXxh3s) {
  constexpr size_t kSeg = NvmeStore::kChecksumSegment;
  AlignedBuffer small = pattern(kSeg, 4);
  EXPECT_EQ(NvmeStore::checksum_of(small.data(), kSeg), XXH3_64bits(small.data(), kSeg));
  const size_t n = 3 * kSeg + 1234;
  AlignedBuffer big = pattern(n, 5);
  std::vector<uint64_t> seg;
  for (size_t at = 0; at < n; at += kSeg) seg.push_back(XXH3_64bits(big.bytes() + at, std::min(kSeg, n - at)));
  ASSERT_EQ(seg.size(), 4u);
  EXPECT_EQ(NvmeStore::checksum_segments(n), 4u);
  EXPECT_EQ(NvmeStore::checksum_of(big.data(), n), XXH3_64bits(seg.data(), seg.size() * 8));
  for (size_t i = 0; i < seg.size(); ++i) EXPECT_EQ(NvmeStore::segment_checksum(big.data(), n, i), seg[i]);
  EXPECT_EQ(NvmeStore::combine_checksums(seg.data(), seg.size()), NvmeStore::checksum_of(big.data(), n));

  ScratchDir dir;
  auto st = open_ok(opts(dir.path()));
  ASSERT_TRUE(st->put("t", big, n).wait().is_ok());
  expect_holds(*st, "t", big, n);
  AlignedBuffer r = AlignedBuffer::create(n, PinMode::kNone).value();
  for (size_t at : {size_t{10}, kSeg + 5, n - 3}) {
    NvmeStore::ReadCheck check;
    ASSERT_TRUE(st->get("t", r, n, {}, IoPriority::kDemand, &check).wait().is_ok());
    ASSERT_TRUE(check.active);
    EXPECT_TRUE(check.verify(r.data(), n).is_ok());
    r.bytes()[at] ^= 1;
    const Status s = check.verify(r.data(), n);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << "a byte changed at " << at << ": " << s.to_string();
    EXPECT_NE(s.message().find("tensor 't': checksum mismatch"), std::string::npos) << s.message();
  }
}

// An index 1 (written before checksums were segmented) holds the XXH3-64 of whole tensors: a kept
// store of that version reopens, reads its tensors checked that way and rewrites them as index 2.
TEST(NvmeStore, AnIndexOneStoreReopensWithWholeTensorChecksums) {
  ScratchDir dir;
  NvmeStoreOptions o = opts(dir.path());
  o.keep_files = true;
  const size_t n = 2 * NvmeStore::kChecksumSegment + 100;
  AlignedBuffer b = pattern(n, 6), b2 = pattern(n, 7);
  {
    auto st = open_ok(o);
    ASSERT_TRUE(st->put("b", b, n).wait().is_ok());
    ASSERT_TRUE(st->close().is_ok());
  }
  const std::string index = dir.path() + "/" + kStoreIndexFile;
  std::string text;
  {
    std::ifstream f(index);
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  ASSERT_EQ(text.rfind(std::string(kStoreIndexHeader) + "\n", 0), 0u) << text;
  char whole[17];
  std::snprintf(whole, sizeof(whole), "%016llx", static_cast<unsigned long long>(XXH3_64bits(b.data(), n)));
  text = std::string(kStoreIndexHeaderV1) + "\n" + text.substr(text.find('\n') + 1);
  text = text.substr(0, text.size() - 17) + whole + "\n";  // the last field: the whole tensor's XXH3
  std::ofstream(index, std::ios::trunc) << text;
  o.reopen = true;
  {
    auto st = open_ok(o);
    ASSERT_TRUE(st);
    expect_holds(*st, "b", b, n);
    ASSERT_TRUE(st->put("b", b2, n).wait().is_ok());
    expect_holds(*st, "b", b2, n);
    ASSERT_TRUE(st->close().is_ok());
  }
  std::ifstream f(index);
  std::string line;
  std::getline(f, line);
  EXPECT_EQ(line, kStoreIndexHeader);
  auto st = open_ok(o);
  ASSERT_TRUE(st);
  expect_holds(*st, "b", b2, n);
}

TEST(NvmeStoreFaults, TruncatedDeletedCorruptFilesAreDetected) {
  ScratchDir dir;
  auto st = open_ok(opts(dir.path()));
  AlignedBuffer a = pattern(70000, 1), b = pattern(70000, 2);
  ASSERT_TRUE(st->put("a", a, 70000).wait().is_ok());
  const std::string file_a = slot_file(dir.path(), ".a");
  ASSERT_FALSE(file_a.empty());
  AlignedBuffer r = AlignedBuffer::create(70000, PinMode::kNone).value();

  // A byte flipped on disk: the checksum catches it.
  int fd = ::open(file_a.c_str(), O_RDWR);
  const char bad = 0x5a;
  ASSERT_EQ(::pwrite(fd, &bad, 1, 12345), 1);
  Status s = st->get("a", r, 70000).wait();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("checksum mismatch in " + file_a), std::string::npos) << s.message();

  // Truncated underneath.
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  ::close(fd);
  s = st->get("a", r, 70000).wait();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("was truncated to 4096 bytes; it needs 73728"), std::string::npos) << s.message();

  // Deleted underneath; another tensor is unaffected.
  ASSERT_TRUE(st->put("b", b, 70000).wait().is_ok());
  ASSERT_EQ(::unlink(file_a.c_str()), 0);
  s = st->get("a", r, 70000).wait();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("was deleted underneath"), std::string::npos) << s.message();
  expect_holds(*st, "b", b, 70000);
}

TEST(NvmeStore, ClosedStoreRefusesWork) {
  ScratchDir dir;
  auto st = open_ok(opts(dir.path()));
  AlignedBuffer a = pattern(5000, 1);
  ASSERT_TRUE(st->put("k", a, 5000).wait().is_ok());
  ASSERT_TRUE(st->close().is_ok());
  EXPECT_TRUE(st->close().is_ok()) << "close is idempotent";
  EXPECT_EQ(st->put("k", a, 5000).wait().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st->get("k", a, 5000).wait().code(), StatusCode::kFailedPrecondition);
}

TEST(NvmeStore, KeepFilesLeavesDataAndIndex) {
  ScratchDir dir;
  NvmeStoreOptions o = opts(dir.path());
  o.keep_files = true;
  auto st = open_ok(o);
  AlignedBuffer a = pattern(5000, 1);
  ASSERT_TRUE(st->put("kept", a, 5000).wait().is_ok());
  ASSERT_TRUE(st->close().is_ok());
  const std::string file = slot_file(dir.path(), ".a");
  ASSERT_FALSE(file.empty());
  std::vector<char> back(5000);
  int fd = ::open(file.c_str(), O_RDONLY);
  ASSERT_EQ(::read(fd, back.data(), 5000), 5000);
  ::close(fd);
  EXPECT_EQ(std::memcmp(back.data(), a.data(), 5000), 0);
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/strata_store.index"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/strata.lock"));
}

// A store kept on close reopens with its tensors (checksums verified on read), and goes on
// rewriting them through its A/B slots.
TEST(NvmeStore, AKeptStoreReopensWithItsTensors) {
  ScratchDir dir;
  NvmeStoreOptions o = opts(dir.path());
  o.keep_files = true;
  AlignedBuffer a = pattern(5000, 1), b = pattern(70000, 2), a2 = pattern(5000, 3);
  {
    auto st = open_ok(o);
    ASSERT_TRUE(st->put("a", a, 5000).wait().is_ok());
    ASSERT_TRUE(st->put("b", b, 70000).wait().is_ok());
    ASSERT_TRUE(st->put("b", b, 70000).wait().is_ok());  // b's current copy is in its .b slot
    ASSERT_TRUE(st->close().is_ok());
  }
  o.reopen = true;
  auto st = open_ok(o);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->contains("a") && st->contains("b"));
  EXPECT_EQ(st->size_of("b").value(), 70000u);
  expect_holds(*st, "a", a, 5000);
  expect_holds(*st, "b", b, 70000);
  ASSERT_TRUE(st->put("b", b, 70000).wait().is_ok());
  ASSERT_TRUE(st->put("a", a2, 5000).wait().is_ok());
  expect_holds(*st, "a", a2, 5000);
  expect_holds(*st, "b", b, 70000);
}

// The index is read as untrusted input: each malformed line is DATA_LOSS naming it, the index can
// only name the key's own slot files, and a refused reopen deletes nothing.
TEST(NvmeStore, AReopenedIndexIsCheckedAndARefusalDeletesNothing) {
  ScratchDir dir;
  NvmeStoreOptions o = opts(dir.path());
  o.keep_files = true;
  AlignedBuffer a = pattern(5000, 1);
  {
    auto st = open_ok(o);
    ASSERT_TRUE(st->put("a", a, 5000).wait().is_ok());
    ASSERT_TRUE(st->close().is_ok());
  }
  const std::string index = dir.path() + "/strata_store.index";
  std::string good;
  {
    std::ifstream in(index);
    good.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  const std::string file =
      good.substr(good.find('\t', good.find('\n')) + 1,
                  good.find('\t', good.find('\t', good.find('\n')) + 1) - good.find('\t', good.find('\n')) - 1);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"# key\tfile\tbytes\txxh3\n", "line 1 is not"},
      {"# strata nvme store index 1\na\t" + file + "\t5000\n", "line 2: expected 4 tab-separated fields, found 3"},
      {"# strata nvme store index 1\na\t../../etc/passwd\t5000\tnone\n", "line 2: the file is not a plain file name"},
      {"# strata nvme store index 1\na\t" + file + "\t5000x\tnone\n", "line 2: the size is not a whole number"},
      {"# strata nvme store index 1\na\t" + file + "\t5000\tabc\n", "line 2: the checksum is not 16 hex digits"},
      {"# strata nvme store index 1\na\t" + file + "\t5000\tnone\na\tx.a\t1\tnone\n", "line 3: key 'a' appears twice"},
      {"# strata nvme store index 1\nb\t" + file + "\t5000\tnone\n", "is not one of its slot files"},
      {"# strata nvme store index 1\na\t" + file + "\t99999\tnone\n", "holds 8192 bytes, the index says 102400"},
  };
  o.reopen = true;
  for (const auto& [text, needle] : bad) {
    std::ofstream(index, std::ios::trunc) << text;
    auto st = NvmeStore::open(o);
    ASSERT_FALSE(st.is_ok()) << text;
    EXPECT_EQ(st.status().code(), StatusCode::kDataLoss) << st.status().to_string();
    EXPECT_NE(st.status().message().find(needle), std::string::npos) << st.status().message();
    EXPECT_TRUE(std::filesystem::exists(dir.path() + "/" + file)) << "a refused reopen deleted the kept file";
  }
  std::ofstream(index, std::ios::trunc) << good;
  auto st = open_ok(o);
  ASSERT_TRUE(st);
  expect_holds(*st, "a", a, 5000);
}

// A real full file system: a 1 MiB tmpfs (needs root; skipped elsewhere).
TEST(NvmeStoreFaults, RealFullFileSystem) {
  ScratchDir dir;
  const std::string mnt = dir.path() + "/small";
  ::mkdir(mnt.c_str(), 0755);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0)
    GTEST_SKIP() << "cannot mount a size-limited tmpfs here (needs root): " << std::strerror(errno);
  {
    auto st = open_ok(opts(mnt));
    ASSERT_TRUE(st);
    AlignedBuffer a = pattern(300000, 1), big = pattern(900000, 2), b = pattern(800000, 3);
    ASSERT_TRUE(st->put("a", a, 300000).wait().is_ok());
    // A second copy of "a" (the other slot) no longer fits next to it.
    Status s = st->put("a", big, 900000).wait();
    EXPECT_EQ(s.code(), StatusCode::kNoSpace) << s.to_string();
    expect_holds(*st, "a", a, 300000);
    s = st->put("b", b, 800000).wait();
    EXPECT_EQ(s.code(), StatusCode::kNoSpace) << s.to_string();
    EXPECT_NE(s.message().find("tensor 'b'"), std::string::npos) << s.message();
    EXPECT_FALSE(st->contains("b"));
    expect_holds(*st, "a", a, 300000);
    EXPECT_TRUE(st->close().is_ok());
  }
  ::umount(mnt.c_str());
}

}  // namespace
}  // namespace strata::offload
