// Parsing and printing of sizes, counts and rates (units.h).
#include "src/common/units.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace strata {
namespace {

std::string show(double x) {
  char b[40];
  std::snprintf(b, sizeof(b), "%.17g", x);
  return b;
}

std::string prefix(std::string_view what, std::string_view text) {
  std::string shown(text.substr(0, 64));
  if (text.size() > 64) shown += "...";
  return std::string(what) + " " + (shown.empty() ? "\"\"" : shown) + ": ";
}

// A finite double from the whole of `text` (digits, '.', exponent; a leading '-' is read so that
// the caller can say "negative" rather than "not a number").
bool read_double(std::string_view text, double* out, std::string_view* rest) {
  if (text.empty()) return false;
  const char* b = text.data();
  const char* e = b + text.size();
  if (*b != '-' && *b != '.' && (*b < '0' || *b > '9')) return false;  // no "inf", "nan", "+"
  const auto r = std::from_chars(b, e, *out, std::chars_format::general);
  if (r.ec == std::errc::result_out_of_range) {
    *out = HUGE_VAL;
  } else if (r.ec != std::errc()) {
    return false;
  }
  *rest = std::string_view(r.ptr, static_cast<size_t>(e - r.ptr));
  return true;
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  char buf[48];
  if (bytes < 1024) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
    return buf;
  }
  double v = static_cast<double>(bytes) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  std::snprintf(buf, sizeof(buf), u >= 2 ? "%.2f %s" : "%.1f %s", v, kUnits[u]);
  return buf;
}

StatusOr<uint64_t> parse_size(std::string_view text, std::string_view what, uint64_t lo, uint64_t hi) {
  const std::string p = prefix(what, text);
  const std::string expected = "expected a size in bytes with an optional K, M, G or T suffix (e.g. 512M, 2G)";
  double x = 0;
  std::string_view suffix;
  if (!read_double(text, &x, &suffix)) return invalid_argument(p + expected);
  double mul = 1.0;
  if (!suffix.empty()) {
    const char s = suffix[0];
    mul = (s == 'K' || s == 'k')   ? 0x1p10
          : (s == 'M' || s == 'm') ? 0x1p20
          : (s == 'G' || s == 'g') ? 0x1p30
          : (s == 'T' || s == 't') ? 0x1p40
                                   : 0.0;
    const std::string_view tail = suffix.substr(1);
    if (mul == 0.0 || !(tail.empty() || tail == "B" || tail == "iB")) return invalid_argument(p + expected);
  }
  if (x < 0) return invalid_argument(p + "a size cannot be negative");
  const double bytes = x * mul;
  if (!(bytes <= static_cast<double>(hi)))
    return invalid_argument(p + "more than the largest size accepted here, " + format_bytes(hi) + " (" +
                            std::to_string(hi) + " bytes)");
  const auto v = static_cast<uint64_t>(std::floor(bytes));
  if (v < lo)
    return invalid_argument(p + "less than the smallest size accepted here, " + format_bytes(lo) + " (" +
                            std::to_string(lo) + " bytes)");
  return v;
}

StatusOr<int64_t> parse_count(std::string_view text, std::string_view what, int64_t lo, int64_t hi) {
  const std::string p = prefix(what, text);
  const std::string range = "an integer in " + std::to_string(lo) + " .. " + std::to_string(hi);
  int64_t v = 0;
  const char* b = text.data();
  const char* e = b + text.size();
  if (!text.empty() && *b == '+') ++b;
  const auto r = std::from_chars(b, e, v);
  if (text.empty() || r.ptr != e || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
    return invalid_argument(p + "expected " + range);
  if (r.ec == std::errc::result_out_of_range || v < lo || v > hi)
    return invalid_argument(p + "out of range: expected " + range);
  return v;
}

StatusOr<double> parse_rate(std::string_view text, std::string_view what, double lo, double hi) {
  const std::string p = prefix(what, text);
  const std::string range = "a number in [" + show(lo) + ", " + show(hi) + "]";
  double x = 0;
  std::string_view rest;
  if (!read_double(text, &x, &rest) || !rest.empty()) return invalid_argument(p + "expected " + range);
  if (!(x >= lo && x <= hi)) return invalid_argument(p + "out of range: expected " + range);
  return x;
}

StatusOr<int64_t> whole_in_range(double value, std::string_view what, std::string_view shown, int64_t lo, int64_t hi) {
  if (!(value == std::floor(value)) || !(value >= static_cast<double>(lo)) || !(value <= static_cast<double>(hi)))
    return invalid_argument(std::string(what) + " = " + std::string(shown) + ": expected an integer in " +
                            std::to_string(lo) + " .. " + std::to_string(hi));
  // Doubles near 2^63 may round above hi: clamp to the checked range's end only then.
  if (value >= 0x1p63) return hi;
  const auto v = static_cast<int64_t>(value);
  return v > hi ? hi : v < lo ? lo : v;
}

}  // namespace strata
