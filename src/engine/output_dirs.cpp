// Where strata may write and what it may replace (output_dirs.h).
#include "src/engine/output_dirs.h"

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <utility>

#include "src/common/fs.h"
#include "src/common/json_text.h"
#include "src/engine/checkpoint_format.h"

namespace strata::engine::ckpt {
namespace {

bool chunk_file(const std::string& name) {
  if (name.size() < 10 || name.rfind("chunk", 0) != 0 || name.compare(name.size() - 4, 4, ".bin") != 0) return false;
  return std::all_of(name.begin() + 5, name.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
}

// A directory holding only names `ours` accepts (and at least one of them when `nonempty`).
bool only(const std::string& dir, bool (*ours)(const std::string&), bool nonempty) {
  auto names = fs::list_dir(dir);
  if (!names.is_ok()) return false;
  for (const std::string& n : names.value())
    if (!ours(n) || !fs::is_regular_file(dir + "/" + n)) return false;
  return !nonempty || !names.value().empty();
}

bool checkpoint_file(const std::string& n) { return n == "manifest.json" || chunk_file(n); }
bool export_file(const std::string& n) {
  return n == kExportMarker || n == "index.json" || n == "weights.bin" || n == "model.safetensors" ||
         n == "config.json";
}

// The optimizer step a checkpoint's manifest records (-1 when unreadable).
int64_t step_of(const std::string& dir) {
  auto text = fs::read_file(dir + "/manifest.json");
  if (!text.is_ok()) return -1;
  const nlohmann::json j = nlohmann::json::parse(text.value(), nullptr, false);
  if (!j.is_object() || !j.contains("optimizer_step") || !j["optimizer_step"].is_number_integer()) return -1;
  return j["optimizer_step"].get<int64_t>();
}

std::string latest_tag(const std::string& root) {
  auto t = fs::read_file(root + "/latest");
  if (!t.is_ok()) return "";
  std::string tag = t.value();
  while (!tag.empty() && (tag.back() == '\n' || tag.back() == ' ')) tag.pop_back();
  return tag;
}

}  // namespace

bool is_checkpoint(const std::string& dir) {
  auto text = fs::read_file(dir + "/manifest.json");
  if (!text.is_ok()) return false;
  const nlohmann::json j = nlohmann::json::parse(text.value(), nullptr, false);
  return j.is_object() && j.contains("format") && j["format"] == kFormat;
}

bool is_export(const std::string& dir) {
  return fs::is_regular_file(dir + "/" + kExportMarker) && only(dir, export_file, true);
}

Status check_checkpoint_root(const std::string& root) {
  if (root.empty()) return invalid_argument("the checkpoint directory is empty");
  if (!fs::exists(root)) return Status::ok();
  if (!fs::is_dir(root))
    return Status(StatusCode::kAlreadyExists,
                  "'" + root +
                      "' is a file, not a directory: strata saves checkpoints into a "
                      "directory and does not replace what it did not write; choose another path");
  const std::string latest = root + "/latest";
  if (!fs::exists(latest)) return Status::ok();
  const std::string tag = latest_tag(root);
  const bool ours = fs::is_regular_file(latest) && !tag.empty() && tag.size() < 256 &&
                    tag.find('/') == std::string::npos && tag.find('\n') == std::string::npos;
  if (!ours)
    return failed_precondition("'" + latest + "' is not a strata 'latest' file (it holds \"" + printable(tag, 40) +
                               "\"): strata would overwrite it; move it away or save elsewhere");
  return Status::ok();
}

Status check_checkpoint_target(const std::string& root, const std::string& tag) {
  const std::string dir = root + "/" + tag;
  if (!fs::exists(dir) || is_checkpoint(dir)) return Status::ok();
  auto names = fs::list_dir(dir);
  if (fs::is_dir(dir) && names.is_ok() && names.value().empty()) return Status::ok();
  return Status(StatusCode::kAlreadyExists, "'" + dir +
                                                "' exists and is not a strata checkpoint: strata replaces only its own "
                                                "checkpoints; move it away or save under another tag");
}

StatusOr<std::vector<std::string>> remove_stale_saves(const std::string& root) {
  std::vector<std::string> removed;
  if (!fs::is_dir(root)) return removed;
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, fs::list_dir(root));
  for (const std::string& n : names) {
    const std::string p = root + "/" + n;
    const bool tmp = n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0;
    if (!tmp) continue;
    if (n == "latest.tmp" ? fs::is_regular_file(p) : (fs::is_dir(p) && only(p, checkpoint_file, false))) {
      STRATA_RETURN_IF_ERROR(fs::remove_tree(p));
      removed.push_back(n);
    }
  }
  return removed;
}

StatusOr<std::vector<std::string>> keep_newest(const std::string& root, int keep) {
  std::vector<std::string> removed;
  if (keep < 1) return invalid_argument("keep_newest: keep = " + std::to_string(keep) + ", must be >= 1");
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, fs::list_dir(root));
  std::vector<std::pair<int64_t, std::string>> ckpts;
  for (const std::string& n : names)
    if (fs::is_dir(root + "/" + n) && is_checkpoint(root + "/" + n)) ckpts.emplace_back(step_of(root + "/" + n), n);
  std::sort(ckpts.begin(), ckpts.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second > b.second; });
  const std::string latest = latest_tag(root);
  for (size_t i = static_cast<size_t>(keep); i < ckpts.size(); ++i) {
    if (ckpts[i].second == latest) continue;
    STRATA_RETURN_IF_ERROR(fs::remove_tree(root + "/" + ckpts[i].second));
    removed.push_back(ckpts[i].second);
  }
  return removed;
}

Status check_export_target(const std::string& out) {
  if (out.empty()) return invalid_argument("export: the output directory is empty");
  if (fs::exists(out)) {
    if (!fs::is_dir(out))
      return Status(StatusCode::kAlreadyExists, "export to '" + out +
                                                    "': a file is there; strata replaces only an earlier "
                                                    "export of its own: choose another path");
    auto names = fs::list_dir(out);
    if (!names.is_ok()) return names.status();
    if (!names.value().empty() && !is_export(out)) {
      std::string shown;
      for (size_t i = 0; i < names.value().size() && i < 3; ++i)
        shown += (i ? ", " : "") + printable(names.value()[i], 40);
      if (names.value().size() > 3) shown += ", ...";
      return Status(
          StatusCode::kAlreadyExists,
          "export to '" + out + "': the directory holds files strata did not write (" + shown +
              "); strata replaces only an empty directory or an earlier export of its own: choose another path");
    }
  }
  const std::string tmp = out + ".strata-tmp";
  if (fs::exists(tmp)) {
    if (!fs::is_dir(tmp) || !only(tmp, export_file, false))
      return Status(StatusCode::kAlreadyExists,
                    "export to '" + out + "': '" + tmp + "' is in the way and is not strata's");
    STRATA_RETURN_IF_ERROR(fs::remove_tree(tmp));  // left by an export that died
  }
  return Status::ok();
}

}  // namespace strata::engine::ckpt
