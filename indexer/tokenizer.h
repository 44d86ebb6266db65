// Word splitting, shared by the document builder and the query parser so that both see the
// same words: maximal runs of word characters (Unicode letters, digits, marks, connector
// punctuation, per Xapian::Unicode::is_wordchar), lower-cased. No stemming: compliance search
// must find what was written, not what a stemmer thinks was meant.
#pragma once

#include <xapian.h>

#include <string>
#include <string_view>

#include "indexer/schema.h"

namespace mailvault::index {

// Calls fn(std::string_view word) for every word of text, in order. Words over kMaxWordBytes
// are skipped (fn is not called), but still count as a position: the caller's position counter
// advances only through fn, so over-long words simply vanish from phrases.
template <typename Fn>
void ForEachWord(std::string_view text, Fn&& fn) {
  std::string word;
  bool too_long = false;
  auto flush = [&] {
    if (!word.empty() && !too_long) fn(std::string_view(word));
    word.clear();
    too_long = false;
  };
  const unsigned char* p = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {  // ASCII fast path: most mail text
      ++p;
      if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
        if (word.size() < kMaxWordBytes) word.push_back(static_cast<char>(c)); else too_long = true;
      } else if (c >= 'A' && c <= 'Z') {
        if (word.size() < kMaxWordBytes) word.push_back(static_cast<char>(c + 32)); else too_long = true;
      } else {
        flush();
      }
      continue;
    }
    Xapian::Utf8Iterator it(reinterpret_cast<const char*>(p), static_cast<size_t>(end - p));
    unsigned ch = *it;
    ++it;
    p = end - it.left();
    if (Xapian::Unicode::is_wordchar(ch)) {
      if (word.size() + 4 <= kMaxWordBytes) {
        Xapian::Unicode::append_utf8(word, Xapian::Unicode::tolower(ch));
      } else {
        too_long = true;
      }
    } else {
      flush();
    }
  }
  flush();
}

}  // namespace mailvault::index
