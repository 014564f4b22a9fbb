// JSON text from people and files, parsed into nlohmann::json with errors that say where: the
// line and column of a syntax error, or the number that does not fit. Never throws.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "src/common/status.h"

namespace strata {

// Parses `text` (comments allowed when `comments`). Errors are INVALID_ARGUMENT (or `code`)
// "<where>: line 3, column 8: syntax error while parsing value - invalid literal".
StatusOr<nlohmann::json> parse_json(std::string_view text, std::string_view where, bool comments = true,
                                    StatusCode code = StatusCode::kInvalidArgument);

// Whether `text` is valid UTF-8 (what a JSON string may hold).
bool valid_utf8(std::string_view text);

// `text` made safe to quote in a one-line message: at most `max` bytes, control and non-ASCII
// bytes written as \xNN.
std::string printable(std::string_view text, size_t max = 80);

}  // namespace strata
