// The REST API below the transport: the audit chain and what `audit verify` reports for each
// kind of tampering, logins (backoff, lockout, sessions), the role table, reviewer scopes,
// request limits, and exports read back with an independent reader (libarchive's own zip
// reader here; tests/api/api_client.py does it with Python's zipfile over real HTTPS).
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "control/audit.h"
#include "api/auth.h"
#include "api/export.h"
#include "api/service.h"
#include "control/state.h"
#include "core/message.h"
#include "indexer/index.h"
#include "tests/test_util.h"
#include "vault/vault.h"

namespace mailvault::api {
namespace {

using nlohmann::json;
using mailvault::testing::SimpleMessage;
using mailvault::testing::TempDir;

SecretKey TestKey(char c) { return SecretKey(std::string(kKeySize, c)); }

AuditEvent Event(const std::string& action, const std::string& target = "") {
  AuditEvent e;
  e.user = "rev";
  e.role = "reviewer";
  e.auth = "session";
  e.source = "127.0.0.1";
  e.action = action;
  e.target = target;
  e.status = 200;
  e.details = json{{"query", "from:alice@example.com"}};
  return e;
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<StateStore>> s = StateStore::Open(tmp_.path(), TestKey('s'));
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    store_ = std::move(*s);
    Result<std::unique_ptr<AuditLog>> a = AuditLog::Open(store_.get(), TestKey('a'));
    ASSERT_TRUE(a.ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*a)->Record(Event("search", std::to_string(i))).ok());
  }
  AuditVerifyReport Verify() {
    Result<AuditVerifyReport> r = AuditLog::Verify(*store_, TestKey('a'));
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : AuditVerifyReport{};
  }
  std::string Raw(uint64_t seq) { return **store_->GetRaw(AuditLog::KeyOf(seq)); }
  void Put(uint64_t seq, std::optional<std::string> v) { ASSERT_TRUE(store_->WriteRaw({{AuditLog::KeyOf(seq), std::move(v)}}).ok()); }
  std::string FirstKind(const AuditVerifyReport& r) { return r.problems.empty() ? "" : r.problems.front().kind; }

  TempDir tmp_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(AuditTest, CleanChainVerifies) {
  AuditVerifyReport r = Verify();
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.entries, 10u);
  EXPECT_EQ(r.head.seq, 10u);
}

TEST_F(AuditTest, ReopenedLogContinuesTheChain) {
  Result<std::unique_ptr<AuditLog>> a = AuditLog::Open(store_.get(), TestKey('a'));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->head().seq, 10u);
  ASSERT_TRUE((*a)->Record(Event("message.view")).ok());
  AuditVerifyReport r = Verify();
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.entries, 11u);
}

TEST_F(AuditTest, FlippedByteIsAnEdit) {
  std::string v = Raw(4);
  v[v.size() / 2] ^= 1;
  Put(4, v);
  AuditVerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems.front().seq, 4u);
  EXPECT_EQ(FirstKind(r), "edited");
}

TEST_F(AuditTest, ContentChangedAndResealedIsAnEdit) {
  // Someone with the state key but not the audit key rewrites who searched for what.
  Result<std::string> plain = mailvault::Open(store_->key(), AuditLog::kSealAad, Raw(6));
  ASSERT_TRUE(plain.ok());
  json j = json::parse(*plain);
  j["details"]["query"] = "something harmless";
  std::string box;
  Seal(store_->key(), AuditLog::kSealAad, j.dump(), &box);
  Put(6, box);
  AuditVerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems.front().seq, 6u);
  EXPECT_EQ(FirstKind(r), "edited");
}

TEST_F(AuditTest, SwappedEntriesAreReordered) {
  std::string a = Raw(3), b = Raw(7);
  Put(3, b);
  Put(7, a);
  AuditVerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems.front().seq, 3u);
  EXPECT_EQ(FirstKind(r), "reordered");
}

TEST_F(AuditTest, RemovedEntryIsFound) {
  Put(5, std::nullopt);
  AuditVerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems.front().seq, 6u);
  EXPECT_EQ(FirstKind(r), "removed");
}

TEST_F(AuditTest, RemovedAndRenumberedEntryBreaksTheChain) {
  // Entry 5 deleted and 6..10 moved down one place: the seqs inside no longer match their keys.
  for (uint64_t s = 5; s < 10; ++s) Put(s, Raw(s + 1));
  Put(10, std::nullopt);
  AuditVerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problems.front().seq, 5u);
}

TEST_F(AuditTest, CutTailIsTruncation) {
  Put(10, std::nullopt);
  Put(9, std::nullopt);
  AuditVerifyReport r = Verify();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(FirstKind(r), "truncated");
}

TEST_F(AuditTest, ConcurrentWritersFormOneChain) {
  Result<std::unique_ptr<AuditLog>> a = AuditLog::Open(store_.get(), TestKey('a'));
  ASSERT_TRUE(a.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) EXPECT_TRUE((*a)->Record(Event("search", std::to_string(t))).ok());
    });
  }
  for (auto& t : threads) t.join();
  AuditVerifyReport r = Verify();
  EXPECT_TRUE(r.ok()) << (r.problems.empty() ? "" : r.problems.front().detail);
  EXPECT_EQ(r.entries, 410u);
  AuditLog::Filter f;
  f.after_seq = 400;
  Result<std::vector<AuditEntry>> read = (*a)->Read(f);
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->size(), 10u);
  for (size_t i = 1; i < read->size(); ++i) EXPECT_EQ((*read)[i].prev, (*read)[i - 1].hash);
}

TEST_F(AuditTest, WrongKeyFailsEveryEntry) {
  Result<AuditVerifyReport> r = AuditLog::Verify(*store_, TestKey('b'));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->ok());
}

TEST(StateStoreTest, ValuesAreSealedAndBoundToTheirKey) {
  TempDir tmp;
  Result<std::unique_ptr<StateStore>> s = StateStore::Open(tmp.path(), TestKey('s'));
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Write({{"u/alice", "{\"secret\":\"needle-in-the-store\"}"}, {"u/bob", "{}"}}).ok());
  std::string raw = **(*s)->GetRaw("u/alice");
  EXPECT_EQ(raw.find("needle"), std::string::npos);
  // A value copied under another key does not open.
  ASSERT_TRUE((*s)->WriteRaw({{"u/bob", raw}}).ok());
  EXPECT_FALSE((*s)->Get("u/bob").ok());
  EXPECT_EQ(**(*s)->Get("u/alice"), "{\"secret\":\"needle-in-the-store\"}");
  // A second process cannot open it while this one has it.
  Result<std::unique_ptr<StateStore>> again = StateStore::Open(tmp.path(), TestKey('s'));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kBusy);
}

TEST(CsvTest, QuotesAndDefusesFormulas) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
  EXPECT_EQ(CsvField("+1"), "'+1");
  EXPECT_EQ(CsvField("-1"), "'-1");
  EXPECT_EQ(CsvField("@SUM(A1)"), "'@SUM(A1)");
  EXPECT_EQ(CsvField("line\nbreak"), "\"line\nbreak\"");
}

// ---- the service, with a real vault and index ---------------------------------------------

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitMessageParsing();
    KeySource keys;
    keys.key_file = tmp_ / "master.key";
    VaultOptions options;
    options.auto_train_messages = 0;
    bool created = false;
    ASSERT_TRUE(Vault::Init(dir(), keys, options, &created).ok());
    Result<std::unique_ptr<Vault>> v = Vault::Open(dir(), keys, options);
    ASSERT_TRUE(v.ok());
    vault_ = std::move(*v);
    for (int i = 0; i < 6; ++i) {
      Envelope e;
      e.capture_time_us = 1700000000000000 + i;
      e.source = "test";
      e.custodian = i < 3 ? "alice@corp.test" : "bob@corp.test";
      std::string raw = SimpleMessage("quarterly report " + std::to_string(i), "numbers " + std::to_string(i),
                                      "<m" + std::to_string(i) + "@corp.test>");
      Result<IngestResult> r = vault_->Ingest(raw, e);
      ASSERT_TRUE(r.ok());
      ids_.push_back(r->id.Hex());
    }
    Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(dir(), {});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->CatchUp(*vault_).ok());
    store_ = StateStore::Open(dir(), vault_->DeriveSubkey("mailvault/v1/state")).value();
    audit_ = AuditLog::Open(store_.get(), vault_->DeriveSubkey("mailvault/v1/audit")).value();
    records_ = std::make_unique<Records>(store_.get());
    AuthSettings as;
    as.max_backoff_seconds = 0;  // so the lockout test need not wait; backoff is tested apart
    auth_ = std::make_unique<Authenticator>(records_.get(), as);
    exports_ = std::make_unique<ExportRunner>(vault_.get(), dir(), records_.get(), audit_.get(), ExportSettings{});
    ASSERT_TRUE(exports_->Start().ok());
    service_ = std::make_unique<ApiService>(vault_.get(), dir(), records_.get(), auth_.get(), audit_.get(), exports_.get(),
                                            nullptr, json::object());
    for (const char* role : {"admin", "operator", "reviewer", "auditor"}) AddUser(role, *ParseRole(role));
    Scope alice;
    alice.custodians = {"alice@corp.test"};
    AddUser("counsel", Role::kReviewer, alice);
  }
  void TearDown() override { exports_->Stop(); }
  std::string dir() const { return tmp_ / "vault"; }

  void AddUser(const std::string& name, Role role, Scope scope = {}) {
    User u;
    u.name = name;
    u.role = role;
    u.scope = scope;
    u.password_hash = HashPassword("password-" + name, ScryptParams{1 << 10, 8, 1});
    u.created = NowSeconds() - 10;
    ASSERT_TRUE(records_->PutUser(u).ok());
  }
  Response Call(const std::string& method, const std::string& path, const std::string& token = "", const std::string& body = "") {
    Request r;
    r.method = method;
    size_t q = path.find('?');
    r.path = path.substr(0, q);
    if (q != std::string::npos) r.query = ParseQueryString(path.substr(q + 1));
    if (!token.empty()) {
      r.headers["authorization"] = "Bearer " + token;
      r.authorization_headers = 1;
    }
    r.body = body;
    r.peer = "127.0.0.1";
    r.request_id = std::to_string(++n_);
    return service_->Handle(r);
  }
  std::string Login(const std::string& name) {
    Response r = Call("POST", "/api/v1/auth/login", "", json{{"username", name}, {"password", "password-" + name}}.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body).value("token", "");
  }
  json Body(const Response& r) { return json::parse(r.body, nullptr, false); }

  TempDir tmp_;
  std::unique_ptr<Vault> vault_;
  std::vector<std::string> ids_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Records> records_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<ExportRunner> exports_;
  std::unique_ptr<ApiService> service_;
  int n_ = 0;
};

TEST_F(ServiceTest, EveryRouteRefusesEveryRoleTheTableRefuses) {
  std::map<std::string, std::string> tokens;
  for (const char* role : {"admin", "operator", "reviewer", "auditor"}) tokens[role] = Login(role);
  for (const RouteInfo& route : ApiService::Routes()) {
    std::string path = route.path;
    for (const char* p : {"{id}", "{name}", "{tag}"}) {
      size_t at;
      while ((at = path.find(p)) != std::string::npos) path.replace(at, std::string(p).size(), "0000000000000000");
    }
    std::set<std::string> allowed(route.roles.begin(), route.roles.end());
    if (route.method == "POST" && path == "/api/v1/auth/logout") continue;  // ends the session used below
    if (!allowed.count("anonymous")) {
      EXPECT_EQ(Call(route.method, path).status, 401) << route.method << " " << route.path;
      EXPECT_EQ(Call(route.method, path, "mvs_" + std::string(64, 'a')).status, 401) << route.path;
      EXPECT_EQ(Call(route.method, path, "mvt_" + std::string(64, 'b')).status, 401) << route.path;
    }
    for (const auto& [role, token] : tokens) {
      int status = Call(route.method, path, token, "{}").status;
      if (allowed.count(role) || allowed.count("anonymous")) {
        EXPECT_NE(status, 403) << role << " " << route.method << " " << route.path;
        EXPECT_NE(status, 401) << role << " " << route.method << " " << route.path;
      } else {
        EXPECT_EQ(status, 403) << role << " " << route.method << " " << route.path;
      }
    }
  }
}

TEST_F(ServiceTest, ScopedReviewerSeesOnlyTheirCustodiansAndCannotTellMissingFromHidden) {
  std::string counsel = Login("counsel"), reviewer = Login("reviewer");
  EXPECT_EQ(Body(Call("POST", "/api/v1/search", reviewer, R"({"query":"*"})"))["total"], 6);
  EXPECT_EQ(Body(Call("POST", "/api/v1/search", counsel, R"({"query":"*"})"))["total"], 3);
  // A query that tries to break out of the scope's parentheses is just a query inside it.
  Response escape = Call("POST", "/api/v1/search", counsel, R"({"query":"x) OR (*"})");
  EXPECT_TRUE(escape.status == 400 || Body(escape)["total"].get<int>() <= 3) << escape.body;
  Response hidden = Call("GET", "/api/v1/messages/" + ids_[4], counsel);
  Response missing = Call("GET", "/api/v1/messages/" + std::string(64, 'e'), counsel);
  EXPECT_EQ(hidden.status, 404);
  EXPECT_EQ(missing.status, 404);
  json a = Body(hidden), b = Body(missing);
  a.erase("instance");
  b.erase("instance");
  EXPECT_EQ(a, b);
  EXPECT_EQ(Call("GET", "/api/v1/messages/" + ids_[4] + "/raw", counsel).status, 404);
  EXPECT_EQ(Call("PUT", "/api/v1/messages/" + ids_[4] + "/tags/hot", counsel).status, 404);
  EXPECT_EQ(Call("GET", "/api/v1/messages/" + ids_[1], counsel).status, 200);
  EXPECT_EQ(Call("GET", "/api/v1/messages/" + ids_[4], reviewer).status, 200);
}

TEST_F(ServiceTest, IdsAreExactlyFullLowerCaseHex) {
  std::string t = Login("reviewer");
  std::string id = ids_[0];
  std::string upper = id;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  for (const std::string& bad : {id.substr(0, 6), upper, id + "0", std::string("..%2f..%2fetc%2fpasswd"), id.substr(0, 63) + "%00",
                                 std::string("%2e%2e"), std::string("%zz")}) {
    EXPECT_EQ(Call("GET", "/api/v1/messages/" + bad, t).status, 404) << bad;
  }
  Response raw = Call("GET", "/api/v1/messages/" + id + "/raw", t);
  ASSERT_EQ(raw.status, 200);
  EXPECT_EQ(Sha256Hex(raw.body), id);  // the bytes are the fingerprinted bytes
  // The metadata carries the other fingerprints: one SHA-256 per decoded part, and the parts'
  // hashes are the content hashes.
  json meta = Body(Call("GET", "/api/v1/messages/" + id, t));
  EXPECT_EQ(meta["sha256"], id);
  EXPECT_EQ(meta["message_id"], "<m0@corp.test>");
  ASSERT_TRUE(meta["parts"].is_array() && !meta["parts"].empty()) << meta.dump();
  std::set<std::string> part_hashes, content_hashes;
  for (const json& p : meta["parts"]) {
    if (p.contains("sha256")) part_hashes.insert(p["sha256"].get<std::string>());
  }
  for (const json& h : meta["content_hashes"]) content_hashes.insert(h.get<std::string>());
  EXPECT_FALSE(content_hashes.empty());
  for (const std::string& h : content_hashes) EXPECT_TRUE(ValidMessageId(h)) << h;  // 64 lower-case hex
  EXPECT_EQ(part_hashes, content_hashes);
}

TEST_F(ServiceTest, BadBodiesGetClearErrors) {
  std::string t = Login("reviewer");
  EXPECT_EQ(Call("POST", "/api/v1/search", t, "{\"query\":").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, "[1,2]").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, std::string(100000, '[')).status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, R"({"query":"*","limit":1e999})").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, R"({"query":"*","limit":-1})").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, R"({"query":"*","offset":18446744073709551615})").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, R"({"query":"*","limit":1001})").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, R"({"query":"from:"})").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, R"({"query":12})").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, "{\"query\":\"" + std::string(16 << 10, 'a') + "b\"}").status, 400);
  EXPECT_EQ(Call("POST", "/api/v1/search", t, std::string(2 << 20, ' ')).status, 413);
  Response r = Call("POST", "/api/v1/search", t, "{\"query\":\"\xff\xfe\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.content_type, "application/problem+json");
  EXPECT_EQ(Call("DELETE", "/api/v1/search", t).status, 405);
  EXPECT_EQ(Call("GET", "/api/v2/search", t).status, 404);
}

TEST_F(ServiceTest, LoginBackoffLockoutAndSessionEnd) {
  AuthSettings s;
  s.max_failures_before_lock = 3;
  Authenticator auth(records_.get(), s);
  auto status = [&](const std::string& pw) {
    auto r = auth.Login("reviewer", pw, "10.0.0.1");
    return std::holds_alternative<LoginResult>(r) ? 200 : std::get<AuthRefusal>(r).status;
  };
  EXPECT_EQ(status("wrong"), 401);
  EXPECT_EQ(status("password-reviewer"), 429);  // within the 1 s backoff: not even checked
  EXPECT_EQ(auth.failed_logins(), 2u);
  // Unknown names back off the same way, so the answers do not reveal who exists.
  auto unknown = [&] { auto r = auth.Login("nobody", "x", "10.0.0.2"); return std::get<AuthRefusal>(r).status; };
  EXPECT_EQ(unknown(), 401);
  EXPECT_EQ(unknown(), 429);

  auto r = auth_->Login("reviewer", "password-reviewer", "10.0.0.3");
  ASSERT_TRUE(std::holds_alternative<LoginResult>(r));
  std::string token = std::get<LoginResult>(r).token;
  EXPECT_TRUE(std::holds_alternative<Principal>(auth_->Authenticate("Bearer " + token, 1)));
  EXPECT_FALSE(std::holds_alternative<Principal>(auth_->Authenticate("Bearer " + token, 2)));  // two headers
  EXPECT_FALSE(std::holds_alternative<Principal>(auth_->Authenticate("Basic " + token, 1)));
  auth_->EndSessionsOf("reviewer");
  EXPECT_FALSE(std::holds_alternative<Principal>(auth_->Authenticate("Bearer " + token, 1)));
}

TEST_F(ServiceTest, TenFailuresLockTheAccountUntilAnAdminUnlocks) {
  for (int i = 0; i < 10; ++i) auth_->Login("operator", "wrong", "10.0.1." + std::to_string(i));
  auto r = auth_->Login("operator", "password-operator", "10.0.2.1");
  ASSERT_TRUE(std::holds_alternative<AuthRefusal>(r));
  EXPECT_EQ(std::get<AuthRefusal>(r).status, 429);
  EXPECT_GT((*records_->GetUser("operator"))->locked_until, NowSeconds());  // survives a restart
  std::string admin = Login("admin");
  EXPECT_EQ(Call("PUT", "/api/v1/users/operator", admin, R"({"unlock":true})").status, 200);
  EXPECT_TRUE(std::holds_alternative<LoginResult>(auth_->Login("operator", "password-operator", "10.0.2.1")));
}

TEST_F(ServiceTest, ApiTokensWorkUntilRevokedAndDisablingAUserStopsThem) {
  std::string session = Login("reviewer");
  Response created = Call("POST", "/api/v1/tokens", session, R"({"label":"ediscovery tool","expires_days":30})");
  ASSERT_EQ(created.status, 201);
  std::string token = Body(created)["token"], id = Body(created)["id"];
  EXPECT_EQ(Call("POST", "/api/v1/search", token, R"({"query":"report"})").status, 200);
  EXPECT_EQ(Call("DELETE", "/api/v1/tokens/" + id, Login("operator")).status, 404);  // not theirs
  EXPECT_EQ(Call("DELETE", "/api/v1/tokens/" + id, session).status, 204);
  EXPECT_EQ(Call("POST", "/api/v1/search", token, R"({"query":"report"})").status, 401);

  Response again = Call("POST", "/api/v1/tokens", session, "{}");
  std::string token2 = Body(again)["token"];
  std::string admin = Login("admin");
  EXPECT_EQ(Call("PUT", "/api/v1/users/reviewer", admin, R"({"disabled":true})").status, 200);
  EXPECT_EQ(Call("POST", "/api/v1/search", token2, R"({"query":"report"})").status, 401);
  EXPECT_EQ(Call("GET", "/api/v1/me", session).status, 401);
}

TEST_F(ServiceTest, RevokedTokensStayRevokedAndUserChangesAreChecked) {
  auto [token, secret] = *records_->CreateToken("reviewer", "script", 30);
  ASSERT_TRUE(records_->DeleteToken(token).ok());
  // The once-a-minute last_used write comes after the revocation: it must not bring it back.
  ASSERT_TRUE(records_->TouchToken(token.hash, NowSeconds()).ok());
  EXPECT_FALSE(*records_->TokenByHash(token.hash));
  EXPECT_EQ(Call("GET", "/api/v1/me", secret).status, 401);

  std::string admin = Login("admin");
  EXPECT_EQ(Call("PUT", "/api/v1/users/operator", admin, R"({"unlock":false})").status, 400);
  EXPECT_EQ(Call("PUT", "/api/v1/users/operator", admin, R"({"scope":{"custodians":["a@b.example"]}})").status, 400);  // not a reviewer
  EXPECT_EQ(Call("POST", "/api/v1/users", admin,
                 R"({"name":"x","role":"reviewer","password":"long-enough-1","scope":{"custodians":["a"b@c.example"]}})")
                .status,
            400);
  EXPECT_EQ(Call("PUT", "/api/v1/users/nobody", admin, R"({"disabled":true})").status, 404);
}

TEST_F(ServiceTest, TagsSavedSearchesAndTheirAudit) {
  std::string t = Login("reviewer");
  EXPECT_EQ(Call("PUT", "/api/v1/messages/" + ids_[2] + "/tags/privileged", t).status, 204);
  EXPECT_EQ(Body(Call("POST", "/api/v1/search", t, R"({"query":"tag:privileged"})"))["total"], 1);
  EXPECT_EQ(Body(Call("POST", "/api/v1/search/tags", t, R"({"query":"report","add":["matter-7"]})"))["matched"], 6);
  EXPECT_EQ(Body(Call("POST", "/api/v1/search", t, R"({"query":"tag:matter-7 AND NOT tag:privileged"})"))["total"], 5);
  EXPECT_EQ(Call("DELETE", "/api/v1/messages/" + ids_[2] + "/tags/privileged", t).status, 204);
  EXPECT_EQ(Body(Call("POST", "/api/v1/search", t, R"({"query":"tag:privileged"})"))["total"], 0);
  EXPECT_EQ(Call("PUT", "/api/v1/messages/" + ids_[2] + "/tags/NOT%20OK", t).status, 400);

  Response saved = Call("POST", "/api/v1/saved-searches", t, R"({"name":"numbers","query":"numbers"})");
  ASSERT_EQ(saved.status, 201);
  std::string sid = Body(saved)["id"];
  EXPECT_EQ(Body(Call("POST", "/api/v1/saved-searches/" + sid + "/run", t, "{}"))["total"], 6);
  EXPECT_EQ(Call("POST", "/api/v1/saved-searches/" + sid + "/run", Login("counsel"), "{}").status, 404);  // not theirs
  EXPECT_EQ(Call("DELETE", "/api/v1/saved-searches/" + sid, t).status, 204);

  std::string auditor = Login("auditor");
  json audit = Body(Call("GET", "/api/v1/audit?action=tag&limit=1000", auditor));
  std::set<std::string> actions;
  for (const json& e : audit["entries"]) actions.insert(e["action"].get<std::string>());
  EXPECT_EQ(actions, (std::set<std::string>{"tag.add", "tag.bulk", "tag.remove"}));
  json searches = Body(Call("GET", "/api/v1/audit?action=search&user=reviewer&limit=1000", auditor));
  ASSERT_FALSE(searches["entries"].empty());
  EXPECT_EQ(searches["entries"][0]["details"]["query"], "tag:privileged");
  Result<AuditVerifyReport> v = AuditLog::Verify(*store_, vault_->DeriveSubkey("mailvault/v1/audit"));
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok());
}

// Reads a zip with libarchive's reader: name -> content.
std::map<std::string, std::string> ReadZip(const std::string& path) {
  std::map<std::string, std::string> out;
  archive* a = archive_read_new();
  archive_read_support_format_zip(a);
  EXPECT_EQ(archive_read_open_filename(a, path.c_str(), 1 << 16), ARCHIVE_OK);
  archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    std::string data(static_cast<size_t>(archive_entry_size(e)), '\0');
    archive_read_data(a, data.data(), data.size());
    out[archive_entry_pathname(e)] = data;
  }
  archive_read_free(a);
  return out;
}

TEST_F(ServiceTest, ExportZipHoldsEachMessageAndAManifestOfItsHashes) {
  std::string t = Login("counsel");  // scoped: the export holds alice's three only
  Response created = Call("POST", "/api/v1/exports", t, R"({"query":"report","format":"zip"})");
  ASSERT_EQ(created.status, 202) << created.body;
  std::string id = Body(created)["id"];
  json job;
  for (int i = 0; i < 200; ++i) {
    job = Body(Call("GET", "/api/v1/exports/" + id, t));
    if (job["state"] == "done" || job["state"] == "failed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(job["state"], "done") << job.dump();
  Response dl = Call("GET", "/api/v1/exports/" + id + "/download", t);
  ASSERT_EQ(dl.status, 200);
  EXPECT_EQ(Sha256Hex(mailvault::testing::ReadFile(dl.file)), job["artefact_sha256"]);
  std::map<std::string, std::string> zip = ReadZip(dl.file);
  ASSERT_EQ(zip.size(), 4u);
  EXPECT_EQ(Sha256Hex(zip["manifest.csv"]), job["manifest_sha256"]);
  for (int i = 0; i < 3; ++i) {
    const std::string& eml = zip["messages/" + ids_[static_cast<size_t>(i)] + ".eml"];
    EXPECT_EQ(Sha256Hex(eml), ids_[static_cast<size_t>(i)]);
    EXPECT_NE(zip["manifest.csv"].find(ids_[static_cast<size_t>(i)] + ",<m" + std::to_string(i) + "@corp.test>"), std::string::npos);
  }
  EXPECT_EQ(zip["manifest.csv"].find(ids_[4]), std::string::npos);
  EXPECT_EQ(Call("GET", "/api/v1/exports/" + id, Login("reviewer")).status, 404);  // someone else's job
}

}  // namespace
}  // namespace mailvault::api
