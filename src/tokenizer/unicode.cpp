#include "tokenizer/unicode.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tachyon::unicode {
namespace {

struct CanonicalDecomposition {
  char32_t code_point, first, second;
};
struct CombiningClassRange {
  char32_t first, last;
  uint8_t combining_class;
};
struct CanonicalComposition {
  char32_t first, second, composite;
};
struct NewerCategoryMembers {
  const char* category;
  const char* class_items;
};
#include "tokenizer/unicode_tables.inc"

// Hangul syllables decompose and compose arithmetically rather than through the tables.
constexpr char32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161,
                   kHangulTBase = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount;
constexpr char32_t kHangulSCount = kHangulLCount * kHangulNCount;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                             [](char32_t c, const CombiningClassRange& r) { return c < r.first; });
  if (it == std::begin(kCombiningClasses)) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

const CanonicalDecomposition* find_decomposition(char32_t cp) {
  auto it = std::lower_bound(std::begin(kCanonicalDecompositions), std::end(kCanonicalDecompositions), cp,
                             [](const CanonicalDecomposition& d, char32_t c) { return d.code_point < c; });
  if (it == std::end(kCanonicalDecompositions) || it->code_point != cp) return nullptr;
  return &*it;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    char32_t index = cp - kHangulSBase;
    out.push_back(kHangulLBase + index / kHangulNCount);
    out.push_back(kHangulVBase + (index % kHangulNCount) / kHangulTCount);
    if (index % kHangulTCount != 0) out.push_back(kHangulTBase + index % kHangulTCount);
    return;
  }
  const CanonicalDecomposition* d = cp >= 0xC0 ? find_decomposition(cp) : nullptr;
  if (d == nullptr) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);  // the tables hold one level; full decomposition recurses
  if (d->second != 0) decompose(d->second, out);
}

// Canonical ordering: a stable sort by combining class of every run of non-starters.
void reorder(std::vector<char32_t>& cps) {
  size_t i = 0;
  while (i < cps.size()) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < cps.size() && combining_class(cps[end]) != 0) ++end;
    std::stable_sort(cps.begin() + i, cps.begin() + end,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = end;
  }
}

char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kHangulLBase && first < kHangulLBase + kHangulLCount && second >= kHangulVBase &&
      second < kHangulVBase + kHangulVCount) {
    return kHangulSBase + ((first - kHangulLBase) * kHangulVCount + (second - kHangulVBase)) * kHangulTCount;
  }
  if (first >= kHangulSBase && first < kHangulSBase + kHangulSCount && (first - kHangulSBase) % kHangulTCount == 0 &&
      second > kHangulTBase && second < kHangulTBase + kHangulTCount) {
    return first + (second - kHangulTBase);
  }
  auto key = std::make_pair(first, second);
  auto it = std::lower_bound(std::begin(kCanonicalCompositions), std::end(kCanonicalCompositions), key,
                             [](const CanonicalComposition& c, const std::pair<char32_t, char32_t>& k) {
                               return std::make_pair(c.first, c.second) < k;
                             });
  if (it == std::end(kCanonicalCompositions) || it->first != first || it->second != second) return 0;
  return it->composite;
}

// The canonical composition algorithm: a character joins the last starter unless a character
// of equal or higher combining class (or a starter) stands between them.
void compose(std::vector<char32_t>& cps) {
  std::vector<char32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;
  int last_class = -1;
  for (char32_t cp : cps) {
    int cls = combining_class(cp);
    bool adjacent_to_starter = starter != SIZE_MAX && starter + 1 == out.size();
    if (starter != SIZE_MAX && (adjacent_to_starter || (last_class != 0 && last_class < cls))) {
      if (char32_t composite = compose_pair(out[starter], cp)) {
        out[starter] = composite;
        continue;
      }
    }
    if (cls == 0) starter = out.size();
    last_class = cls;
    out.push_back(cp);
  }
  cps.swap(out);
}

template <bool kCompose>
std::string normalize(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return std::string(text);
  }
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  std::vector<char32_t> run;
  auto flush = [&] {
    reorder(run);
    if (kCompose) compose(run);
    for (char32_t cp : run) append_utf8(out, cp);
    run.clear();
  };
  size_t pos = 0;
  while (pos < text.size()) {
    Utf8Step step = next_utf8(text, pos);
    if (step.status == Utf8Status::kValid) {
      decompose(step.code_point, run);
    } else {
      flush();
      out.append(text.substr(pos, step.length));
    }
    pos += step.length;
  }
  flush();
  return out;
}

}  // namespace

Utf8Step next_utf8(std::string_view text, size_t pos) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  unsigned char lead = byte(pos);
  if (lead < 0x80) return {Utf8Status::kValid, 1, lead};
  size_t need;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
  char32_t cp;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3, cp = lead & 0x0F;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4, cp = lead & 0x07;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Status::kInvalid, 1, 0};
  }
  for (size_t i = 1; i < need; ++i) {
    if (pos + i >= text.size()) return {Utf8Status::kTruncated, i, 0};
    unsigned char b = byte(pos + i);
    unsigned char lo = i == 1 ? low : 0x80, hi = i == 1 ? high : 0xBF;
    if (b < lo || b > hi) return {Utf8Status::kInvalid, i, 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Status::kValid, need, cp};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string to_valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    Utf8Step step = next_utf8(text, pos);
    if (step.status == Utf8Status::kValid) {
      out.append(text.substr(pos, step.length));
    } else {
      append_utf8(out, 0xFFFD);
    }
    pos += step.length;
  }
  return out;
}

bool is_valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    Utf8Step step = next_utf8(text, pos);
    if (step.status != Utf8Status::kValid) return false;
    pos += step.length;
  }
  return true;
}

bool is_white_space(char32_t cp) {
  // The property is small and has been stable since Unicode 6.3 (U+180E left it then).
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

const char* newer_category_members(std::string_view category) {
  for (const NewerCategoryMembers& entry : kNewerCategoryMembers) {
    if (category == entry.category) return entry.class_items;
  }
  return nullptr;
}

std::string nfc(std::string_view text) { return normalize<true>(text); }
std::string nfd(std::string_view text) { return normalize<false>(text); }

}  // namespace tachyon::unicode
