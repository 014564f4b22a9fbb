// The rule for every path strata writes checkpoints and exports to: never delete what strata did
// not write. A path is replaced only when it is recognisably strata's own — a checkpoint (its
// manifest.json says "strata-checkpoint"), an export (its marker file), a temporary directory
// holding only strata's files — or empty; anything else is refused with an error naming it,
// before any work. Also: stale temporaries of crashed saves, and pruning to the newest N.
#pragma once

#include <string>
#include <vector>

#include "src/common/status.h"

namespace strata::engine::ckpt {

// The file every weights export holds beside index.json and weights.bin.
inline constexpr const char* kExportMarker = ".strata-export";

// Whether `dir` is a strata checkpoint directory (manifest.json with format "strata-checkpoint").
bool is_checkpoint(const std::string& dir);
// Whether `dir` is a strata export: its marker is there and nothing but strata's files.
bool is_export(const std::string& dir);

// A checkpoint root (--save DIR) that strata may write into: missing (it is created), or a
// directory whose `latest`, if present, is strata's (a regular file naming a tag). A regular file
// or anything else is refused (ALREADY_EXISTS / FAILED_PRECONDITION).
Status check_checkpoint_root(const std::string& root);
// <root>/<tag> may be written: absent, empty, or an earlier strata checkpoint.
Status check_checkpoint_target(const std::string& root, const std::string& tag);
// Removes the temporary directories crashed saves left in `root` ("<tag>.tmp" holding only chunk
// files and a manifest) and a stale "latest.tmp"; returns the names removed. Anything else that
// ends in ".tmp" stays.
StatusOr<std::vector<std::string>> remove_stale_saves(const std::string& root);
// Keeps the `keep` newest checkpoints in `root` (by optimizer step, then name) and the one
// `latest` names; deletes the other strata checkpoints there and returns their names. Directories
// that are not strata checkpoints are never touched.
StatusOr<std::vector<std::string>> keep_newest(const std::string& root, int keep);

// An export to `out` may go ahead: `out` is absent, an empty directory, or an earlier export; and
// its temporary `out`.strata-tmp is absent or a stale one of strata's (then removed).
Status check_export_target(const std::string& out);

}  // namespace strata::engine::ckpt
