// Internal to indexer/extract: the output side shared by the HTML and XML strippers, character
// reference decoding, and the wording of reasons.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mailvault::extract_internal {

// ASCII white space as HTML and XML define it (space, tab, CR, LF, FF).
inline bool IsSpace(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// Collects text up to a byte limit. White space inside text collapses to one space; separators
// (Space, Newline) are held back and written only before the next text, so the output has no
// leading, trailing or doubled separators, and a newline wins over a space.
class TextSink {
 public:
  explicit TextSink(size_t max_bytes) : max_(max_bytes) {}

  // Text whose white space runs collapse to one space.
  void Text(std::string_view s);
  // One code point (from a character reference); U+00A0 counts as white space.
  void CodePoint(uint32_t cp);
  void Space() {
    if (pending_ < kSpace) pending_ = kSpace;
  }
  void Newline() { pending_ = kNewline; }

  // True once text was dropped for lack of room: the caller can stop reading.
  bool full() const { return truncated_; }

  // The text as valid UTF-8 (invalid sequences replaced) of at most max_bytes; `*truncated`
  // (may be null) says whether text was dropped.
  std::string Finish(bool* truncated);

 private:
  enum Pending { kNone, kSpace, kNewline };
  // Writes the pending separator (unless at the start); false (and truncated) if there is no
  // room for it.
  bool Flush();
  void Append(const char* p, size_t n);

  size_t max_;
  std::string out_;
  Pending pending_ = kNone;
  bool truncated_ = false;
};

// Appends cp as UTF-8; surrogates, 0 and values above U+10FFFF become U+FFFD.
void AppendUtf8(uint32_t cp, std::string* out);

// Largest n' <= n such that s[0, n') does not end inside a UTF-8 sequence.
size_t Utf8Boundary(std::string_view s, size_t n);

// Windows-1252 bytes 0x80-0x9F to their code points (HTML maps &#150; the same way); other
// bytes map to themselves.
uint32_t Cp1252ToUnicode(unsigned char b);

// Decodes the character reference that starts at s[0] == '&': stores its code point and the
// bytes consumed, including ';' when present; false if s does not start with one. `html` allows the HTML 4 named set
// and legacy references without ';' (&amp, &lt, &gt, &quot, &nbsp); otherwise only XML's five.
bool DecodeReference(std::string_view s, bool html, uint32_t* cp, size_t* consumed);

// "2 MiB", "512 KiB", "1.5 MiB", "700 bytes".
std::string FormatBytes(uint64_t n);
// "10 s", "250 ms", "1.5 s".
std::string FormatMillis(int64_t ms);

}  // namespace mailvault::extract_internal
