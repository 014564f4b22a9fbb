// The arguments of `strata train`, parsed without touching anything: flags into a TrainArgs, the
// engine config from the --config text plus the flags, and the model's options. Every number goes
// through the shared parsers of src/common/units.h (range checked, overflow refused by flag).
// Separate from the command so that tests and the fuzzer drive it directly.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "src/common/status.h"
#include "src/engine/config.h"
#include "src/train/trainer.h"

namespace strata::cli {

extern const char* const kTrainHelp;

struct TrainArgs {
  bool help = false;
  train::TrainOptions o;  // batch, seq, steps, ... as given (the shape is resolved by train_options)
  bool lr_given = false;
  std::string model = "tiny";
  int layers = 0, heads = 0, channels = 0, max_seq = 0;  // 0: the preset's
  std::string data = "strata_corpus.txt";
  bool data_given = false;
  std::string config_file;
  std::vector<std::pair<std::string, nlohmann::json>> sets;  // config settings of flags: JSON pointer, value
};

// Usage errors (an unknown option, a flag without its value) set *usage; a bad value does not.
StatusOr<TrainArgs> parse_train_args(const std::vector<std::string>& args, bool* usage);

// The engine config: the JSON text of --config (empty: none; `config_name` names it in errors)
// with the flags' settings on top.
StatusOr<engine::EngineConfig> train_config(const TrainArgs& a, const std::string& config_text,
                                            const std::string& config_name);

// The training options: the preset's shape with the flags' overrides, the default learning rate;
// a sequence longer than the model's max_seq is refused.
StatusOr<train::TrainOptions> train_options(const TrainArgs& a);

}  // namespace strata::cli
