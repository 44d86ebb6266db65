// A recursive-descent parser over a small lexer. Grammar (docs/query-language.md):
//   or    := and ("OR" and)*
//   and   := unary (["AND"] unary)*
//   unary := ("NOT" | "-") unary | primary
//   primary := "(" or ")" | "*" | [field ":"] value
#include "indexer/query.h"

#include <cctype>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "core/text.h"
#include "indexer/schema.h"
#include "indexer/tokenizer.h"

namespace mailvault::index {
namespace {

// kFieldGroup: "field:(" — the field applies to every term inside the group that names no
// field of its own, as in Gmail, Google Vault and Xapian's QueryParser: subject:(a OR b).
enum class Tok { kEnd, kLParen, kRParen, kAnd, kOr, kNot, kMinus, kStar, kTerm, kFieldGroup };

struct Token {
  Tok type = Tok::kEnd;
  size_t pos = 0;        // 0-based byte offset
  std::string field;     // kTerm: "" for the default fields
  std::string value;     // kTerm
  bool quoted = false;   // the value was "quoted"
  size_t value_pos = 0;
};

class QueryError {
 public:
  QueryError(size_t pos, std::string what) : pos_(pos), what_(std::move(what)) {}
  Error ToError() const { return InvalidArgument("query error at " + std::to_string(pos_ + 1) + ": " + what_); }

 private:
  size_t pos_;
  std::string what_;
};

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

class Lexer {
 public:
  explicit Lexer(std::string_view q) : q_(q) {}

  Token Next() {
    while (i_ < q_.size() && IsSpace(q_[i_])) ++i_;
    Token t;
    t.pos = i_;
    if (i_ >= q_.size()) return t;
    char c = q_[i_];
    if (c == '(') {
      ++i_;
      t.type = Tok::kLParen;
      return t;
    }
    if (c == ')') {
      ++i_;
      t.type = Tok::kRParen;
      return t;
    }
    if (c == '-' && i_ + 1 < q_.size() && !IsSpace(q_[i_ + 1]) && q_[i_ + 1] != ')') {
      ++i_;
      t.type = Tok::kMinus;
      return t;
    }
    if (c == '"') {
      t.type = Tok::kTerm;
      t.value_pos = i_;
      t.value = Quoted();
      t.quoted = true;
      return t;
    }
    // A bare run up to space or parenthesis; "field:" may start it.
    size_t start = i_;
    while (i_ < q_.size() && !IsSpace(q_[i_]) && q_[i_] != '(' && q_[i_] != ')' && q_[i_] != '"' && q_[i_] != ':') ++i_;
    std::string_view head = q_.substr(start, i_ - start);
    if (i_ < q_.size() && q_[i_] == ':' && !head.empty() && IsFieldName(head)) {
      t.type = Tok::kTerm;
      t.field = std::string(head);
      ++i_;  // ':'
      t.value_pos = i_;
      if (i_ < q_.size() && q_[i_] == '"') {
        t.value = Quoted();
        t.quoted = true;
      } else if (i_ < q_.size() && q_[i_] == '(') {
        ++i_;  // '('
        t.type = Tok::kFieldGroup;
        return t;
      } else {
        t.value = Bare();
      }
      if (t.value.empty() && !t.quoted) throw QueryError(t.value_pos, "a value expected after \"" + t.field + ":\"");
      return t;
    }
    i_ = start;
    t.value_pos = start;
    t.value = Bare();
    if (t.value == "AND") t.type = Tok::kAnd;
    else if (t.value == "OR") t.type = Tok::kOr;
    else if (t.value == "NOT") t.type = Tok::kNot;
    else if (t.value == "*") t.type = Tok::kStar;
    else t.type = Tok::kTerm;
    return t;
  }

 private:
  static bool IsFieldName(std::string_view s) {
    for (char c : s) {
      if (!std::islower(static_cast<unsigned char>(c)) && c != '-') {
        return false;  // "http" in http://x is lower case too: unknown names are errors below
      }
    }
    return true;
  }
  std::string Quoted() {
    size_t open = i_++;
    std::string out;
    while (i_ < q_.size() && q_[i_] != '"') out.push_back(q_[i_++]);
    if (i_ >= q_.size()) throw QueryError(open, "the quote opened here is never closed");
    ++i_;
    return out;
  }
  std::string Bare() {
    size_t start = i_;
    while (i_ < q_.size() && !IsSpace(q_[i_]) && q_[i_] != '(' && q_[i_] != ')' && q_[i_] != '"') ++i_;
    return std::string(q_.substr(start, i_ - start));
  }

  std::string_view q_;
  size_t i_ = 0;
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

std::vector<std::string> WordsOf(std::string_view s) {
  std::vector<std::string> out;
  ForEachWord(s, [&](std::string_view w) { out.emplace_back(w); });
  return out;
}

// ---- dates and sizes ----

struct Instant {
  int64_t lo, hi;  // the first and last second the written value covers
};


bool Digits(std::string_view s, size_t n, int* out) {
  if (s.size() < n) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

std::optional<Instant> ParseDate(std::string_view s, int64_t now) {
  // Relative: 30d, 12h, 2w, 1y.
  if (s.size() >= 2 && std::isdigit(static_cast<unsigned char>(s[0])) && std::string_view("hdwy").find(s.back()) != std::string_view::npos) {
    int64_t n = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (!std::isdigit(static_cast<unsigned char>(s[i])) || n > 1000000) return std::nullopt;
      n = n * 10 + (s[i] - '0');
    }
    int64_t unit = s.back() == 'h' ? 3600 : s.back() == 'd' ? 86400 : s.back() == 'w' ? 7 * 86400 : 365 * 86400;
    int64_t t = now - n * unit;
    return Instant{t, t};
  }
  int y, mo = 1, d = 1, h = 0, mi = 0, se = 0;
  if (!Digits(s, 4, &y)) return std::nullopt;
  if (s.size() == 4) return Instant{DaysFromCivil(y, 1, 1) * 86400, DaysFromCivil(y + 1, 1, 1) * 86400 - 1};
  if (s.size() < 7 || s[4] != '-' || !Digits(s.substr(5), 2, &mo) || mo < 1 || mo > 12) return std::nullopt;
  if (s.size() == 7) {
    int64_t start = DaysFromCivil(y, static_cast<unsigned>(mo), 1) * 86400;
    int64_t end = (mo == 12 ? DaysFromCivil(y + 1, 1, 1) : DaysFromCivil(y, static_cast<unsigned>(mo + 1), 1)) * 86400 - 1;
    return Instant{start, end};
  }
  if (s.size() < 10 || s[7] != '-' || !Digits(s.substr(8), 2, &d) || d < 1 || d > 31) return std::nullopt;
  int64_t day = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400;
  if (s.size() == 10) return Instant{day, day + 86399};
  if ((s[10] != 'T' && s[10] != ' ') || s.size() < 16 || !Digits(s.substr(11), 2, &h) || s[13] != ':' ||
      !Digits(s.substr(14), 2, &mi) || h > 23 || mi > 59) {
    return std::nullopt;
  }
  int64_t t = day + h * 3600 + mi * 60;
  if (s.size() == 16) return Instant{t, t + 59};
  if (s.size() != 19 || s[16] != ':' || !Digits(s.substr(17), 2, &se) || se > 60) return std::nullopt;
  return Instant{t + se, t + se};
}

std::optional<uint64_t> ParseSize(std::string_view s) {
  if (s.empty()) return std::nullopt;
  uint64_t mult = 1;
  char u = static_cast<char>(std::toupper(static_cast<unsigned char>(s.back())));
  if (u == 'K' || u == 'M' || u == 'G') {
    mult = u == 'K' ? 1024 : u == 'M' ? 1024 * 1024 : 1024ull * 1024 * 1024;
    s.remove_suffix(1);
  } else if (u == 'B') {
    s.remove_suffix(1);
  }
  if (s.empty() || s.size() > 15) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v * mult;
}

Xapian::Query ValueRange(unsigned slot, std::optional<double> lo, std::optional<double> hi) {
  if (lo && hi) return Xapian::Query(Xapian::Query::OP_VALUE_RANGE, slot, Xapian::sortable_serialise(*lo), Xapian::sortable_serialise(*hi));
  if (lo) return Xapian::Query(Xapian::Query::OP_VALUE_GE, slot, Xapian::sortable_serialise(*lo));
  if (hi) return Xapian::Query(Xapian::Query::OP_VALUE_LE, slot, Xapian::sortable_serialise(*hi));
  return Xapian::Query::MatchAll;
}

// ---- the parser ----

class Parser {
 public:
  Parser(std::string_view q, int64_t now, const PhraseResolver& phrases, const TagResolver& tags)
      : lexer_(q), now_(now), phrases_(phrases), tags_(tags) {
    Advance();
  }

  Xapian::Query Parse() {
    if (tok_.type == Tok::kEnd) throw QueryError(0, "the query is empty (use * for every message)");
    Xapian::Query q = Or(0);
    if (tok_.type == Tok::kRParen) throw QueryError(tok_.pos, "\")\" without a matching \"(\"");
    if (tok_.type != Tok::kEnd) throw QueryError(tok_.pos, "unexpected input");
    return q;
  }

 private:
  void Advance() { tok_ = lexer_.Next(); }

  Xapian::Query Or(int depth) {
    std::vector<Xapian::Query> parts{And(depth)};
    while (tok_.type == Tok::kOr) {
      size_t at = tok_.pos;
      Advance();
      if (!StartsUnary()) throw QueryError(at, "a term expected after OR");
      parts.push_back(And(depth));
    }
    return parts.size() == 1 ? parts[0] : Xapian::Query(Xapian::Query::OP_OR, parts.begin(), parts.end());
  }

  bool StartsUnary() const {
    return tok_.type == Tok::kNot || tok_.type == Tok::kMinus || tok_.type == Tok::kLParen || tok_.type == Tok::kStar ||
           tok_.type == Tok::kTerm || tok_.type == Tok::kFieldGroup;
  }

  Xapian::Query And(int depth) {
    std::vector<Xapian::Query> pos, neg;
    auto take = [&] {
      bool negated = false;
      while (tok_.type == Tok::kNot || tok_.type == Tok::kMinus) {
        size_t at = tok_.pos;
        negated = !negated;
        Advance();
        if (!StartsUnary()) throw QueryError(at, "a term expected after NOT");
      }
      Xapian::Query q = Primary(depth);
      (negated ? neg : pos).push_back(q);
    };
    if (!StartsUnary()) {
      throw QueryError(tok_.pos, tok_.type == Tok::kEnd ? "a term expected at the end of the query" : "a term expected here");
    }
    take();
    while (true) {
      if (tok_.type == Tok::kAnd) {
        size_t at = tok_.pos;
        Advance();
        if (!StartsUnary()) throw QueryError(at, "a term expected after AND");
        take();
      } else if (StartsUnary()) {
        take();
      } else {
        break;
      }
    }
    Xapian::Query p = pos.empty() ? Xapian::Query::MatchAll
                      : pos.size() == 1 ? pos[0]
                                        : Xapian::Query(Xapian::Query::OP_AND, pos.begin(), pos.end());
    if (neg.empty()) return p;
    Xapian::Query n = neg.size() == 1 ? neg[0] : Xapian::Query(Xapian::Query::OP_OR, neg.begin(), neg.end());
    return Xapian::Query(Xapian::Query::OP_AND_NOT, p, n);
  }

  Xapian::Query Primary(int depth) {
    if (depth > kMaxQueryDepth) throw QueryError(tok_.pos, "the query nests too deeply (kMaxQueryDepth)");
    if (tok_.type == Tok::kLParen || tok_.type == Tok::kFieldGroup) {
      const bool field_group = tok_.type == Tok::kFieldGroup;
      size_t open = field_group ? tok_.value_pos : tok_.pos;
      if (field_group) {
        if (!FieldNamed(tok_.field)) Term(tok_);  // an unknown field: Term's error names the known ones
        group_fields_.push_back(tok_.field);
      }
      Advance();
      if (tok_.type == Tok::kRParen) throw QueryError(tok_.pos, "empty parentheses");
      Xapian::Query q = Or(depth + 1);
      if (tok_.type != Tok::kRParen) throw QueryError(tok_.pos, "\")\" expected to close the \"(\" at " + std::to_string(open + 1));
      Advance();
      if (field_group) group_fields_.pop_back();
      return q;
    }
    if (tok_.type == Tok::kStar) {
      Advance();
      return Xapian::Query::MatchAll;
    }
    Token t = tok_;
    Advance();
    // Inside field:( ... ), a term without a field of its own takes the group's.
    if (t.field.empty() && !group_fields_.empty()) t.field = group_fields_.back();
    return Term(t);
  }

  // Words of a value, with the limit on word length checked (they would silently match nothing).
  std::vector<std::string> CheckedWords(const Token& t, std::string_view value) {
    size_t run = 0;
    for (size_t i = 0; i < value.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(value[i]);
      bool word = c >= 0x80 || std::isalnum(c) || c == '_';
      run = word ? run + 1 : 0;
      if (run > kMaxWordBytes) {
        throw QueryError(t.value_pos + i + 1 - run + (t.quoted ? 1 : 0), "a word of more than " + std::to_string(kMaxWordBytes) +
                                              " bytes is never indexed (kMaxWordBytes); shorten it or use word*");
      }
    }
    return WordsOf(value);
  }

  Xapian::Query Wildcard(const std::string& prefix, const Token& t, std::string_view stem) {
    if (stem.size() < 2) throw QueryError(t.value_pos, "at least 2 characters before \"*\"");
    return Xapian::Query(Xapian::Query::OP_WILDCARD, prefix + std::string(stem), kMaxWildcardExpansion,
                         Xapian::Query::WILDCARD_LIMIT_ERROR);
  }

  Xapian::Query AllWords(std::string_view prefix, const std::vector<std::string>& words) {
    std::vector<Xapian::Query> terms;
    for (const std::string& w : words) terms.emplace_back(std::string(prefix) + w);
    return terms.size() == 1 ? terms[0] : Xapian::Query(Xapian::Query::OP_AND, terms.begin(), terms.end());
  }

  Xapian::Query PhraseIn(const Token& t, std::vector<std::string_view> fields, const std::vector<std::string>& words) {
    if (!phrases_) {
      std::vector<Xapian::Query> alts;
      for (std::string_view f : fields) alts.push_back(AllWords(FieldOf(f).prefix, words));
      return alts.size() == 1 ? alts[0] : Xapian::Query(Xapian::Query::OP_OR, alts.begin(), alts.end());
    }
    Result<Xapian::Query> q = phrases_(Phrase{std::move(fields), words});
    if (!q.ok()) throw QueryError(t.value_pos, q.error().message());
    return *q;
  }

  // Words in one field: a word, a phrase (phrase fields) or all the words (others).
  Xapian::Query WordsIn(const Token& t, const Field& f, const std::vector<std::string>& words) {
    if (words.size() > 1 && f.phrases) return PhraseIn(t, {f.name}, words);
    return AllWords(f.prefix, words);
  }

  Xapian::Query Term(const Token& t) {
    const std::string& v = t.value;
    bool star = !t.quoted && v.size() > 1 && v.back() == '*';
    std::string_view stem = star ? std::string_view(v).substr(0, v.size() - 1) : std::string_view(v);
    if (t.field.empty()) {
      std::vector<Xapian::Query> alts;
      if (star) {
        std::vector<std::string> w = CheckedWords(t, stem);
        if (w.size() != 1) throw QueryError(t.value_pos, "\"*\" ends a single word");
        for (const Field& f : kFields) {
          if (f.in_default) alts.push_back(Wildcard(std::string(f.prefix), t, w[0]));
        }
      } else {
        std::vector<std::string> words = CheckedWords(t, v);
        if (words.empty()) throw QueryError(t.value_pos, "no words in \"" + v + "\"");
        std::vector<std::string_view> phrase_fields;
        for (const Field& f : kFields) {
          if (!f.in_default) continue;
          if (f.phrases && words.size() > 1) phrase_fields.push_back(f.name);
          else alts.push_back(AllWords(f.prefix, words));
        }
        if (!phrase_fields.empty()) alts.push_back(PhraseIn(t, phrase_fields, words));
      }
      return Xapian::Query(Xapian::Query::OP_OR, alts.begin(), alts.end());
    }
    std::optional<Field> fo = FieldNamed(t.field);
    if (!fo) {
      std::string known;
      for (const Field& f : kFields) known += (known.empty() ? "" : ", ") + std::string(f.name);
      throw QueryError(t.pos, "unknown field \"" + t.field + "\" (fields: " + known + "; quote text that contains a colon)");
    }
    const Field& f = *fo;
    switch (f.kind) {
      case FieldKind::kWords:
      case FieldKind::kAddress: {
        bool exact_value = f.kind == FieldKind::kAddress ? v.find('@') != std::string::npos
                                                         : !f.exact_prefix.empty() && v.find('.') != std::string::npos;
        if (star) {
          if (exact_value || CheckedWords(t, stem).size() != 1) {
            if (f.exact_prefix.empty()) throw QueryError(t.value_pos, "\"*\" ends a single word");
            return Wildcard(std::string(f.exact_prefix), t, Lower(stem));
          }
          return Wildcard(std::string(f.prefix), t, CheckedWords(t, stem)[0]);
        }
        std::vector<std::string> words = CheckedWords(t, v);
        if (f.kind == FieldKind::kAddress && exact_value) {
          if (v.size() > 200) throw QueryError(t.value_pos, "an address of more than 200 bytes");
          return Xapian::Query(std::string(f.exact_prefix) + Lower(v));
        }
        if (words.empty()) throw QueryError(t.value_pos, "no words in \"" + v + "\"");
        Xapian::Query q = WordsIn(t, f, words);
        if (exact_value && v.size() <= 200) q = Xapian::Query(Xapian::Query::OP_OR, q, Xapian::Query(std::string(f.exact_prefix) + Lower(v)));
        return q;
      }
      case FieldKind::kExact: {
        if (v.empty() || v.size() > 200) throw QueryError(t.value_pos, "a value of 1 to 200 bytes expected");
        std::string value = Lower(star ? stem : std::string_view(v));
        if (f.name == "msgid" && !star) {
          if (value.front() != '<') value = "<" + value;
          if (value.back() != '>') value += ">";
        }
        if (f.name == "tag" && tags_) {
          if (star) throw QueryError(t.value_pos, "tag: takes a whole tag, without *");
          return tags_(value);
        }
        if (star) return Wildcard(std::string(f.prefix), t, value);
        return Xapian::Query(std::string(f.prefix) + value);
      }
      case FieldKind::kId: {
        std::string hex = Lower(star ? stem : std::string_view(v));
        if (hex.size() < 6 || hex.size() > 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
          throw QueryError(t.value_pos, "id: takes 6 to 64 hex digits");
        }
        if (hex.size() == 64) return Xapian::Query(std::string(f.prefix) + hex);
        return Wildcard(std::string(f.prefix), t, hex);
      }
      case FieldKind::kDate:
      case FieldKind::kSize: {
        bool date = f.kind == FieldKind::kDate;
        size_t dots = v.find("..");
        auto one = [&](std::string_view s, size_t at, bool low) -> std::optional<double> {
          if (s.empty()) return std::nullopt;
          if (date) {
            std::optional<Instant> i = ParseDate(s, now_);
            if (!i) throw QueryError(at, "a date expected: 2002-08-23, 2002-08, 2002, 2002-08-23T10:00, or 30d (also h, w, y)");
            return static_cast<double>(low ? i->lo : i->hi);
          }
          std::optional<uint64_t> n = ParseSize(s);
          if (!n) throw QueryError(at, "a size expected: 2048, 10K, 2M, 1G");
          return static_cast<double>(*n);
        };
        if (dots == std::string::npos) {
          auto lo = one(v, t.value_pos, true), hi = one(v, t.value_pos, false);
          return ValueRange(date ? kSlotDate : kSlotSize, lo, hi);
        }
        std::string_view a = std::string_view(v).substr(0, dots), b = std::string_view(v).substr(dots + 2);
        if (a.empty() && b.empty()) throw QueryError(t.value_pos, "a range needs at least one end");
        return ValueRange(date ? kSlotDate : kSlotSize, one(a, t.value_pos, true), one(b, t.value_pos + dots + 2, false));
      }
      case FieldKind::kFlag: {
        std::string flag = Lower(v);
        bool ok = (f.name == "has" && t.field == "has" && flag == kFlagAttachment) ||
                  (t.field == "is" && (flag == kFlagPartial || flag == kFlagUnindexed));
        if (!ok) throw QueryError(t.value_pos, "has:attachment, is:partial or is:unindexed expected");
        return Xapian::Query(std::string(kFlagPrefix) + flag);
      }
    }
    throw QueryError(t.pos, "unsupported field");
  }

  Lexer lexer_;
  Token tok_;
  int64_t now_;
  const PhraseResolver& phrases_;
  const TagResolver& tags_;
  std::vector<std::string> group_fields_;  // the fields of the field:( groups the parser is inside
};

}  // namespace

namespace {
// Leaf terms (and wildcards, and posting sources) of a query tree. A synonym counts once: it
// is what a TagResolver returns for a tag (one term per tagged message, written by us).
size_t CountTerms(const Xapian::Query& q) {
  if (q.get_type() == Xapian::Query::OP_SYNONYM) return 1;
  size_t n = q.get_num_subqueries();
  if (n == 0) return q.empty() ? 0 : 1;
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) total += CountTerms(q.get_subquery(i));
  return total;
}
}  // namespace

Result<Xapian::Query> ParseQuery(std::string_view query, int64_t now, const PhraseResolver& phrases,
                                 const TagResolver& tags) {
  if (query.size() > kMaxQueryBytes) {
    return InvalidArgument("the query is " + std::to_string(query.size()) + " bytes, over the limit of " +
                           std::to_string(kMaxQueryBytes) + " (kMaxQueryBytes)");
  }
  if (now == 0) now = static_cast<int64_t>(std::time(nullptr));
  try {
    Parser p(query, now, phrases, tags);
    Xapian::Query q = p.Parse();
    if (size_t n = CountTerms(q); n > kMaxQueryTerms) {
      return InvalidArgument("query error: the query expands to " + std::to_string(n) + " terms, over the limit of " +
                             std::to_string(kMaxQueryTerms) + " (kMaxQueryTerms; a word without a field counts once per "
                             "default field): use fields, or split it into several searches");
    }
    return q;
  } catch (const QueryError& e) {
    return e.ToError();
  } catch (const Xapian::Error& e) {
    return InvalidArgument("query error: " + e.get_msg());
  }
}

}  // namespace mailvault::index
