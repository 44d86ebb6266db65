// A blocking IMAP client for restore jobs: one connection per mailbox being restored (workers
// run many in parallel). It speaks what docs/design/recovery.md found Dovecot and Cyrus to
// offer: STARTTLS or implicit TLS with certificate and host checks, AUTHENTICATE PLAIN with an
// authorization identity (an administrator acting as each user) or LOGIN, SELECT, CREATE,
// UID FETCH of sizes and headers, and APPEND pipelined with non-synchronising literals
// (LITERAL+, RFC 7888) whose APPENDUID (UIDPLUS, RFC 4315) says where each message went.
//
// Every read and write has a timeout; a server that stops answering is an error, not a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "recovery/imap_response.h"

namespace mailvault::recovery {

struct ImapEndpoint {
  enum class Tls { kNone, kStartTls, kImplicit };
  std::string host;
  uint16_t port = 143;
  Tls tls = Tls::kStartTls;
  bool verify_certificate = true;  // off only for lab servers (the --insecure flag)
  std::string ca_file;             // extra trust anchor (a pinned or private CA), optional
  std::chrono::seconds timeout{60};
};

struct ImapCredentials {
  std::string login;     // authentication identity (an administrator's, for all users)
  std::string password;
  std::string as_user;   // authorization identity: the mailbox owner, when login is an admin
};

struct ImapMailbox {
  uint32_t exists = 0;
  uint32_t uid_validity = 0;
  uint32_t uid_next = 0;
};

// What a mailbox already holds, per message: enough to match archived mail against it.
struct ImapMessageInfo {
  uint32_t uid = 0;
  uint64_t size = 0;
  std::string header;  // the full header block, as the server has it
  bool deleted = false;  // flagged \Deleted: gone at the next EXPUNGE, so not "present"
};

struct ImapAppend {
  std::string message;               // LF or CRLF line endings; sent as CRLF
  std::vector<std::string> flags;    // e.g. "\\Seen"
  int64_t internal_date = 0;         // seconds since the epoch; 0: the server's clock
};

struct ImapAppendResult {
  bool ok = false;
  uint32_t uid = 0;          // from APPENDUID, when the server has UIDPLUS
  uint32_t uid_validity = 0;
  std::string code;          // "TRYCREATE", "OVERQUOTA", ...
  std::string text;          // the server's words on a refusal
};

class ImapClient {
 public:
  static Result<std::unique_ptr<ImapClient>> Connect(const ImapEndpoint& endpoint);
  ~ImapClient();

  Status Login(const ImapCredentials& credentials);
  bool Has(const std::string& capability) const;  // upper case: "UIDPLUS", "LITERAL+"
  Result<ImapMailbox> Select(const std::string& mailbox, bool read_only);
  // The personal namespace's prefix (RFC 2342): "" on Dovecot's default, "INBOX/" or "INBOX."
  // on Cyrus, where a user may create folders only below INBOX. "" without NAMESPACE.
  Result<std::string> PersonalPrefix();
  // Creates the mailbox; an "already exists" refusal is success.
  Status Create(const std::string& mailbox);
  // Every message of the selected mailbox: UID, size and header block (only the named fields
  // when `fields` is not empty: a restore's inventory needs Message-ID and Date alone).
  Result<std::vector<ImapMessageInfo>> FetchHeaders(const std::vector<std::string>& fields = {});
  Result<std::string> FetchMessage(uint32_t uid);
  // The whole messages with these UIDs (those that still exist), fetched in few commands.
  Result<std::vector<std::pair<uint32_t, std::string>>> FetchMessages(const std::vector<uint32_t>& uids);
  // Appends in order, pipelined up to `window` commands in flight. A refused message is a
  // result with ok = false (quota, size); a broken connection is an error.
  Result<std::vector<ImapAppendResult>> Append(const std::string& mailbox, const std::vector<ImapAppend>& messages,
                                               size_t window = 32);
  // Appends all the messages in one MULTIAPPEND command (RFC 3502): the server stores them in
  // one transaction (Dovecot: one index commit instead of one per message, about twice as
  // fast). All or nothing: a refusal stores none, and the caller appends them one by one to
  // learn which message it was. ok results carry their UIDs from APPENDUID where offered.
  Result<std::vector<ImapAppendResult>> MultiAppend(const std::string& mailbox, const std::vector<ImapAppend>& messages,
                                                    ImapAppendResult* refusal);
  Status Logout();

  class Conn;

 private:
  explicit ImapClient(std::unique_ptr<Conn> conn);
  // Sends a command and collects the responses up to its tagged one.
  Result<std::vector<ImapResponse>> Command(const std::string& command, ImapResponse* tagged);
  Result<ImapResponse> ReadResponse();
  void NoteCapabilities(const ImapResponse& r);
  std::string NextTag();

  std::unique_ptr<Conn> conn_;
  ImapResponseReader reader_;
  std::set<std::string> caps_;
  uint64_t tag_ = 0;
};

// Refuses what is not an IMAP flag a client may set (RFC 3501 §9 "flag"): a system flag
// ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", or "\\" + an atom for an
// extension) or a keyword (an atom, e.g. "$Junk"). An atom is 7-bit text without controls,
// spaces or any of ( ) { % * " \\ ]; so a flag can never end the flag list or the command
// line of an APPEND. \\Recent is the server's alone. The error names the flag.
Status ValidateImapFlag(std::string_view flag);
inline constexpr size_t kMaxImapFlagBytes = 256;  // no server keeps a longer keyword

// "1:3,7,9:10" for the UIDs (sorted, duplicates dropped).
std::string UidSet(std::vector<uint32_t> uids);

// The message with every line ending as CRLF (IMAP's), a bare LF or CR included.
std::string ToCrlf(std::string_view message);

}  // namespace mailvault::recovery
