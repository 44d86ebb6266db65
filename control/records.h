// The API's records and how they are kept in the state store (state.h). Key layout:
//   u/<name>            User
//   t/<sha256(token)>   Token (API tokens; login sessions live in memory only)
//   ti/<id>             -> sha256(token), to revoke by id
//   s/<id>              SavedSearch
//   j/<id>              ExportJob
//   g/<message id>      the message's tags (JSON array)
//   G/<tag>/<msg id>    "" (which messages carry a tag)
//   a/<seq>, ah         the audit chain (audit.h)
// Values are JSON. docs/api.md describes each record.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "control/state.h"
#include "core/result.h"
#include "indexer/query.h"

namespace mailvault::control {

// compliance: policies, holds and purges (policy/); reads no mail.
enum class Role { kAdmin, kOperator, kReviewer, kAuditor, kCompliance };
inline constexpr Role kAllRoles[] = {Role::kAdmin, Role::kOperator, Role::kReviewer, Role::kAuditor, Role::kCompliance};
const char* RoleName(Role r);
// Reviewers read mail, auditors the audit trail (queries, who looked at what), compliance
// officers decide what is destroyed (a purge needs two of them): the roles nobody may act as
// but their holder, so an admin cannot mint a token for them.
bool ReadsContent(Role r);
std::optional<Role> ParseRole(std::string_view s);

// What a scoped reviewer may see: messages of these custodians (any, when empty) that also
// match the query (all, when empty).
struct Scope {
  std::vector<std::string> custodians;
  std::string query;
  bool empty() const { return custodians.empty() && query.empty(); }
  // The scope as a query in the index's language, "" when unscoped.
  std::string AsQuery() const;
  nlohmann::json ToJson() const;
  static Result<Scope> FromJson(const nlohmann::json& j);
};

struct User {
  std::string name;
  Role role = Role::kReviewer;
  std::string password_hash;
  bool disabled = false;
  Scope scope;
  int64_t created = 0;
  int64_t credentials_changed = 0;  // sessions from before this are void (password, role, scope)
  int failures = 0;                 // consecutive failed logins
  int64_t locked_until = 0;
  nlohmann::json ToJson() const;  // for storage (with the hash)
  nlohmann::json PublicJson() const;  // for the API (no hash)
  static Result<User> FromJson(const nlohmann::json& j);
};

struct Token {
  std::string id;    // 16 hex digits, public
  std::string hash;  // hex SHA-256 of the secret token
  std::string user;
  std::string label;
  // The admin who created it for `user`, "" when the user made it (or the shell did). Every
  // action taken with it names them, and it stops working while its user's role can read
  // mail or the audit trail (docs/api.md, "API tokens").
  std::string issued_by;
  int64_t created = 0, expires = 0, last_used = 0;
  nlohmann::json ToJson() const;
  nlohmann::json PublicJson() const;
  static Result<Token> FromJson(const nlohmann::json& j);
};

struct SavedSearch {
  std::string id, owner, name, query;
  int64_t created = 0;
  nlohmann::json ToJson() const;
  static Result<SavedSearch> FromJson(const nlohmann::json& j);
};

struct ExportJob {
  std::string id, owner, format, query, filter, state = "queued", error;
  // The custodians of the owner's scope when the export was made (empty: unscoped); the
  // manifest's custodian column names no one else.
  std::vector<std::string> custodians;
  uint64_t total = 0, done = 0, bytes = 0;
  std::string manifest_sha256, artefact_sha256;
  int64_t created = 0, finished = 0, expires_at = 0;
  nlohmann::json ToJson() const;             // storage
  nlohmann::json PublicJson(bool with_query) const;
  static Result<ExportJob> FromJson(const nlohmann::json& j);
};

bool ValidUserName(std::string_view s);   // 1-64 of a-z 0-9 . _ @ -
bool ValidTag(std::string_view s);        // 1-64 of a-z 0-9 . _ : -
bool ValidMessageId(std::string_view s);  // exactly 64 lower-case hex digits
bool ValidRecordId(std::string_view s);   // 16 lower-case hex digits (tokens, searches, jobs)
std::string NewRecordId();
std::string Sha256Hex(std::string_view data);
int64_t NowSeconds();
std::string Rfc3339(int64_t seconds);
std::optional<int64_t> ParseRfc3339(std::string_view s);  // also a bare date, UTC

// The records, read and written through the state store.
class Records {
 public:
  explicit Records(StateStore* store) : store_(store) {}
  StateStore* store() { return store_; }

  Result<std::optional<User>> GetUser(const std::string& name) const;
  Status PutUser(const User& u);
  // Writes a new user: kAlreadyExists when the name is taken. The check and the write are one
  // step under the lock every other user change takes, so of two creations of one name
  // exactly one succeeds. before_write runs in between (the audit entry: recorded only for
  // the creation that happens, and the user is not written when it fails).
  Status CreateUser(const User& u, const std::function<Status()>& before_write);
  // Reads the user, applies edit and writes it back, with no other change to the records in
  // between (a failed login's lock must not undo an admin's change made meanwhile). NotFound
  // when there is no such user; an error from edit writes nothing.
  Status UpdateUser(const std::string& name, const std::function<Status(User&)>& edit);
  Result<std::vector<User>> Users() const;

  Result<std::optional<Token>> TokenByHash(const std::string& hash) const;
  Result<std::optional<Token>> TokenById(const std::string& id) const;
  Status PutToken(const Token& t);
  Status DeleteToken(const Token& t);
  // Records a token's use, unless it was revoked meanwhile (a revocation must stay revoked).
  Status TouchToken(const std::string& hash, int64_t when);
  Result<std::vector<Token>> Tokens() const;
  // Creates an API token for user; returns the record and the secret (shown once).
  Result<std::pair<Token, std::string>> CreateToken(const std::string& user, const std::string& label, int days,
                                                    const std::string& issued_by = "");

  Result<std::optional<SavedSearch>> GetSavedSearch(const std::string& id) const;
  Status PutSavedSearch(const SavedSearch& s);
  Status DeleteSavedSearch(const std::string& id);
  Result<std::vector<SavedSearch>> SavedSearches(const std::string& owner) const;

  Result<std::optional<ExportJob>> GetJob(const std::string& id) const;
  Status PutJob(const ExportJob& j);
  Result<std::vector<ExportJob>> Jobs() const;

  Result<std::vector<std::string>> TagsOf(const std::string& message_id) const;
  // Adds and removes tags on many messages in one synced write.
  Status ChangeTags(const std::vector<std::string>& message_ids, const std::vector<std::string>& add,
                    const std::vector<std::string>& remove);
  Result<std::vector<std::string>> MessagesTagged(const std::string& tag) const;
  // Drops every tag of purged messages (no tag change is logged: their documents are gone).
  Status ForgetMessages(const std::vector<std::string>& message_ids);
  // The tag change log: each ChangeTags appends the ids it touched (T/<seq>), in order, so that
  // the index can follow (jobs/indexer.h). 0 when nothing was ever tagged.
  Result<uint64_t> LastTagChange() const;
  // fn(seq, ids) for every entry after `after`, in order, until it returns false.
  Status ForEachTagChange(uint64_t after, const std::function<bool(uint64_t, const std::vector<std::string>&)>& fn) const;

 private:
  static std::string TagChangeKey(uint64_t seq);
  StateStore* store_;
  // Held across every read-modify-write of a record (users, tokens, tags): RocksDB orders
  // single writes, not a read and the write that depends on it.
  mutable std::mutex rmw_;
};

// Answers tag: in queries (indexer/query.h) from the records: the messages carrying the tag.
// Throws std::runtime_error when the store cannot be read (a parse callback has no other way
// out), which the API turns into a 500 and an export into a failed job.
index::TagResolver TagQuery(const Records* records);

}  // namespace mailvault::control
