// NvmeStore: slot files, preallocation, checksums, the directory lock.
#include "offload/nvme_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "offload/nvme_store_index.h"
#include "src/common/check.h"
#include "src/common/xxh3.h"

namespace strata::offload {
namespace {

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

std::string quoted(const std::string& key) { return "tensor '" + key + "'"; }

Status syscall_error(const std::string& what) {
  const int err = errno;
  return errno_status(err, what.c_str(), __FILE__, __LINE__);
}

}  // namespace

StatusOr<std::unique_ptr<NvmeStore>> NvmeStore::open(const NvmeStoreOptions& options, IoSys* sys) {
  STRATA_RETURN_IF_ERROR(validate_aio_config(options.aio));
  if (options.dir.empty()) return invalid_argument("nvme_path is empty");
  std::unique_ptr<NvmeStore> s(new NvmeStore(options, sys != nullptr ? sys : &real_io_sys()));
  struct stat st {};
  if (::stat(options.dir.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return not_found("nvme_path '" + options.dir + "' does not exist");
    return errno_status(err, ("stat of nvme_path '" + options.dir + "'").c_str(), __FILE__, __LINE__);
  }
  if (!S_ISDIR(st.st_mode)) return invalid_argument("nvme_path '" + options.dir + "' is not a directory");

  // The lock: a second store (in this process or another) on the same directory is refused.
  s->lock_path_ = options.dir + "/strata.lock";
  s->lock_fd_ = ::open(s->lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd_ < 0) {
    const int err = errno;
    if (err == EACCES || err == EROFS || err == EPERM)
      return Status(StatusCode::kIo, "nvme_path '" + options.dir + "' is not writable: " + std::strerror(err));
    return errno_status(err, ("creating " + s->lock_path_).c_str(), __FILE__, __LINE__);
  }
  if (::flock(s->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    (void)::pread(s->lock_fd_, pid, sizeof(pid) - 1, 0);
    for (char* c = pid; *c != '\0'; ++c)
      if (*c < '0' || *c > '9') *c = '\0';  // the pid's digits only (the file ends in a newline)
    ::close(s->lock_fd_);
    s->lock_fd_ = -1;
    return Status(StatusCode::kAlreadyExists,
                  "nvme_path '" + options.dir + "' is in use by another strata store (lock " + s->lock_path_ +
                      " held by pid " + (pid[0] != '\0' ? std::string(pid) : std::string("?")) + ")");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(s->lock_fd_, 0) != 0 || ::pwrite(s->lock_fd_, pid.data(), pid.size(), 0) < 0)
    return syscall_error("writing " + s->lock_path_);

  // O_DIRECT: refuse a file system without it unless buffered I/O is allowed, and say so.
  const std::string probe = options.dir + "/strata.direct_probe";
  int fd = s->sys_->open(probe.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EINVAL) {
    if (!options.aio.allow_buffered_io)
      return unsupported("the file system of nvme_path '" + options.dir +
                         "' does not support O_DIRECT; set aio.allow_buffered_io = true to use buffered I/O "
                         "(slower, goes through the page cache)");
    s->direct_ = false;
    std::fprintf(stderr, "strata: nvme_path '%s' has no O_DIRECT; using buffered I/O (aio.allow_buffered_io)\n",
                 options.dir.c_str());
  } else if (fd < 0) {
    return syscall_error("creating " + probe);
  } else {
    s->sys_->close(fd);
  }
  s->sys_->unlink(probe.c_str());

  STRATA_ASSIGN_OR_RETURN(s->engine_, AioEngine::create(options.aio, s->sys_));
  if (options.reopen) {
    if (Status a = s->adopt_index(); !a.is_ok()) {
      // Refused: forget what was adopted so far without deleting a byte of it.
      std::lock_guard<std::mutex> lock(s->mu_);
      for (auto& [key, e] : s->entries_)
        for (Slot& slot : e.slots)
          if (slot.fd >= 0) s->sys_->close(slot.fd);
      s->entries_.clear();
      return a;
    }
  }
  return s;
}

NvmeStore::~NvmeStore() { (void)close(); }

std::string NvmeStore::file_stem(const std::string& key) const {
  std::string clean;
  for (char c : key.substr(0, 64))
    clean += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
  return options_.dir + "/" + clean + "-" + hex64(xxh3_64(key.data(), key.size()));
}

Status NvmeStore::prepare_slot(const std::string& key, Slot& slot, int index, uint64_t padded) {
  if (slot.fd < 0) {
    slot.path = file_stem(key) + (index == 0 ? ".a" : ".b");
    const int flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | (direct_ ? O_DIRECT : 0);
    slot.fd = sys_->open(slot.path.c_str(), flags, 0600);
    if (slot.fd < 0) return syscall_error("creating " + slot.path + " for " + quoted(key));
    slot.capacity = 0;
  }
  if (slot.capacity < padded) {
    if (sys_->fallocate(slot.fd, 0, 0, static_cast<off_t>(padded)) != 0) {
      const int err = errno;
      Status s = errno_status(
          err, ("fallocate of " + std::to_string(padded) + " bytes for " + quoted(key) + " in " + slot.path).c_str(),
          __FILE__, __LINE__);
      if (slot.capacity == 0) {  // a slot that never held data: give its file back
        sys_->close(slot.fd);
        sys_->unlink(slot.path.c_str());
        slot.fd = -1;
      }
      return s;
    }
    slot.capacity = padded;
  }
  return Status::ok();
}

size_t NvmeStore::checksum_segments(size_t bytes) {
  return bytes <= kChecksumSegment ? 1 : (bytes + kChecksumSegment - 1) / kChecksumSegment;
}

uint64_t NvmeStore::segment_checksum(const void* data, size_t bytes, size_t i) {
  const size_t at = i * kChecksumSegment;
  return xxh3_64(static_cast<const uint8_t*>(data) + at, std::min(kChecksumSegment, bytes - at));
}

uint64_t NvmeStore::combine_checksums(const uint64_t* sums, size_t n) {
  return n == 1 ? sums[0] : xxh3_64(sums, n * sizeof(uint64_t));
}

uint64_t NvmeStore::checksum_of(const void* data, size_t bytes) {
  const size_t n = checksum_segments(bytes);
  if (n == 1) return xxh3_64(data, bytes);
  std::vector<uint64_t> sums(n);
  for (size_t i = 0; i < n; ++i) sums[i] = segment_checksum(data, bytes, i);
  return combine_checksums(sums.data(), n);
}

IoHandle NvmeStore::put(const std::string& key, const AlignedBuffer& buf, size_t bytes,
                        std::function<void()> on_io_done, IoPriority priority, std::optional<uint64_t> checksum) {
  const uint64_t padded = align_up(bytes == 0 ? 1 : bytes);
  if (key.empty()) return IoHandle::finished(invalid_argument("put: the key is empty"));
  if (buf.capacity() < padded)
    return IoHandle::finished(invalid_argument(
        "put of " + quoted(key) + ": buffer holds " + std::to_string(buf.capacity()) + " bytes, needs " +
        std::to_string(padded) + " (" + std::to_string(bytes) + " padded to 4096)"));
  Entry* e = nullptr;
  int target = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return IoHandle::finished(failed_precondition("put of " + quoted(key) + ": the store is closed"));
    e = &entries_[key];
    if (e->writing || e->reading > 0)
      return IoHandle::finished(failed_precondition("put of " + quoted(key) + ": a read or write of it is in flight"));
    e->writing = true;
    target = options_.in_place ? 0 : (e->active == 0 ? 1 : 0);
  }
  Status prep = prepare_slot(key, e->slots[target], target, padded);
  if (!prep.is_ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    e->writing = false;
    if (e->active < 0 && e->slots[0].fd < 0 && e->slots[1].fd < 0) entries_.erase(key);
    return IoHandle::finished(std::move(prep));
  }
  const uint64_t sum = !options_.checksum ? 0 : checksum ? *checksum : checksum_of(buf.data(), bytes);
  const Slot& slot = e->slots[target];
  return engine_->submit(
      IoOp::kWrite, slot.fd, slot.path, buf.data(), 0, padded, direct_,
      [this, e, target, bytes, sum, key, on_io_done = std::move(on_io_done)](Status s) {
        if (on_io_done) on_io_done();
        std::lock_guard<std::mutex> lock(mu_);
        e->writing = false;
        if (!s.is_ok() && options_.in_place && e->active >= 0) {
          e->lost = true;
          return std::move(s).annotate("put of " + quoted(key) +
                                       " (rewritten in place: its previous content is lost; the last "
                                       "checkpoint is the recovery point)");
        }
        if (!s.is_ok()) return std::move(s).annotate("put of " + quoted(key) + " (previous content kept)");
        e->lost = false;
        e->active = target;
        e->length = bytes;
        e->checksum = sum;
        e->has_checksum = options_.checksum;
        e->whole_sum = false;
        return Status::ok();
      },
      priority);
}

Status NvmeStore::ReadCheck::verify(const void* data, size_t bytes) const {
  if (!active) return Status::ok();
  return verify_sum(whole ? xxh3_64(data, bytes) : checksum_of(data, bytes));
}

Status NvmeStore::ReadCheck::verify_sum(uint64_t got) const {
  if (!active || got == sum) return Status::ok();
  return Status(StatusCode::kDataLoss, "get of " + quoted(key) + ": checksum mismatch in " + path + " (stored " +
                                           hex64(sum) + ", read " + hex64(got) + ")");
}

IoHandle NvmeStore::get(const std::string& key, AlignedBuffer& buf, size_t bytes, std::function<void()> on_io_done,
                        IoPriority priority, ReadCheck* caller_check) {
  Entry* e = nullptr;
  Slot slot;
  uint64_t sum = 0;
  bool check = false, whole = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return IoHandle::finished(failed_precondition("get of " + quoted(key) + ": the store is closed"));
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.active < 0)
      return IoHandle::finished(
          not_found("get of " + quoted(key) + ": it was never written to '" + options_.dir + "'"));
    e = &it->second;
    if (e->writing)
      return IoHandle::finished(failed_precondition("get of " + quoted(key) + ": a write of it is in flight"));
    if (e->lost)
      return IoHandle::finished(Status(StatusCode::kDataLoss, "get of " + quoted(key) +
                                                                  ": its last in-place write failed and its content is "
                                                                  "lost (resume from the last checkpoint)"));
    if (bytes != e->length)
      return IoHandle::finished(invalid_argument("get of " + quoted(key) + ": it holds " + std::to_string(e->length) +
                                                 " bytes, asked for " + std::to_string(bytes)));
    if (buf.capacity() < align_up(bytes == 0 ? 1 : bytes))
      return IoHandle::finished(invalid_argument("get of " + quoted(key) + ": buffer holds " +
                                                 std::to_string(buf.capacity()) + " bytes, needs " +
                                                 std::to_string(align_up(bytes == 0 ? 1 : bytes))));
    slot = e->slots[e->active];
    sum = e->checksum;
    check = options_.checksum && e->has_checksum;
    whole = e->whole_sum;
    ++e->reading;
  }
  const uint64_t padded = align_up(bytes == 0 ? 1 : bytes);
  auto fail = [&](Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    --e->reading;
    return IoHandle::finished(std::move(s));
  };
  struct stat st {};
  if (sys_->fstat(slot.fd, &st) != 0) return fail(syscall_error("fstat of " + slot.path));
  if (st.st_nlink == 0)
    return fail(
        Status(StatusCode::kDataLoss, "get of " + quoted(key) + ": its file " + slot.path + " was deleted underneath"));
  if (static_cast<uint64_t>(st.st_size) < padded)
    return fail(Status(StatusCode::kDataLoss, "get of " + quoted(key) + ": its file " + slot.path +
                                                  " was truncated to " + std::to_string(st.st_size) +
                                                  " bytes; it needs " + std::to_string(padded)));
  void* data = buf.data();
  NvmeStore::ReadCheck own{check, sum, key, slot.path, whole};
  if (caller_check != nullptr) {
    *caller_check = std::move(own);
    own = NvmeStore::ReadCheck{};
  }
  return engine_->submit(
      IoOp::kRead, slot.fd, slot.path, data, 0, padded, direct_,
      [this, e, own = std::move(own), data, bytes, key, on_io_done = std::move(on_io_done)](Status s) {
        if (on_io_done) on_io_done();
        {
          std::lock_guard<std::mutex> lock(mu_);
          --e->reading;
        }
        if (!s.is_ok()) return std::move(s).annotate("get of " + quoted(key));
        return own.verify(data, bytes);
      },
      priority);
}

bool NvmeStore::contains(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  return it != entries_.end() && it->second.active >= 0;
}

StatusOr<size_t> NvmeStore::size_of(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.active < 0) return not_found(quoted(key) + " was never written");
  return it->second.length;
}

Status NvmeStore::remove(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return not_found("remove of " + quoted(key) + ": no such tensor");
  if (it->second.writing || it->second.reading > 0)
    return failed_precondition("remove of " + quoted(key) + ": a read or write of it is in flight");
  for (Slot& s : it->second.slots) {
    if (s.fd < 0) continue;
    sys_->close(s.fd);
    sys_->unlink(s.path.c_str());
  }
  entries_.erase(it);
  return Status::ok();
}

Status NvmeStore::write_index() const {
  const std::string path = options_.dir + "/" + kStoreIndexFile;
  std::vector<StoreIndexEntry> rows;
  for (const auto& [key, e] : entries_) {
    if (e.active < 0) continue;
    const std::string& p = e.slots[e.active].path;
    rows.push_back({key, p.substr(p.find_last_of('/') + 1), e.length, e.has_checksum, e.checksum});
  }
  std::ofstream f(path, std::ios::trunc);
  f << format_store_index(rows);
  f.close();
  if (!f) return Status(StatusCode::kIo, "writing the index " + path + " failed");
  return Status::ok();
}

Status NvmeStore::adopt_index() {
  const std::string path = options_.dir + "/" + kStoreIndexFile;
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::ok();  // nothing kept here: an empty store
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  STRATA_ASSIGN_OR_RETURN(std::vector<StoreIndexEntry> rows, parse_store_index(text, path));
  std::lock_guard<std::mutex> lock(mu_);
  for (const StoreIndexEntry& r : rows) {
    // Only the slot files this store names for the key: the index cannot point it elsewhere.
    const std::string stem = file_stem(r.key);
    const std::string base = stem.substr(stem.find_last_of('/') + 1);
    const int slot = r.file == base + ".a" ? 0 : r.file == base + ".b" ? 1 : -1;
    if (slot < 0)
      return Status(StatusCode::kDataLoss, path + ": tensor '" + r.key + "': file '" + r.file +
                                               "' is not one of its slot files (" + base + ".a / .b)");
    Entry& e = entries_[r.key];
    Slot& s = e.slots[slot];
    s.path = options_.dir + "/" + r.file;
    s.fd = sys_->open(s.path.c_str(), O_RDWR | O_CLOEXEC | (direct_ ? O_DIRECT : 0), 0600);
    if (s.fd < 0) {
      const int err = errno;
      return Status(err == ENOENT ? StatusCode::kDataLoss : StatusCode::kIo,
                    path + ": tensor '" + r.key + "': cannot open its file " + s.path + ": " + std::strerror(err));
    }
    struct stat st {};
    const uint64_t padded = align_up(r.bytes == 0 ? 1 : r.bytes);
    if (sys_->fstat(s.fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < padded)
      return Status(StatusCode::kDataLoss, path + ": tensor '" + r.key + "': its file " + s.path + " holds " +
                                               std::to_string(st.st_size) + " bytes, the index says " +
                                               std::to_string(padded));
    s.capacity = static_cast<uint64_t>(st.st_size);
    e.active = slot;
    e.length = r.bytes;
    e.checksum = r.xxh3;
    e.has_checksum = r.has_xxh3;
    e.whole_sum = r.whole;
  }
  return Status::ok();
}

Status NvmeStore::close() {
  {
    // Refuse new puts and gets first, so nothing slips in between the wait and the cleanup.
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return Status::ok();
    closed_ = true;
  }
  if (engine_) engine_->wait_all();
  std::lock_guard<std::mutex> lock(mu_);
  Status result;
  if (options_.keep_files) result = write_index();
  for (auto& [key, e] : entries_) {
    for (Slot& s : e.slots) {
      if (s.fd < 0) continue;
      sys_->close(s.fd);
      const bool keep = options_.keep_files && &s == &e.slots[e.active < 0 ? 0 : e.active] && e.active >= 0;
      if (!keep) sys_->unlink(s.path.c_str());
    }
  }
  entries_.clear();
  engine_.reset();
  if (lock_fd_ >= 0) {
    ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  return result;
}

}  // namespace strata::offload
