// NvmeStore: named tensors in files under one directory (the NVMe tier), written and read
// asynchronously through the AioEngine from and into aligned (pinned) buffers.
//
// Each key has up to two slot files, A and B. A put writes the slot that does not hold the
// current content and makes it current only when the write completed, so a failed or ENOSPC
// write leaves the previous content readable. With in_place a key has one file, rewritten in
// place (half the disk): a failed write loses its content, and reads of it then fail with
// DATA_LOSS naming it until it is written again. Space is fallocate'd when a slot is first written
// or grows. Lengths are padded to 4096 inside; the caller passes and gets its exact byte count.
// A checksum (xxh3, on by default) per tensor is verified on every read. A lock file keeps a second
// store out of the directory; files are removed on close unless keep_files is set.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "offload/aio_engine.h"
#include "offload/aligned_buffer.h"

namespace strata::offload {

struct NvmeStoreOptions {
  std::string dir;  // must exist and be writable
  AioConfig aio;
  // xxh3 of every put, verified by every get: a file changed underneath is DATA_LOSS naming the
  // tensor, not wrong values (xxh3 runs at tens of GB/s, far above the disk; docs/nvme.md).
  bool checksum = true;
  bool keep_files = false;  // leave the tensor files (and an index) on close
  bool in_place = false;    // one file per key, rewritten in place (see above)
  // Open a store kept earlier (keep_files) in `dir`: its index is read (nvme_store_index.h), every
  // tensor's file checked for its size and adopted; reads verify the checksums the index holds.
  // Without an index, an empty store as usual.
  bool reopen = false;
};

class NvmeStore {
 public:
  // Checks the directory (exists, writable, O_DIRECT unless aio.allow_buffered_io), takes its
  // lock and starts the engine. Errors name the directory and the problem.
  static StatusOr<std::unique_ptr<NvmeStore>> open(const NvmeStoreOptions& options, IoSys* sys = nullptr);
  ~NvmeStore();  // close(); its errors are dropped, call close() to see them

  // Writes bytes [0, bytes) of buf as tensor `key`. buf must hold align_up(bytes) bytes and stay
  // untouched until the handle is done. Errors (argument, space, I/O) leave the key's previous
  // content readable. `on_io_done` (optional) runs on an I/O thread when the transfer itself
  // finished (not called for requests refused before any I/O); it must not call the store.
  // `checksum`: checksum_of(buf, bytes) when the caller already took it (while the bytes were in
  // its cache); otherwise put takes it on the calling thread. A wrong one reads back as DATA_LOSS.
  IoHandle put(const std::string& key, const AlignedBuffer& buf, size_t bytes, std::function<void()> on_io_done = {},
               IoPriority priority = IoPriority::kDemand, std::optional<uint64_t> checksum = std::nullopt);
  // Reads tensor `key` (exactly `bytes`, its stored length) into buf (capacity >= align_up(bytes)).
  // Fails with kNotFound for a key never written, kDataLoss for a file truncated or deleted
  // underneath or a checksum mismatch.
  // `check`: the caller verifies the checksum itself, where it uses the bytes (they come into
  // its cache there, and the I/O thread that submits the next requests does not hash): get fills
  // it at submission and skips its own check; the caller runs check->verify after the read.
  struct ReadCheck;
  IoHandle get(const std::string& key, AlignedBuffer& buf, size_t bytes, std::function<void()> on_io_done = {},
               IoPriority priority = IoPriority::kDemand, ReadCheck* check = nullptr);
  struct ReadCheck {
    bool active = false;  // the store keeps checksums and this tensor has one
    uint64_t sum = 0;
    std::string key, path;
    bool whole = false;  // sum is the XXH3-64 of the whole tensor (adopted from an index 1)
    // DATA_LOSS naming the tensor and its file when `data` (the read's bytes) does not match.
    Status verify(const void* data, size_t bytes) const;
    // The same for a checksum the caller took (checksum_of's value; whole: XXH3-64 of the bytes).
    Status verify_sum(uint64_t got) const;
  };

  bool checksums() const { return options_.checksum; }  // strata.nvme_checksum
  // The store's checksum: the XXH3-64 of the bytes when they fit one segment of kChecksumSegment,
  // else the XXH3-64 of the segments' XXH3-64 values in order. Segments hash independently: a
  // caller hashes them in parallel, or each where its bytes are in cache (the optimizer's update
  // hashes a segment right after updating it), and combines them. Held in memory and in the
  // index of a kept store, never in checkpoints.
  static constexpr size_t kChecksumSegment = size_t{256} << 10;
  static size_t checksum_segments(size_t bytes);                               // at least 1
  static uint64_t segment_checksum(const void* data, size_t bytes, size_t i);  // of segment i of `bytes`
  static uint64_t combine_checksums(const uint64_t* sums, size_t n);           // n segments' sums, in order
  static uint64_t checksum_of(const void* data, size_t bytes);                 // all of it, on this thread

  bool contains(const std::string& key) const;
  StatusOr<size_t> size_of(const std::string& key) const;
  // Deletes the key's files. Not while a read or write of it is in flight.
  Status remove(const std::string& key);
  // Waits for all I/O, closes and (unless keep_files) removes the files, releases the lock.
  Status close();

  const std::string& dir() const { return options_.dir; }
  bool direct_io() const { return direct_; }
  AioEngine& engine() { return *engine_; }

 private:
  struct Slot {
    int fd = -1;
    std::string path;
    uint64_t capacity = 0;  // bytes fallocate'd
  };
  struct Entry {
    Slot slots[2];
    int active = -1;  // slot holding the current content; -1 before the first completed put
    size_t length = 0;
    uint64_t checksum = 0;
    bool has_checksum = false;  // false for tensors adopted from an index written without checksums
    bool whole_sum = false;     // checksum is the XXH3-64 of the whole tensor (adopted from an index 1)
    bool lost = false;          // in place: the last write failed, the content is gone
    bool writing = false;
    int reading = 0;
  };

  NvmeStore(const NvmeStoreOptions& o, IoSys* sys) : options_(o), sys_(sys) {}
  Status prepare_slot(const std::string& key, Slot& slot, int index, uint64_t padded);
  std::string file_stem(const std::string& key) const;
  Status write_index() const;
  Status adopt_index();  // reopen

  NvmeStoreOptions options_;
  IoSys* sys_;
  bool direct_ = true;
  int lock_fd_ = -1;
  std::string lock_path_;
  std::unique_ptr<AioEngine> engine_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  bool closed_ = false;
};

}  // namespace strata::offload
