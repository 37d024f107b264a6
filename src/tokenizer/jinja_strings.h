// Python `str` semantics over UTF-8 std::string, for the Jinja interpreter. jinja2 runs on
// Python strings, so lengths, indices and slices count code points, whitespace is Unicode
// whitespace, and str()/repr() of floats and strings follow CPython. These helpers give the
// C++ interpreter those semantics without a Unicode library (see docs/chat_template.md for
// the case-mapping coverage).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tachyon::jinja {

// Invalid UTF-8 bytes decode to U+DC80+byte (Python's "surrogateescape") so that encoding
// the code points again gives back the original bytes.
std::u32string decode_utf8(std::string_view text);
// One code point starting at text[pos]; *length receives its byte count (>= 1).
char32_t decode_one(std::string_view text, size_t pos, size_t* length);
std::string encode_utf8(std::u32string_view code_points);
void append_utf8(std::string& out, char32_t code_point);
size_t count_code_points(std::string_view text);

bool is_python_space(char32_t c);       // str.isspace()
bool is_python_printable(char32_t c);   // str.isprintable(), approximated (see .cpp)
bool is_line_break(char32_t c);         // boundaries used by str.splitlines()
char32_t simple_upper(char32_t c);
char32_t simple_lower(char32_t c);
bool is_cased(char32_t c);

std::string python_upper(std::string_view text);
std::string python_lower(std::string_view text);
std::string python_capitalize(std::string_view text);  // str.capitalize()
std::string python_title(std::string_view text);       // str.title()
std::string python_swapcase(std::string_view text);

// str.strip/lstrip/rstrip; chars == nullopt strips Unicode whitespace.
std::string python_strip(std::string_view text, const std::optional<std::string>& chars, bool left, bool right);
// str.split / str.rsplit; sep == nullopt splits on runs of whitespace. maxsplit < 0: no limit.
std::vector<std::string> python_split(std::string_view text, const std::optional<std::string>& sep,
                                      int64_t maxsplit, bool from_right);
std::vector<std::string> python_splitlines(std::string_view text, bool keep_ends);
std::string python_replace(std::string_view text, std::string_view old_text, std::string_view new_text,
                           int64_t count);
// str.find / str.rfind / str.count in code points (-1 when absent).
int64_t python_find(std::string_view text, std::string_view needle, bool from_right);
int64_t python_count(std::string_view text, std::string_view needle);

std::string python_float_repr(double value);             // repr(float): '1.0', '1e+16', 'inf'
std::string python_string_repr(std::string_view text);   // repr(str): quotes and escapes
// json.dumps of a string (ensure_ascii escapes every non-ASCII code point).
void append_json_string(std::string& out, std::string_view text, bool ensure_ascii);

}  // namespace tachyon::jinja
