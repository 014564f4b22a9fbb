// JSON parsing with positioned errors (json_text.h).
#include "src/common/json_text.h"

#include <cstdint>
#include <cstdio>

namespace strata {

bool valid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > text.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(text[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3Fu);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n;
  }
  return true;
}

std::string printable(std::string_view text, size_t max) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", c);
      out += b;
    }
  }
  if (text.size() > max) out += "...";
  return out;
}

StatusOr<nlohmann::json> parse_json(std::string_view text, std::string_view where, bool comments, StatusCode code) {
  try {
    return nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/true, comments);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte: 1-based offset of the last byte read; count lines and columns up to it (a newline
    // read last belongs to the line it ends, where the error is).
    size_t line = 1, col = 0;
    size_t end = std::min<size_t>(e.byte, text.size());
    if (end > 1 && text[end - 1] == '\n') --end;
    for (size_t i = 0; i < end; ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 0;
      } else {
        ++col;
      }
    }
    std::string what = e.what();
    const size_t detail = what.find(": ", what.find("parse error"));  // after "... column N"
    what = detail == std::string::npos ? what : what.substr(detail + 2);
    return Status(code, std::string(where) + ": line " + std::to_string(line) + ", column " +
                            std::to_string(std::max<size_t>(col, 1)) + ": " + printable(what, 200));
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    const size_t tag = what.find("] ");
    return Status(code,
                  std::string(where) + ": " + printable(tag == std::string::npos ? what : what.substr(tag + 2), 200));
  }
}

}  // namespace strata
