// Fuzz target: the engine's JSON config parser. Any text must give a config or an error, never a
// crash, an exception or undefined behaviour; a parsed config must pass the planner's checks.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "src/engine/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = strata::engine::parse_engine_config(text);
  if (c.is_ok() && c.value().placement.stage > 3) __builtin_trap();  // the range checks held
  return 0;
}
