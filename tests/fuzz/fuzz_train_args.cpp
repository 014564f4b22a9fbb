// Fuzz target: `strata train`'s argument parser, with the config and model options built from
// what it accepts (no file is read, nothing runs). The input is the argument list, NUL-separated.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "src/cli/train_args.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.emplace_back();
    } else {
      args.back() += static_cast<char>(data[i]);
    }
  }
  bool usage = false;
  auto a = strata::cli::parse_train_args(args, &usage);
  if (!a.is_ok() || a.value().help) return 0;
  // --config's text, when the arguments name one, is the argument list itself: any text.
  const std::string text = a.value().config_file.empty() ? std::string() : a.value().config_file;
  (void)strata::cli::train_config(a.value(), text, "--config");
  auto o = strata::cli::train_options(a.value());
  if (o.is_ok() && (o.value().seq > o.value().shape.max_seq || o.value().batch < 1)) __builtin_trap();
  return 0;
}
