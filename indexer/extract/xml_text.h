// Internal to indexer/extract: a streaming tag stripper for the XML inside Office Open XML and
// OpenDocument files. Not an XML parser: it never builds a tree, never resolves a DTD or an
// entity other than XML's five and numeric references (so no entity expansion attacks), and
// accepts any byte soup without failing. Elements are matched by local name ("w:t" and "x:t"
// are both "t"), because producers pick their own namespace prefixes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "indexer/extract/text_sink.h"

namespace mailvault::extract_internal {

enum class XmlAction : uint8_t {
  kCapture,   // character data inside is text (w:t, a:t); other character data is ignored
  kSkip,      // nothing inside is text (deleted runs, alternative renderings)
  kBlockEnd,  // the end of a paragraph or row: a newline
  kCellEnd,   // the end of a cell: a space
  kBreak,     // an empty element meaning a line break (w:br, text:line-break)
  kSpace,     // an empty element meaning white space (w:tab, text:s)
};

struct XmlRule {
  std::string_view local_name;
  XmlAction action;
};

struct XmlRules {
  // OpenDocument keeps text directly in its paragraphs: all character data counts. Office Open
  // XML keeps it only in kCapture elements.
  bool capture_all = false;
  std::span<const XmlRule> rules;
};

class XmlTextStripper {
 public:
  XmlTextStripper(const XmlRules& rules, TextSink* sink) : rules_(rules), sink_(sink) {}

  // Bytes of the document, split anywhere.
  void Feed(std::string_view chunk);
  // The end of the document: text held back (an unfinished reference) is written.
  void Finish();

 private:
  enum class State : uint8_t {
    kText,
    kReference,   // after '&'
    kMarkupOpen,  // after '<'
    kTagName,
    kTagBody,  // attributes
    kQuoted,   // inside an attribute value
    kBang,     // after "<!"
    kComment,
    kCData,
    kDoctype,
    kPi,  // <? ... ?>
  };

  bool Capturing() const { return skip_depth_ == 0 && (rules_.capture_all || capture_depth_ > 0); }
  void EndOfTag();
  void FlushReference();
  void Separator(XmlAction action);
  const XmlRule* Rule() const;

  const XmlRules& rules_;
  TextSink* sink_;
  State state_ = State::kText;
  size_t capture_depth_ = 0;
  size_t skip_depth_ = 0;

  // The tag being read: its local name (bounded; longer names match no rule), whether it is an
  // end tag, and the byte before '>' (for "/>").
  static constexpr size_t kMaxName = 32;
  char name_[kMaxName];
  size_t name_len_ = 0;
  bool name_too_long_ = false;
  bool end_tag_ = false;
  char last_ = 0;
  char quote_ = 0;
  // "&...;" being read; "<!..." prefix; how many of a closing sequence ("-->", "]]>", "?>")
  // have been seen; DOCTYPE internal-subset nesting.
  std::string ref_;
  std::string bang_;
  int close_seen_ = 0;
  int bracket_depth_ = 0;
};

}  // namespace mailvault::extract_internal
