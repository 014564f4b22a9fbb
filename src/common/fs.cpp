// Durable file helpers: POSIX calls with EINTR / short-transfer loops and errno in every error.
#include "src/common/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace strata::fs {
namespace {
Status errno_status(const std::string& what, int e) {
  const StatusCode code = (e == ENOSPC || e == EDQUOT) ? StatusCode::kNoSpace
                          : e == ENOENT                ? StatusCode::kNotFound
                                                       : StatusCode::kIo;
  return Status(code, what + ": " + std::strerror(e));
}
}  // namespace

Status write_file(const std::string& path, const void* data, size_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_status("cannot create " + path, errno);
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::write(fd, p + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : ENOSPC;
      ::close(fd);
      return errno_status(
          "writing " + path + " (" + std::to_string(done) + " of " + std::to_string(bytes) + " bytes written)", e);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int e = errno;
    ::close(fd);
    return errno_status("fsync of " + path, e);
  }
  if (::close(fd) != 0) return errno_status("closing " + path, errno);
  return Status::ok();
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status("cannot open directory " + dir, errno);
  const int r = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (r != 0 && e != EINVAL) return errno_status("fsync of directory " + dir, e);
  return Status::ok();
}

Status rename_durable(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return errno_status("renaming " + from + " to " + to, errno);
  return fsync_dir(parent_dir(to));
}

Status write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  Status s = write_file(tmp, text);
  if (s.is_ok()) s = rename_durable(tmp, path);
  if (!s.is_ok()) ::unlink(tmp.c_str());
  return s;
}

StatusOr<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_status("cannot open " + path, errno);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      ::close(fd);
      return errno_status("reading " + path, e);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return errno_status("cannot create directory " + dir, errno);
  return Status::ok();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

StatusOr<std::vector<std::string>> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return errno_status("cannot open directory " + dir, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

Status remove_tree(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return Status::ok();
    if (errno == ENOTDIR) return ::unlink(dir.c_str()) == 0 ? Status::ok() : errno_status("removing " + dir, errno);
    return errno_status("cannot open directory " + dir, errno);
  }
  Status first;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    Status r = S_ISDIR(st.st_mode)        ? remove_tree(p)
               : ::unlink(p.c_str()) == 0 ? Status::ok()
                                          : errno_status("removing " + p, errno);
    if (first.is_ok() && !r.is_ok()) first = std::move(r);
  }
  ::closedir(d);
  if (::rmdir(dir.c_str()) != 0 && first.is_ok()) first = errno_status("removing directory " + dir, errno);
  return first;
}

}  // namespace strata::fs
