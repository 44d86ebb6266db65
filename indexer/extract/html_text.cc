// HtmlToText: one forward pass over the bytes, HTML5's tokenizer reduced to what changes the
// visible text. Every search (for '<', "-->", "</script") moves forward and is never repeated, so
// the work is linear in the input whatever it holds; there is no tree and no stack.
#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

#include "indexer/extract/extract.h"
#include "indexer/extract/text_sink.h"

namespace mailvault {
namespace {

using extract_internal::DecodeReference;
using extract_internal::IsSpace;
using extract_internal::TextSink;

enum class TagKind {
  kOther,    // inline or unknown: no effect on the text
  kBlock,    // starts and ends a line
  kCell,     // table cell, image: a space
  kRawText,  // contents are not text (script, style, ...): skipped up to the matching end tag
  kHead,
  kBody,
  kHeadOnly,  // may appear in <head> without ending it (meta, link, base)
  kTitle,     // in <head>, but its text is the document's name: kept (a search for it should hit)
};

struct TagEntry {
  std::string_view name;
  TagKind kind;
};

// Sorted by name for binary search.
constexpr TagEntry kTags[] = {
    {"address", TagKind::kBlock},    {"article", TagKind::kBlock},     {"aside", TagKind::kBlock},
    {"base", TagKind::kHeadOnly},    {"basefont", TagKind::kHeadOnly}, {"bgsound", TagKind::kHeadOnly},
    {"blockquote", TagKind::kBlock}, {"body", TagKind::kBody},         {"br", TagKind::kBlock},
    {"caption", TagKind::kBlock},    {"center", TagKind::kBlock},      {"dd", TagKind::kBlock},
    {"details", TagKind::kBlock},    {"div", TagKind::kBlock},         {"dl", TagKind::kBlock},
    {"dt", TagKind::kBlock},         {"fieldset", TagKind::kBlock},    {"figcaption", TagKind::kBlock},
    {"figure", TagKind::kBlock},     {"footer", TagKind::kBlock},      {"form", TagKind::kBlock},
    {"h1", TagKind::kBlock},         {"h2", TagKind::kBlock},          {"h3", TagKind::kBlock},
    {"h4", TagKind::kBlock},         {"h5", TagKind::kBlock},          {"h6", TagKind::kBlock},
    {"head", TagKind::kHead},        {"header", TagKind::kBlock},      {"hr", TagKind::kBlock},
    {"img", TagKind::kCell},         {"legend", TagKind::kBlock},      {"li", TagKind::kBlock},
    {"link", TagKind::kHeadOnly},    {"main", TagKind::kBlock},        {"meta", TagKind::kHeadOnly},
    {"nav", TagKind::kBlock},        {"noframes", TagKind::kRawText},  {"ol", TagKind::kBlock},
    {"p", TagKind::kBlock},          {"pre", TagKind::kBlock},         {"script", TagKind::kRawText},
    {"section", TagKind::kBlock},    {"style", TagKind::kRawText},     {"summary", TagKind::kBlock},
    {"table", TagKind::kBlock},      {"td", TagKind::kCell},           {"template", TagKind::kRawText},
    {"th", TagKind::kCell},          {"title", TagKind::kTitle},     {"tr", TagKind::kBlock},
    {"ul", TagKind::kBlock},         {"xml", TagKind::kRawText},  // Outlook's <xml> settings blocks
};

static_assert(std::is_sorted(std::begin(kTags), std::end(kTags),
                             [](const TagEntry& a, const TagEntry& b) { return a.name < b.name; }));

constexpr size_t kMaxTagName = 16;  // longer names are none of ours

TagKind LookUpTag(std::string_view lower_name) {
  auto it = std::lower_bound(std::begin(kTags), std::end(kTags), lower_name,
                             [](const TagEntry& e, std::string_view n) { return e.name < n; });
  return it != std::end(kTags) && it->name == lower_name ? it->kind : TagKind::kOther;
}

constexpr std::array<bool, 256> MakeTable(std::string_view chars) {
  std::array<bool, 256> t{};
  for (char c : chars) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTextStop = MakeTable("<&");
constexpr std::array<bool, 256> kTagStop = MakeTable(">=");
constexpr std::array<bool, 256> kNameEnd = MakeTable(" \t\n\r\f/>");

inline unsigned char U(char c) { return static_cast<unsigned char>(c); }
inline bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// The matching end tag "</name" (any case) followed by a delimiter, or end.
const char* FindEndTag(const char* p, const char* end, std::string_view name) {
  while (p < end) {
    const char* lt = static_cast<const char*>(std::memchr(p, '<', static_cast<size_t>(end - p)));
    if (lt == nullptr) return end;
    const char* after = lt + 2 + name.size();
    if (after <= end && lt[1] == '/') {
      bool match = true;
      for (size_t i = 0; i < name.size() && match; ++i) match = Lower(lt[2 + i]) == name[i];
      if (match && (after == end || kNameEnd[U(*after)])) return lt;
    }
    p = lt + 1;
  }
  return end;
}

// Skips a tag's attributes up to and past its '>'. Quotes count only around a value (after
// '='), as in HTML5: `<a title="x>y">` is one tag, `<a b">` ends at its '>'.
const char* SkipAttributes(const char* p, const char* end) {
  while (p < end) {
    while (p < end && !kTagStop[U(*p)]) ++p;
    if (p == end) return end;
    if (*p == '>') return p + 1;
    ++p;  // '='
    while (p < end && IsSpace(U(*p))) ++p;
    if (p < end && (*p == '"' || *p == '\'')) {
      const char* close = static_cast<const char*>(std::memchr(p + 1, *p, static_cast<size_t>(end - p - 1)));
      p = close == nullptr ? end : close + 1;
    }
  }
  return end;
}

const char* SkipPast(const char* p, const char* end, char c) {
  const char* q = static_cast<const char*>(std::memchr(p, c, static_cast<size_t>(end - p)));
  return q == nullptr ? end : q + 1;
}

class HtmlStripper {
 public:
  HtmlStripper(std::string_view html, size_t max_bytes)
      : p_(html.data()), end_(html.data() + html.size()), sink_(max_bytes) {}

  std::string Run(bool* truncated) {
    while (p_ < end_ && !sink_.full()) {
      const char* q = p_;
      while (q < end_ && !kTextStop[U(*q)]) ++q;
      if (q > p_ && !in_head_) sink_.Text(std::string_view(p_, static_cast<size_t>(q - p_)));
      p_ = q;
      if (p_ == end_) break;
      if (*p_ == '&') {
        Reference();
      } else {
        Markup();
      }
    }
    return sink_.Finish(truncated);
  }

 private:
  void Reference() {
    uint32_t cp = 0;
    size_t consumed = 0;
    // Bounded look-ahead: no reference is longer, and "&#" followed by a megabyte of digits
    // stays linear.
    std::string_view rest(p_, std::min<size_t>(static_cast<size_t>(end_ - p_), 32));
    if (DecodeReference(rest, /*html=*/true, &cp, &consumed)) {
      if (!in_head_) sink_.CodePoint(cp);
      p_ += consumed;
    } else {
      if (!in_head_) sink_.Text("&");
      ++p_;
    }
  }

  // At '<'.
  void Markup() {
    const char* p = p_ + 1;
    if (p == end_) return Literal();
    if (*p == '!') {
      if (end_ - p >= 3 && p[1] == '-' && p[2] == '-') return Comment(p + 3);
      p_ = SkipPast(p, end_, '>');  // <!DOCTYPE ...>, <![CDATA[...]> (a bogus comment in HTML)
      return;
    }
    if (*p == '?') {
      p_ = SkipPast(p, end_, '>');
      return;
    }
    bool end_tag = *p == '/';
    if (end_tag) {
      ++p;
      if (p == end_) return Literal();
      if (*p == '>') {  // "</>" is dropped
        p_ = p + 1;
        return;
      }
      if (!IsAsciiAlpha(*p)) {
        p_ = SkipPast(p, end_, '>');
        return;
      }
    } else if (!IsAsciiAlpha(*p)) {
      return Literal();  // "a < b"
    }
    char name[kMaxTagName];
    size_t len = 0;
    while (p < end_ && !kNameEnd[U(*p)]) {
      if (len < kMaxTagName) name[len] = Lower(*p);
      ++len;
      ++p;
    }
    p_ = SkipAttributes(p, end_);
    if (len > kMaxTagName) return;
    std::string_view lower_name(name, len);
    TagKind kind = LookUpTag(lower_name);
    if (end_tag) {
      EndTag(kind);
    } else {
      StartTag(kind, lower_name);
    }
  }

  void Literal() {
    if (!in_head_) sink_.Text("<");
    ++p_;
  }

  // After "<!--". HTML5 ends "<!-->" and "<!--->" at once.
  void Comment(const char* p) {
    if (p < end_ && *p == '>') {
      p_ = p + 1;
      return;
    }
    if (end_ - p >= 2 && p[0] == '-' && p[1] == '>') {
      p_ = p + 2;
      return;
    }
    // Each '>' until one that ends "-->". (Not memmem: sanitizers check its whole haystack on
    // every call, which makes a page of comments quadratic under test.)
    for (const char* q = p; (q = static_cast<const char*>(std::memchr(q, '>', static_cast<size_t>(end_ - q)))); ++q) {
      if (q - p >= 2 && q[-1] == '-' && q[-2] == '-') {
        p_ = q + 1;
        return;
      }
    }
    p_ = end_;
  }

  void StartTag(TagKind kind, std::string_view lower_name) {
    if (in_head_ && kind != TagKind::kRawText && kind != TagKind::kHeadOnly && kind != TagKind::kHead &&
        kind != TagKind::kTitle) {
      in_head_ = false;  // <head> left open: the first body element ends it, as in browsers
    }
    switch (kind) {
      case TagKind::kBlock:
        return sink_.Newline();
      case TagKind::kCell:
        return sink_.Space();
      case TagKind::kHead:
        in_head_ = true;
        return;
      case TagKind::kRawText:
        p_ = FindEndTag(p_, end_, lower_name);
        return;
      case TagKind::kTitle: {
        // Text only, no markup, up to </title> (RCDATA in HTML5), even inside <head>.
        const char* close = FindEndTag(p_, end_, lower_name);
        sink_.Newline();
        sink_.Text(std::string_view(p_, static_cast<size_t>(close - p_)));
        sink_.Newline();
        p_ = close;
        return;
      }
      default:
        return;
    }
  }

  void EndTag(TagKind kind) {
    switch (kind) {
      case TagKind::kBlock:
        return sink_.Newline();
      case TagKind::kCell:
        return sink_.Space();
      case TagKind::kHead:
        in_head_ = false;
        return;
      default:
        return;
    }
  }

  const char* p_;
  const char* end_;
  TextSink sink_;
  bool in_head_ = false;
};

}  // namespace

std::string HtmlToText(std::string_view html, size_t max_bytes, bool* truncated) {
  return HtmlStripper(html, max_bytes).Run(truncated);
}

}  // namespace mailvault
