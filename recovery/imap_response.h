// Reading what an IMAP server sends (RFC 3501 §7, RFC 7888 literals), as bytes arrive: the
// restore job's view of the primary mail server. No sockets here (imap_client.h has them), so
// the parser is tested and fuzzed on bytes alone.
//
// A response is a line that may carry literals ("{12}\r\n" then 12 bytes, then the line goes
// on). The reader hands back each complete response with its literals cut out and kept apart,
// and the tokens of its line: atoms, quoted strings, literals, NIL and parenthesised lists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault::recovery {

// Limits on what a server may send: it is outside input like any other.
struct ImapLimits {
  size_t max_line_bytes = 64 << 10;           // a response line between literals
  uint64_t max_literal_bytes = 160ull << 20;  // a message (above the vault's 150 MiB ceiling)
  size_t max_literals = 10000;                // per response
  size_t max_depth = 16;                      // nested parentheses in one response
  // One whole response: its lines, CRLFs and literals together. One message (a literal) and
  // the FETCH line around it fit; a response of literal after literal does not, so a server
  // cannot make the client buffer max_literals × max_literal_bytes before it answers.
  uint64_t max_response_bytes = 192ull << 20;
};

// One token of a response line.
struct ImapToken {
  enum class Kind { kAtom, kString, kNil, kList } kind = Kind::kAtom;
  std::string text;                 // the atom or the string (quoted or literal), decoded
  std::vector<ImapToken> children;  // kList
  // Case-insensitive comparison of an atom: atom_is("OK").
  bool atom_is(std::string_view s) const;
};

struct ImapResponse {
  enum class Kind { kUntagged, kContinuation, kTagged } kind = Kind::kUntagged;
  std::string tag;                  // kTagged
  std::vector<ImapToken> tokens;    // after "*", "+" or the tag
  // For status responses (OK, NO, BAD, PREAUTH, BYE, tagged or not): the status, the response
  // code in brackets ("TRYCREATE", "APPENDUID 38505 3955", "OVERQUOTA") and the human text.
  std::string status;
  std::string code;
  std::string text;
  bool is_status() const { return !status.empty(); }
  // The first word of the response code, upper-cased ("APPENDUID").
  std::string code_name() const;
};

class ImapResponseReader {
 public:
  explicit ImapResponseReader(ImapLimits limits = {}) : limits_(limits) {}
  // Adds bytes from the server.
  void Feed(std::string_view bytes);
  // The next complete response, nothing if more bytes are needed, or an error (then the
  // connection must be dropped: the stream can no longer be framed).
  Result<std::optional<ImapResponse>> Next();
  // Bytes received but not yet part of a returned response.
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  ImapLimits limits_;
  std::string buf_;
  size_t pos_ = 0;
};

// Parses the tokens of one response line whose literals were cut out: `line` holds
// "\x00<index>\x00" markers where literals[index] goes. Exposed for the tests.
Result<std::vector<ImapToken>> ParseImapTokens(std::string_view line, const std::vector<std::string>& literals,
                                               const ImapLimits& limits);

// Quotes s as an IMAP string: a quoted string when it is short, printable 7-bit text, else a
// non-synchronising literal ("{n+}\r\n" + bytes, RFC 7888), which needs LITERAL+ or LITERAL-.
std::string ImapQuote(std::string_view s);

}  // namespace mailvault::recovery
