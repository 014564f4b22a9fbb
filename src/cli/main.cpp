// strata: the command-line tool.
//   strata train [options]            (train_cmd.cpp; `strata train --help`)
//   strata checkpoint info   DIR [--tag TAG]
//   strata checkpoint verify DIR [--tag TAG]
//   strata checkpoint export DIR OUT [--tag TAG] [--dtype fp32|bf16|fp16] [--format strata|safetensors]
//   strata env [--nvme-path DIR]     (env_cmd.cpp: the build, GPUs, limits, an NVMe probe)
// DIR is a checkpoint directory or a root holding `latest`. Errors: one line on stderr, exit 1;
// usage errors exit 2.
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "src/engine/checkpoint_format.h"
#include "src/engine/weights_export.h"
#include "src/train/openmp_wait.h"

namespace {

using namespace strata;
namespace ckpt = strata::engine::ckpt;

int usage() {
  std::fprintf(
      stderr,
      "usage: strata train [options]   (strata train --help)\n"
      "       strata checkpoint info DIR [--tag TAG]\n"
      "       strata checkpoint verify DIR [--tag TAG]\n"
      "       strata checkpoint export DIR OUT [--tag TAG] [--dtype fp32|bf16|fp16] [--format strata|safetensors]\n"
      "       strata env [--nvme-path DIR] [--probe-size SIZE]\n");
  return 2;
}

int error(const Status& s) {
  std::fprintf(stderr, "strata: %s\n", s.to_string().c_str());
  return 1;
}

int checkpoint(const std::vector<std::string>& args) {
  if (args.size() < 2) return usage();
  const std::string& cmd = args[0];
  std::vector<std::string> pos;
  std::string tag, dtype = "fp32", fmt = "strata";
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--tag" && i + 1 < args.size()) {
      tag = args[++i];
    } else if (args[i] == "--dtype" && i + 1 < args.size()) {
      dtype = args[++i];
    } else if (args[i] == "--format" && i + 1 < args.size()) {
      fmt = args[++i];
    } else if (args[i].rfind("--", 0) == 0) {
      std::fprintf(stderr, "strata: unknown option %s\n", args[i].c_str());
      return usage();
    } else {
      pos.push_back(args[i]);
    }
  }
  if (pos.empty()) return usage();
  auto dir = ckpt::resolve(pos[0], tag);
  if (!dir.is_ok()) return error(dir.status());
  auto m = ckpt::read_manifest(dir.value());
  if (!m.is_ok()) return error(m.status());
  const ckpt::Manifest& man = m.value();
  uint64_t bytes = 0, numel = 0;
  for (const auto& c : man.chunks) bytes += c.file_bytes();
  for (const auto& p : man.params) numel += p.numel;
  if (cmd == "info" && pos.size() == 1) {
    std::printf(
        "%s: step %lld (%lld micro-batches), %zu params (%llu elements) in %zu chunks, %.1f MB, %s, stage %d, "
        "world size %d, loss scale %g, strata %s\n",
        dir.value().c_str(), static_cast<long long>(man.optimizer_step), static_cast<long long>(man.micro_steps),
        man.params.size(), static_cast<unsigned long long>(numel), man.chunks.size(), static_cast<double>(bytes) / 1e6,
        std::string(dtype_name(man.dtype)).c_str(), man.stage, man.world_size, man.scaler.scale,
        man.strata_version.c_str());
    return 0;
  }
  if (cmd == "verify" && pos.size() == 1) {
    if (Status s = ckpt::verify(dir.value(), man); !s.is_ok()) return error(s);
    std::printf("%s: OK, %zu chunk files, %llu bytes, every checksum verified\n", dir.value().c_str(),
                man.chunks.size(), static_cast<unsigned long long>(bytes));
    return 0;
  }
  if (cmd == "export" && pos.size() == 2) {
    DType d = DType::kF32;
    if (dtype == "bf16") {
      d = DType::kBF16;
    } else if (dtype == "fp16") {
      d = DType::kF16;
    } else if (dtype != "fp32") {
      std::fprintf(stderr, "strata: --dtype %s: expected fp32, bf16 or fp16\n", dtype.c_str());
      return 2;
    }
    auto format = ckpt::parse_weights_format(fmt);
    if (!format.is_ok()) {
      std::fprintf(stderr, "strata: --format: %s\n", format.status().message().c_str());
      return 2;
    }
    ckpt::ExportOptions o;
    o.dtype = d;
    o.format = format.value();
    if (Status s = ckpt::export_checkpoint(dir.value(), pos[1], o); !s.is_ok()) return error(s);
    std::printf("%s: %zu params exported to %s (%s, %s)\n", dir.value().c_str(), man.params.size(), pos[1].c_str(),
                dtype.c_str(), fmt.c_str());
    return 0;
  }
  return usage();
}

}  // namespace

int train_command(const std::vector<std::string>& args);  // train_cmd.cpp
int env_command(const std::vector<std::string>& args);    // env_cmd.cpp

int run(const std::vector<std::string>& args) {
  if (args.empty()) return usage();
  if (args[0] == "checkpoint") return checkpoint({args.begin() + 1, args.end()});
  if (args[0] == "train") return train_command({args.begin() + 1, args.end()});
  if (args[0] == "env") return env_command({args.begin() + 1, args.end()});
  return usage();
}

// No exception ends the process with an abort: whatever escapes is one line and exit 1.
int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "train") strata::train::prefer_passive_openmp(argv);
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "strata: OUT_OF_MEMORY: a host allocation failed (the run needs more memory than the machine gives; "
                 "lower the sizes asked for)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata: INTERNAL: unexpected exception: %s (please report it)\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "strata: INTERNAL: unexpected exception (please report it)\n");
  }
  return 1;
}
