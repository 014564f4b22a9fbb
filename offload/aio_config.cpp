// Parsing and validation of the "aio" config section.
#include "offload/aio_config.h"

#include <nlohmann/json.hpp>

#include <string>

#include "src/common/json_text.h"
#include "src/common/units.h"

namespace strata::offload {
namespace {

Status bad(const std::string& key, const std::string& what) { return invalid_argument("aio." + key + ": " + what); }

StatusOr<int64_t> get_int(const nlohmann::json& v, const std::string& key, int64_t lo, int64_t hi) {
  if (!v.is_number()) return bad(key, "expected an integer, got " + v.dump());
  return whole_in_range(v.get<double>(), "aio." + key, v.dump(), lo, hi);
}

StatusOr<bool> get_bool(const nlohmann::json& v, const std::string& key) {
  if (!v.is_boolean()) return bad(key, "expected true or false, got " + v.dump());
  return v.get<bool>();
}

}  // namespace

Status validate_aio_config(const AioConfig& c) {
  const size_t bs = c.block_size;
  if (bs < 4096 || bs > (size_t{64} << 20) || (bs & (bs - 1)) != 0)
    return bad("block_size", std::to_string(bs) + ": must be a power of two from 4096 to 67108864");
  if (c.queue_depth < 1 || c.queue_depth > 1024)
    return bad("queue_depth", std::to_string(c.queue_depth) + ": must be in 1 .. 1024");
  if (c.intra_op_parallelism < 1 || c.intra_op_parallelism > 64)
    return bad("intra_op_parallelism", std::to_string(c.intra_op_parallelism) + ": must be in 1 .. 64");
  if (c.background_depth < 1 || c.background_depth > 1024)
    return bad("background_depth", std::to_string(c.background_depth) + ": must be in 1 .. 1024");
  return Status::ok();
}

StatusOr<AioConfig> parse_aio_config(const nlohmann::json& aio) {
  if (!aio.is_object()) return invalid_argument("aio: expected an object, got " + aio.dump());
  AioConfig c;
  for (const auto& [key, v] : aio.items()) {
    if (key == "block_size") {
      STRATA_ASSIGN_OR_RETURN(int64_t n, get_int(v, key, 4096, 64 << 20));
      c.block_size = static_cast<size_t>(n);
    } else if (key == "queue_depth" || key == "intra_op_parallelism" || key == "background_depth") {
      STRATA_ASSIGN_OR_RETURN(int64_t n, get_int(v, key, 1, key == "intra_op_parallelism" ? 64 : 1024));
      (key == "queue_depth"            ? c.queue_depth
       : key == "intra_op_parallelism" ? c.intra_op_parallelism
                                       : c.background_depth) = static_cast<int>(n);
    } else if (key == "single_submit") {
      STRATA_ASSIGN_OR_RETURN(c.single_submit, get_bool(v, key));
    } else if (key == "overlap_events") {
      STRATA_ASSIGN_OR_RETURN(c.overlap_events, get_bool(v, key));
    } else if (key == "allow_buffered_io") {
      STRATA_ASSIGN_OR_RETURN(c.allow_buffered_io, get_bool(v, key));
    } else {
      return invalid_argument("aio." + key +
                              ": unknown key (known: block_size, queue_depth, intra_op_parallelism, "
                              "background_depth, single_submit, overlap_events, allow_buffered_io)");
    }
  }
  STRATA_RETURN_IF_ERROR(validate_aio_config(c));
  return c;
}

StatusOr<AioConfig> parse_aio_config_text(std::string_view text) {
  STRATA_ASSIGN_OR_RETURN(nlohmann::json j, parse_json(text, "aio"));
  return parse_aio_config(j);
}

}  // namespace strata::offload
