#include "indexer/extract/xml_text.h"

#include <cstring>

namespace mailvault::extract_internal {
namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '#';
}

// Whether s is a prefix of what follows "<!" in a comment or a CDATA section.
bool MayBecome(std::string_view s, std::string_view target) {
  return s.size() <= target.size() && target.substr(0, s.size()) == s;
}

}  // namespace

void XmlTextStripper::Feed(std::string_view chunk) {
  const char* p = chunk.data();
  const char* end = p + chunk.size();
  while (p < end && !sink_->full()) {
    switch (state_) {
      case State::kText: {
        const char* q = p;
        while (q < end && *q != '<' && *q != '&') ++q;
        if (q > p && Capturing()) sink_->Text(std::string_view(p, static_cast<size_t>(q - p)));
        p = q;
        if (p == end) break;
        if (*p == '<') {
          state_ = State::kMarkupOpen;
        } else {
          state_ = State::kReference;
          ref_.assign(1, '&');
        }
        ++p;
        break;
      }
      case State::kReference:
        if (*p == ';') {
          ref_.push_back(*p++);
          FlushReference();
        } else if (IsNameChar(*p) && ref_.size() < 16) {
          ref_.push_back(*p++);
        } else {
          FlushReference();  // not a reference after all; *p is read again as text
        }
        break;
      case State::kMarkupOpen:
        name_len_ = 0;
        name_too_long_ = false;
        end_tag_ = false;
        if (*p == '/') {
          end_tag_ = true;
          state_ = State::kTagName;
          ++p;
        } else if (*p == '!') {
          bang_.clear();
          state_ = State::kBang;
          ++p;
        } else if (*p == '?') {
          close_seen_ = 0;
          state_ = State::kPi;
          ++p;
        } else {
          state_ = State::kTagName;
        }
        break;
      case State::kTagName: {
        char c = *p;
        if (IsSpace(static_cast<unsigned char>(c)) || c == '/' || c == '>') {
          state_ = State::kTagBody;
          last_ = 0;
          break;  // c is read again as part of the tag body
        }
        if (c == ':') {  // what came before was the prefix
          name_len_ = 0;
          name_too_long_ = false;
        } else if (name_len_ < kMaxName) {
          name_[name_len_++] = c;
        } else {
          name_too_long_ = true;
        }
        ++p;
        break;
      }
      case State::kTagBody: {
        char c = *p++;
        if (c == '>') {
          EndOfTag();
          state_ = State::kText;
        } else if (c == '"' || c == '\'') {
          quote_ = c;
          state_ = State::kQuoted;
        }
        last_ = c;
        break;
      }
      case State::kQuoted: {
        const char* q = static_cast<const char*>(std::memchr(p, quote_, static_cast<size_t>(end - p)));
        if (q == nullptr) {
          p = end;
        } else {
          p = q + 1;
          state_ = State::kTagBody;
        }
        break;
      }
      case State::kBang: {
        char c = *p++;
        bang_.push_back(c);
        if (bang_ == "--") {
          state_ = State::kComment;
          close_seen_ = 0;
        } else if (bang_ == "[CDATA[") {
          state_ = State::kCData;
          close_seen_ = 0;
        } else if (!MayBecome(bang_, "--") && !MayBecome(bang_, "[CDATA[")) {
          // <!DOCTYPE ...> or another declaration: skipped, internal subset and all.
          bracket_depth_ = c == '[' ? 1 : 0;
          state_ = c == '>' ? State::kText : State::kDoctype;
        }
        break;
      }
      case State::kComment: {
        char c = *p++;
        if (c == '-') {
          if (close_seen_ < 2) ++close_seen_;
        } else if (c == '>' && close_seen_ == 2) {
          state_ = State::kText;
        } else {
          close_seen_ = 0;
        }
        break;
      }
      case State::kPi: {
        char c = *p++;
        if (c == '>' && close_seen_ == 1) {
          state_ = State::kText;
        } else {
          close_seen_ = c == '?' ? 1 : 0;
        }
        break;
      }
      case State::kDoctype: {
        char c = *p++;
        if (c == '[') {
          ++bracket_depth_;
        } else if (c == ']') {
          --bracket_depth_;
        } else if (c == '>' && bracket_depth_ <= 0) {
          state_ = State::kText;
        }
        break;
      }
      case State::kCData: {
        if (close_seen_ == 0) {
          const char* q = static_cast<const char*>(std::memchr(p, ']', static_cast<size_t>(end - p)));
          if (q == nullptr) q = end;
          if (q > p && Capturing()) sink_->Text(std::string_view(p, static_cast<size_t>(q - p)));
          p = q;
          if (p == end) break;
        }
        char c = *p++;
        if (c == ']') {
          // "]]]>" ends the section after one literal ']'.
          if (close_seen_ == 2) {
            if (Capturing()) sink_->Text("]");
          } else {
            ++close_seen_;
          }
        } else if (c == '>' && close_seen_ == 2) {
          state_ = State::kText;
        } else {
          if (Capturing()) {
            sink_->Text(std::string_view("]]", static_cast<size_t>(close_seen_)));
            sink_->Text(std::string_view(&c, 1));
          }
          close_seen_ = 0;
        }
        break;
      }
    }
  }
}

void XmlTextStripper::Finish() {
  if (state_ == State::kReference) FlushReference();
  state_ = State::kText;
}

void XmlTextStripper::FlushReference() {
  state_ = State::kText;
  uint32_t cp = 0;
  size_t consumed = 0;
  if (Capturing()) {
    if (ref_.back() == ';' && DecodeReference(ref_, /*html=*/false, &cp, &consumed) && consumed == ref_.size()) {
      sink_->CodePoint(cp);
    } else {
      sink_->Text(ref_);
    }
  }
  ref_.clear();
}

const XmlRule* XmlTextStripper::Rule() const {
  if (name_too_long_ || name_len_ == 0) return nullptr;
  std::string_view name(name_, name_len_);
  for (const XmlRule& rule : rules_.rules) {
    if (rule.local_name == name) return &rule;
  }
  return nullptr;
}

void XmlTextStripper::EndOfTag() {
  const XmlRule* rule = Rule();
  if (rule == nullptr) return;
  bool empty = !end_tag_ && last_ == '/';
  auto open_close = [&](size_t* depth) {
    if (end_tag_) {
      if (*depth > 0) --*depth;
    } else if (!empty) {
      ++*depth;
    }
  };
  switch (rule->action) {
    case XmlAction::kCapture:
      return open_close(&capture_depth_);
    case XmlAction::kSkip:
      return open_close(&skip_depth_);
    case XmlAction::kBlockEnd:
    case XmlAction::kCellEnd:
      if (end_tag_ || empty) Separator(rule->action);
      return;
    case XmlAction::kBreak:
    case XmlAction::kSpace:
      if (!end_tag_) Separator(rule->action);
      return;
  }
}

void XmlTextStripper::Separator(XmlAction action) {
  if (skip_depth_ > 0) return;
  if (action == XmlAction::kBlockEnd || action == XmlAction::kBreak) {
    sink_->Newline();
  } else {
    sink_->Space();
  }
}

}  // namespace mailvault::extract_internal
