// Settings of the libaio engine, under the keys a DeepSpeed user already has in the "aio" section
// of a config ("block_size", "queue_depth", "intra_op_parallelism", "single_submit",
// "overlap_events"), plus strata's "allow_buffered_io". Defaults were chosen by bench/nvme (see
// docs/nvme.md).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <string_view>

#include "src/common/status.h"

namespace strata::offload {

struct AioConfig {
  size_t block_size = size_t{1} << 20;  // bytes per I/O request; power of two, 4 KiB .. 64 MiB
  int queue_depth = 32;                 // requests in flight per thread, 1 .. 1024
  int intra_op_parallelism = 1;         // submission/completion threads (each its own io context), 1 .. 64
  bool single_submit = false;           // io_submit one request per call instead of batches
  bool overlap_events = true;      // reap completions one at a time and refill at once; false: wait for the whole batch
  bool allow_buffered_io = false;  // fall back to buffered I/O where the file system has no O_DIRECT
  // Background blocks (IoPriority::kBackground) in flight per thread, 1 .. queue_depth; demand
  // blocks use the rest of queue_depth and go first.
  int background_depth = 4;
};

// Ranges above; the message names the key ("aio.queue_depth = 0: must be in 1 .. 1024").
Status validate_aio_config(const AioConfig& c);

// Reads the "aio" object of a config. Missing keys keep their defaults; unknown keys, wrong types
// and out-of-range values are errors that name the key.
StatusOr<AioConfig> parse_aio_config(const nlohmann::json& aio);
// The same from JSON text holding the "aio" object itself.
StatusOr<AioConfig> parse_aio_config_text(std::string_view text);

}  // namespace strata::offload
