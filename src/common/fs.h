// Durable file helpers for what must survive a crash (checkpoints, traces): write a whole file
// and fsync it, fsync a directory, publish by rename, read a file back. Errors are Status with
// the path and errno text; short writes and EINTR are retried.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "src/common/status.h"

namespace strata::fs {

// Creates (or truncates) `path`, writes every byte, fsyncs and closes it.
Status write_file(const std::string& path, const void* data, size_t bytes);
inline Status write_file(const std::string& path, const std::string& text) {
  return write_file(path, text.data(), text.size());
}
// write_file to "<path>.tmp", rename over `path`, fsync the directory: readers see the old file or
// the whole new one.
Status write_file_atomic(const std::string& path, const std::string& text);
Status fsync_dir(const std::string& dir);
// rename(2) and fsync of the destination's directory.
Status rename_durable(const std::string& from, const std::string& to);
// The whole file. kNotFound if it does not exist.
StatusOr<std::string> read_file(const std::string& path);
// mkdir; an existing directory is fine.
Status make_dir(const std::string& dir);
// Removes a directory tree (files and subdirectories); a missing one is fine.
Status remove_tree(const std::string& dir);
bool exists(const std::string& path);
bool is_dir(const std::string& path);           // a directory (symlinks followed)
bool is_regular_file(const std::string& path);  // a regular file (symlinks followed)
// The names in `dir`, without "." and "..", sorted. kNotFound if it does not exist.
StatusOr<std::vector<std::string>> list_dir(const std::string& dir);
std::string parent_dir(const std::string& path);

}  // namespace strata::fs
