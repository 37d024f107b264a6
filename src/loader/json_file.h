// Reading the small JSON side files of a model directory (config.json, tokenizer.json, index files).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace tachyon {

// Parses a whole JSON file. Throws Error "<path>: cannot read ..." or "<path>: invalid JSON: ...".
nlohmann::json read_json_file(const std::string& path);

// The kind of a JSON value in words ("a string", "an array"), for error messages.
const char* json_kind(const nlohmann::json& value);

}  // namespace tachyon
