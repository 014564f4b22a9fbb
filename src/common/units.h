// Numbers read from people and printed for them: one parser for sizes ("64M", "2.5G"), counts
// and rates, with the range checked and overflow refused by name (the flag or the config key),
// used by the CLI and the JSON config alike; and byte counts printed in a unit that shows them.
// Nothing here clamps or wraps: a value outside its range is an error that says the range.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "src/common/status.h"

namespace strata {

// "12 B", "16.0 KiB", "640.0 MiB", "1.50 GiB", "2.00 TiB".
std::string format_bytes(uint64_t bytes);

// A byte size: a non-negative number with an optional binary suffix K, M, G or T (either case,
// an optional trailing "B" or "iB"): "4096", "64M", "2.5G", "512KiB". The result, rounded down to
// whole bytes, must lie in [lo, hi]. `what` names the flag or key in errors: "--device-memory 1e30:
// 1e30 bytes is more than the largest accepted, 64.00 PiB".
StatusOr<uint64_t> parse_size(std::string_view text, std::string_view what, uint64_t lo = 0,
                              uint64_t hi = uint64_t{1} << 56);
// A whole number in [lo, hi], decimal digits with an optional sign (no exponent, no fraction).
StatusOr<int64_t> parse_count(std::string_view text, std::string_view what, int64_t lo, int64_t hi);
// A finite decimal number (exponent allowed: "3e-4") in [lo, hi].
StatusOr<double> parse_rate(std::string_view text, std::string_view what, double lo, double hi);

// The check the parsers share, for numbers that arrive already parsed (JSON): `value` must be
// whole and in [lo, hi]; the error names `what` and shows `shown` (the value as the user wrote it).
StatusOr<int64_t> whole_in_range(double value, std::string_view what, std::string_view shown, int64_t lo, int64_t hi);

}  // namespace strata
