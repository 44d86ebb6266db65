// Issue 13 regression tests for the REST API (items 6, 7, 8 and the API parts of 9, and the
// concurrency test): each failed against the code before its fix.
//   - an admin cannot act as a person who reads mail (tokens minted for others);
//   - a scoped reviewer sees only their custodians' captures of a message, in the message's
//     metadata and in an export's manifest;
//   - a storm of bad logins leaves the API responsive, and the per-address limit holds an IPv6
//     /64 as one address;
//   - user creation and export expiry are atomic: concurrent requests leave one user, one
//     entry, and a deleted export deleted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <rocksdb/db.h>

#include "control/audit.h"
#include "api/auth.h"
#include "api/export.h"
#include "api/http_beast.h"
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

constexpr const char* kAlice = "alice@corp.test";
constexpr const char* kBob = "bob@corp.test";
constexpr const char* kBccOnly = "carol.secret@corp.test";  // a Bcc recipient only the journal knows

class HardeningApiTest : public ::testing::Test {
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
    int64_t t = 1700000000000000;
    auto ingest = [&](const std::string& raw, Envelope e) {
      e.capture_time_us = ++t;
      if (e.source.empty()) e.source = "test";
      Result<IngestResult> r = vault_->Ingest(raw, e);
      EXPECT_TRUE(r.ok());
      return r.ok() ? r->id.Hex() : std::string();
    };
    for (int i = 0; i < 6; ++i) {
      Envelope e;
      e.custodian = i < 3 ? kAlice : kBob;
      ids_.push_back(ingest(SimpleMessage("quarterly report " + std::to_string(i), "numbers " + std::to_string(i),
                                          "<m" + std::to_string(i) + "@corp.test>"),
                            e));
    }
    // One message in alice's mailbox, in bob's, and journaled with a Bcc to someone else.
    const std::string memo = SimpleMessage("shared memo", "for alice and bob", "<memo@corp.test>");
    Envelope a, b, journal;
    a.custodian = kAlice;
    b.custodian = kBob;
    journal.source = "smtp:10.0.0.9";
    journal.recipients = {kAlice, kBccOnly};
    journal.journal_report = std::string("Sender: ceo@corp.test\nRecipient: ") + kAlice + "\nRecipient: " + kBccOnly + ", Bcc\n";
    memo_ = ingest(memo, a);
    ASSERT_EQ(ingest(memo, b), memo_);
    ASSERT_EQ(ingest(memo, journal), memo_);
    // Custodians where one address ends with the other.
    const std::string twins = SimpleMessage("twin custodians", "jimbob and bob", "<twins@corp.test>");
    Envelope jim, bob;
    jim.custodian = "jimbob@corp.test";
    bob.custodian = kBob;
    twins_ = ingest(twins, jim);
    ASSERT_EQ(ingest(twins, bob), twins_);

    Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(dir(), {});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->CatchUp(*vault_).ok());
    store_ = StateStore::Open(dir(), vault_->DeriveSubkey("mailvault/v1/state")).value();
    audit_ = AuditLog::Open(store_.get(), vault_->DeriveSubkey("mailvault/v1/audit")).value();
    records_ = std::make_unique<Records>(store_.get());
    AuthSettings as;
    as.max_backoff_seconds = 0;
    auth_ = std::make_unique<Authenticator>(records_.get(), as);
    ExportSettings es;
    es.ttl_seconds = export_ttl_;
    exports_ = std::make_unique<ExportRunner>(vault_.get(), dir(), records_.get(), audit_.get(), es);
    ASSERT_TRUE(exports_->Start().ok());
    service_ = std::make_unique<ApiService>(vault_.get(), dir(), records_.get(), auth_.get(), audit_.get(), exports_.get(),
                                            nullptr, json::object(), Settings());
    for (const char* role : {"admin", "operator", "reviewer", "auditor"}) AddUser(role, *ParseRole(role));
    Scope alice;
    alice.custodians = {kAlice};
    AddUser("counsel", Role::kReviewer, alice);
  }
  void TearDown() override {
    if (server_) server_->Stop();
    if (exports_) exports_->Stop();
  }
  std::string dir() const { return tmp_ / "vault"; }
  static ApiSettings Settings() { return ApiSettings{}; }

  void AddUser(const std::string& name, Role role, Scope scope = {}) {
    User u;
    u.name = name;
    u.role = role;
    u.scope = scope;
    u.password_hash = HashPassword("password-" + name, ScryptParams{1 << 10, 8, 1});
    u.created = NowSeconds() - 10;
    ASSERT_TRUE(records_->PutUser(u).ok());
  }
  Response Call(const std::string& method, const std::string& path, const std::string& token = "", const std::string& body = "",
                const std::string& peer = "127.0.0.1") {
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
    r.peer = peer;
    r.request_id = std::to_string(++n_);
    return service_->Handle(r);
  }
  std::string Login(const std::string& name) {
    Response r = Call("POST", "/api/v1/auth/login", "", json{{"username", name}, {"password", "password-" + name}}.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body).value("token", "");
  }
  static json Body(const Response& r) { return json::parse(r.body, nullptr, false); }

  std::vector<AuditEntry> AllEntries() {
    std::vector<AuditEntry> out;
    AuditLog::Filter f;
    f.limit = 1000;
    for (;;) {
      Result<std::vector<AuditEntry>> part = audit_->Read(f);
      EXPECT_TRUE(part.ok());
      if (!part.ok() || part->empty()) break;
      f.after_seq = part->back().seq;
      out.insert(out.end(), part->begin(), part->end());
    }
    return out;
  }
  void ExpectAuditClean() {
    Result<AuditVerifyReport> v = AuditLog::Verify(*store_, vault_->DeriveSubkey("mailvault/v1/audit"));
    ASSERT_TRUE(v.ok());
    EXPECT_TRUE(v->ok()) << (v->problems.empty() ? "" : v->problems.front().kind + ": " + v->problems.front().detail);
  }
  json WaitForExport(const std::string& token, const std::string& id) {
    json job;
    for (int i = 0; i < 400; ++i) {
      job = Body(Call("GET", "/api/v1/exports/" + id, token));
      if (job.value("state", "") != "queued" && job.value("state", "") != "running") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return job;
  }

  int64_t export_ttl_ = 7 * 86400;
  TempDir tmp_;
  std::unique_ptr<Vault> vault_;
  std::vector<std::string> ids_;
  std::string memo_, twins_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<Records> records_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<ExportRunner> exports_;
  std::unique_ptr<ApiService> service_;
  std::unique_ptr<BeastServer> server_;
  std::atomic<int> n_{0};
};

// ---- item 6: an admin cannot act as anyone ---------------------------------------------------

TEST_F(HardeningApiTest, AdminCannotMintATokenForSomeoneWhoReadsMailOrTheAuditTrail) {
  std::string admin = Login("admin");
  for (const char* who : {"reviewer", "counsel", "auditor"}) {
    Response r = Call("POST", "/api/v1/tokens", admin, json{{"user", who}, {"label", "impersonation"}}.dump());
    EXPECT_EQ(r.status, 403) << who << ": " << r.body;
  }
  Result<std::vector<Token>> tokens = records_->Tokens();
  ASSERT_TRUE(tokens.ok());
  EXPECT_TRUE(tokens->empty()) << "a token was minted for a person who reads mail";
  // The refusals are on the trail, naming the admin and whom they tried to mint for.
  size_t refused = 0;
  for (const AuditEntry& e : AllEntries()) {
    if (e.event.action == "token.create" && e.event.status == 403 && e.event.user == "admin") ++refused;
  }
  EXPECT_EQ(refused, 3u);
}

TEST_F(HardeningApiTest, ATokenMintedForAnotherNamesItsIssuerAndStopsIfTheHolderMayReadMail) {
  std::string admin = Login("admin");
  Response r = Call("POST", "/api/v1/tokens", admin, R"({"user":"operator","label":"monitoring"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string token = Body(r)["token"], id = Body(r)["id"];
  EXPECT_EQ(Body(r).value("issued_by", ""), "admin");
  ASSERT_EQ(Call("GET", "/api/v1/status", token).status, 200);
  ASSERT_EQ(Call("GET", "/api/v1/users", token).status, 403);  // audited as access.refused
  size_t named = 0, unnamed = 0;
  for (const AuditEntry& e : AllEntries()) {
    if (e.event.auth != "token:" + id) continue;
    (e.event.details.value("issued_by", "") == "admin" ? named : unnamed)++;
  }
  EXPECT_GE(named, 1u);
  EXPECT_EQ(unnamed, 0u) << "an action taken with an admin-issued token does not name the admin";
  // A later role change must not turn the admin's token into a way to read mail.
  ASSERT_EQ(Call("PUT", "/api/v1/users/operator", admin, R"({"role":"reviewer"})").status, 200);
  EXPECT_EQ(Call("POST", "/api/v1/search", token, R"({"query":"report"})").status, 401);
  // A token the user made for themselves keeps working across the same change.
  std::string own = Body(Call("POST", "/api/v1/tokens", Login("operator"), "{}"))["token"];
  EXPECT_EQ(Call("POST", "/api/v1/search", own, R"({"query":"report"})").status, 200);
}

// ---- item 7: scoped reviewers see only their custodians ------------------------------------

TEST_F(HardeningApiTest, ScopedReviewerSeesOnlyTheirCustodiansCapturesOfAMessage) {
  Response all = Call("GET", "/api/v1/messages/" + memo_, Login("reviewer"));
  ASSERT_EQ(all.status, 200);
  EXPECT_EQ(Body(all)["envelopes"].size(), 3u);  // unscoped: every capture

  Response scoped = Call("GET", "/api/v1/messages/" + memo_, Login("counsel"));
  ASSERT_EQ(scoped.status, 200) << scoped.body;
  json envs = Body(scoped)["envelopes"];
  ASSERT_EQ(envs.size(), 1u) << envs.dump();
  EXPECT_EQ(envs[0].value("custodian", ""), kAlice);
  EXPECT_EQ(scoped.body.find(kBob), std::string::npos) << "another custodian shows: " << scoped.body;
  EXPECT_EQ(scoped.body.find(kBccOnly), std::string::npos) << "a Bcc recipient shows: " << scoped.body;
  EXPECT_EQ(scoped.body.find("journal_report"), std::string::npos);
}

TEST_F(HardeningApiTest, ScopedExportManifestNamesOnlyTheScopesCustodians) {
  std::string counsel = Login("counsel");
  Response created = Call("POST", "/api/v1/exports", counsel, R"({"query":"memo","format":"zip"})");
  ASSERT_EQ(created.status, 202) << created.body;
  json job = WaitForExport(counsel, Body(created)["id"]);
  ASSERT_EQ(job["state"], "done") << job.dump();
  Response manifest = Call("GET", "/api/v1/exports/" + job["id"].get<std::string>() + "/manifest", counsel);
  ASSERT_EQ(manifest.status, 200);
  std::string csv = mailvault::testing::ReadFile(manifest.file);
  EXPECT_NE(csv.find(memo_), std::string::npos) << csv;
  EXPECT_NE(csv.find(std::string(",") + kAlice + "\r\n"), std::string::npos) << csv;
  EXPECT_EQ(csv.find(kBob), std::string::npos) << "the manifest names a custodian outside the scope:\n" << csv;
}

TEST_F(HardeningApiTest, ManifestKeepsACustodianWhoseAddressEndsAnother) {
  ExportJob job;
  job.id = "00000000000000aa";
  Status s = ExportRunner::Write(*vault_, *records_, {twins_}, "mbox", tmp_ / "out.mbox", tmp_ / "out.csv", &job,
                                 [](const ExportJob&) { return true; });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  std::string csv = mailvault::testing::ReadFile(tmp_ / "out.csv");
  EXPECT_NE(csv.find("jimbob@corp.test; bob@corp.test"), std::string::npos) << "bob@ was lost after jimbob@:\n" << csv;
}

// ---- item 8: login storms ------------------------------------------------------------------

// One HTTP/1.1 exchange over a fresh connection from `from` (any 127.x address works on
// Linux, so each storm client can be its own address). Returns the status, 0 on failure.
int HttpExchange(uint16_t port, const std::string& from, const std::string& method, const std::string& path,
                 const std::string& token, const std::string& body) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, from.c_str(), &local.sin_addr);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return 0;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  for (size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      return 0;
    }
    off += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (resp.size() < 12 || resp.compare(0, 5, "HTTP/") != 0) return 0;
  return std::atoi(resp.c_str() + 9);
}

TEST_F(HardeningApiTest, LoginStormLeavesMeAnsweringWithinASecond) {
  HttpServerOptions o;
  o.uri = "http://127.0.0.1:0";  // the default worker count and queue, as serve has them
  Result<std::unique_ptr<BeastServer>> s = BeastServer::Start(service_.get(), o);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  server_ = std::move(*s);
  const uint16_t port = server_->port();
  const std::string session = Login("reviewer");
  ASSERT_EQ(HttpExchange(port, "127.0.0.1", "GET", "/api/v1/me", session, ""), 200);

  // 300 clients at once, each from its own address and with names nobody has (each checked
  // against the dummy hash: full scrypt cost), logging in over and over for a few seconds.
  constexpr int kClients = 300;
  constexpr auto kStorm = std::chrono::seconds(4);
  std::atomic<bool> go{false}, storming{true};
  std::atomic<int> attempts{0}, no_answer{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      const std::string from = "127.1." + std::to_string(i / 250) + "." + std::to_string(1 + i % 250);
      const auto end = std::chrono::steady_clock::now() + kStorm;
      for (int k = 0; std::chrono::steady_clock::now() < end; ++k) {
        json body{{"username", "storm-" + std::to_string(i) + "-" + std::to_string(k)}, {"password", "wrong password"}};
        if (HttpExchange(port, from, "POST", "/api/v1/auth/login", "", body.dump()) == 0) ++no_answer;
        ++attempts;
      }
    });
  }
  std::vector<double> latencies;
  go = true;
  const auto storm_end = std::chrono::steady_clock::now() + kStorm;
  while (std::chrono::steady_clock::now() < storm_end || latencies.size() < 50) {
    const auto t0 = std::chrono::steady_clock::now();
    int status = HttpExchange(port, "127.0.0.1", "GET", "/api/v1/me", session, "");
    latencies.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    EXPECT_EQ(status, 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (latencies.size() > 2000) break;
  }
  storming = false;
  for (std::thread& t : clients) t.join();
  std::sort(latencies.begin(), latencies.end());
  const double p50 = latencies[latencies.size() / 2];
  const double p99 = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
  std::printf("login storm: %d login attempts by %d clients (%d unanswered); GET /me n=%zu p50=%.3f s p99=%.3f s max=%.3f s\n",
              attempts.load(), kClients, no_answer.load(), latencies.size(), p50, p99, latencies.back());
  // The issue's target (p99 <= 1 s) is for the product as shipped, a release build; under
  // AddressSanitizer every request and every scrypt runs several times slower, so the bound is
  // wider there. What the bound guards either way: the old design parked a worker per login
  // for up to 5 s, which put p99 near 27 s.
#if defined(__SANITIZE_ADDRESS__)
  constexpr double kMeP99Bound = 3.0;
#else
  constexpr double kMeP99Bound = 1.0;
#endif
  EXPECT_LE(p99, kMeP99Bound) << "GET /api/v1/me p99 under the login storm";
  EXPECT_EQ(no_answer.load(), 0);
  ExpectAuditClean();
}

TEST_F(HardeningApiTest, FailedLoginsAreCountedPerIpv6Slash64) {
  AuthSettings s;
  s.max_backoff_seconds = 0;
  s.max_failures_before_lock = 1000;  // only the per-address limit is under test
  Authenticator auth(records_.get(), s);
  auto status = [&](const std::string& peer) {
    auto r = auth.Login("reviewer", "wrong", peer);
    return std::holds_alternative<LoginResult>(r) ? 200 : std::get<AuthRefusal>(r).status;
  };
  for (int i = 1; i <= s.per_address_failures; ++i) {
    char peer[64];
    std::snprintf(peer, sizeof peer, "2001:db8:0:7::%x", i);  // a new address in the same /64 each time
    ASSERT_EQ(status(peer), 401) << peer;
  }
  EXPECT_EQ(status("2001:db8:0:7:ffff:ffff:ffff:1"), 429) << "one /64 is one client";
  EXPECT_EQ(status("2001:db8:0:8::1"), 401) << "the next /64 is someone else";
  // IPv4 stays per address, also when it arrives IPv4-mapped on a dual-stack listener.
  for (int i = 0; i < s.per_address_failures; ++i) ASSERT_EQ(status("192.0.2.7"), 401);
  EXPECT_EQ(status("::ffff:192.0.2.7"), 429);
  EXPECT_EQ(status("192.0.2.8"), 401);
}

// ---- item 9: check-then-write and expiry races ----------------------------------------------

TEST_F(HardeningApiTest, CreatingTheSameUserAtOnceMakesOneUserAndOneEntry) {
  std::string admin = Login("admin");
  std::vector<int> statuses(4);
  std::vector<std::thread> threads;
  std::atomic<bool> go{false};
  for (size_t i = 0; i < statuses.size(); ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      json body{{"name", "newcomer"}, {"role", "reviewer"}, {"password", "password-number-" + std::to_string(i)}};
      statuses[i] = Call("POST", "/api/v1/users", admin, body.dump()).status;
    });
  }
  go = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 201), 1);
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 409), 3);
  size_t entries = 0;
  for (const AuditEntry& e : AllEntries()) entries += e.event.action == "user.create" && e.event.target == "newcomer" && e.event.status == 201;
  EXPECT_EQ(entries, 1u) << "one user, so one user.create entry";
  ExpectAuditClean();
}

class ExpiringExportsTest : public HardeningApiTest {
 protected:
  ExpiringExportsTest() { export_ttl_ = 0; }  // done exports expire at the next look
};

// For each export: at most one export.expire, and none after a delete that found it done.
void ExpectExpiryConsistent(const std::vector<AuditEntry>& entries, Records* records) {
  std::map<std::string, int> expired;
  std::map<std::string, uint64_t> deleted_done_at;
  for (const AuditEntry& e : entries) {
    if (e.event.action == "export.expire") {
      ++expired[e.event.target];
      EXPECT_FALSE(deleted_done_at.count(e.event.target)) << "export " << e.event.target << " expired after it was deleted";
    }
    if (e.event.action == "export.delete" && e.event.status == 204 && e.event.details.value("state", "") == "done") {
      deleted_done_at[e.event.target] = e.seq;
    }
  }
  for (const auto& [id, n] : expired) EXPECT_EQ(n, 1) << "export " << id << " has " << n << " export.expire entries";
  Result<std::vector<ExportJob>> jobs = records->Jobs();
  ASSERT_TRUE(jobs.ok());
  for (const ExportJob& j : *jobs) {
    if (j.state == "expired") {
      EXPECT_EQ(expired[j.id], 1) << j.id;
    }
    if (deleted_done_at.count(j.id)) {
      EXPECT_EQ(j.state, "deleted") << j.id;
    }
  }
}

TEST_F(ExpiringExportsTest, ConcurrentLooksExpireAnExportOnceAndNeverADeletedOne) {
  std::string t = Login("reviewer");
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    Response r = Call("POST", "/api/v1/exports", t, R"({"query":"report","format":"mbox"})");
    ASSERT_EQ(r.status, 202);
    ids.push_back(Body(r)["id"]);
  }
  // Wait until every job is done (the runner itself does not look at expiry while busy).
  for (const std::string& id : ids) {
    for (int i = 0; i < 400; ++i) {
      std::optional<ExportJob> j = *records_->GetJob(id);
      if (j && j->state != "queued" && j->state != "running") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int k = 0; k < 6; ++k) {
    threads.emplace_back([&, k] {
      while (!go) std::this_thread::yield();
      if (k % 2 == 0) {
        Call("DELETE", "/api/v1/exports/" + ids[static_cast<size_t>(k)], t);
      } else {
        for (int i = 0; i < 5; ++i) Call("GET", "/api/v1/exports", t);
      }
    });
  }
  go = true;
  for (std::thread& th : threads) th.join();
  for (const std::string& id : ids) Call("GET", "/api/v1/exports/" + id, t);
  ExpectExpiryConsistent(AllEntries(), records_.get());
  ExpectAuditClean();
}

// ---- the issue's concurrency test ------------------------------------------------------------

TEST_F(ExpiringExportsTest, ConcurrentAdminAndReviewerWorkLosesNothingAndDuplicatesNothing) {
  const std::string admin = Login("admin"), reviewer = Login("reviewer");
  AddUser("shifty", Role::kReviewer);
  // The scoped reviewer searches with an API token: tokens follow scope changes (sessions end).
  const std::string counsel = Body(Call("POST", "/api/v1/tokens", Login("counsel"), "{}"))["token"];
  ASSERT_FALSE(counsel.empty());

  std::atomic<bool> go{false}, done{false};
  std::mutex mu;
  std::vector<int> create_status;
  std::set<std::string> tokens_kept, tokens_revoked;
  std::vector<std::pair<std::string, std::string>> tags_added;  // (message, tag)
  std::vector<std::string> export_ids;
  int scope_changes = 0, role_changes = 0, searches = 0;
  std::vector<std::string> search_problems;
  std::vector<std::thread> finite, endless;  // endless ones run until `done`
  auto start = [&](std::function<void()> f, bool until_done = false) {
    (until_done ? endless : finite).emplace_back([&go, f] {
      while (!go) std::this_thread::yield();
      f();
    });
  };
  for (int i = 0; i < 3; ++i) {
    start([&, i] {
      json body{{"name", "dup"}, {"role", "auditor"}, {"password", "password-dup-" + std::to_string(i)}};
      int st = Call("POST", "/api/v1/users", admin, body.dump()).status;
      std::lock_guard<std::mutex> l(mu);
      create_status.push_back(st);
    });
  }
  for (int i = 0; i < 2; ++i) {
    start([&] {
      for (int k = 0; k < 8; ++k) {
        Response r = Call("POST", "/api/v1/tokens", reviewer, R"({"label":"churn"})");
        ASSERT_EQ(r.status, 201);
        std::string id = Body(r)["id"];
        bool revoke = k % 2 == 0;
        if (revoke) {
          ASSERT_EQ(Call("DELETE", "/api/v1/tokens/" + id, reviewer).status, 204);
        }
        std::lock_guard<std::mutex> l(mu);
        (revoke ? tokens_revoked : tokens_kept).insert(id);
      }
    });
  }
  for (int i = 0; i < 2; ++i) {
    start([&, i] {
      for (int k = 0; k < 10; ++k) {
        const std::string& m = ids_[static_cast<size_t>(k) % ids_.size()];
        std::string tag = "t" + std::to_string(i) + "-" + std::to_string(k);
        ASSERT_EQ(Call("PUT", "/api/v1/messages/" + m + "/tags/" + tag, reviewer).status, 204);
        std::lock_guard<std::mutex> l(mu);
        tags_added.emplace_back(m, tag);
      }
    });
  }
  start([&] {
    for (int k = 0; k < 6; ++k) {
      Response r = Call("POST", "/api/v1/exports", reviewer, R"({"query":"report","format":"mbox"})");
      ASSERT_EQ(r.status, 202);
      std::string id = Body(r)["id"];
      {
        std::lock_guard<std::mutex> l(mu);
        export_ids.push_back(id);
      }
      if (k % 3 == 0) Call("DELETE", "/api/v1/exports/" + id, reviewer);  // queued or running: cancelled
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      if (k % 3 == 1) Call("DELETE", "/api/v1/exports/" + id, reviewer);  // maybe done by now: deleted
    }
  });
  for (int i = 0; i < 3; ++i) {
    start([&] {
      while (!done) {
        Call("GET", "/api/v1/exports", reviewer);  // looks expire done exports
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }, true);
  }
  start([&] {
    for (int k = 0; k < 10; ++k) {
      json scope{{"scope", {{"custodians", {k % 2 ? kAlice : kBob}}}}};
      int st = Call("PUT", "/api/v1/users/counsel", admin, scope.dump()).status;
      ASSERT_EQ(st, 200);
      int rs = Call("PUT", "/api/v1/users/shifty", admin, json{{"role", k % 2 ? "reviewer" : "operator"}}.dump()).status;
      ASSERT_EQ(rs, 200);
      std::lock_guard<std::mutex> l(mu);
      ++scope_changes;
      ++role_changes;
    }
  });
  const std::set<std::string> alice_sees{ids_[0], ids_[1], ids_[2], memo_};
  const std::set<std::string> bob_sees{ids_[3], ids_[4], ids_[5], memo_, twins_};
  start([&] {
    while (!done) {
      Response r = Call("POST", "/api/v1/search", counsel, R"({"query":"*","limit":1000})");
      std::set<std::string> hits;
      for (const json& h : Body(r).value("hits", json::array())) hits.insert(h["id"].get<std::string>());
      std::lock_guard<std::mutex> l(mu);
      ++searches;
      // Alice's messages or bob's, never a mix: the scope in force is one or the other.
      if (r.status != 200) search_problems.push_back(std::to_string(r.status) + " " + r.body);
      else if (hits != alice_sees && hits != bob_sees) search_problems.push_back("hits outside one scope: " + r.body);
    }
  }, true);
  go = true;
  for (std::thread& t : finite) t.join();
  // Let the exports finish (and expire: the ttl is 0), then stop the lookers and the searcher.
  for (int i = 0; i < 400; ++i) {
    bool busy = false;
    Result<std::vector<ExportJob>> jobs = records_->Jobs();
    ASSERT_TRUE(jobs.ok());
    for (const ExportJob& j : jobs.value()) busy = busy || j.state == "queued" || j.state == "running";
    if (!busy) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  done = true;
  for (std::thread& t : endless) t.join();

  EXPECT_TRUE(search_problems.empty()) << search_problems.size() << " bad searches, first: " << search_problems.front();
  EXPECT_GT(searches, 0);
  // One user, however many asked at once.
  EXPECT_EQ(std::count(create_status.begin(), create_status.end(), 201), 1);
  EXPECT_EQ(std::count(create_status.begin(), create_status.end(), 409), 2);
  // Tokens: the kept ones are there, the revoked ones are not.
  std::set<std::string> stored;
  Result<std::vector<Token>> tokens = records_->Tokens();
  ASSERT_TRUE(tokens.ok());
  for (const Token& t : tokens.value()) {
    if (t.user == "reviewer") stored.insert(t.id);
  }
  EXPECT_EQ(stored, tokens_kept);
  // Tags: every one acknowledged is on its message.
  for (const auto& [m, tag] : tags_added) {
    std::vector<std::string> on = *records_->TagsOf(m);
    EXPECT_NE(std::find(on.begin(), on.end(), tag), on.end()) << tag << " lost from " << m;
  }
  // The last scope change is what the user has.
  EXPECT_EQ((*records_->GetUser("counsel"))->scope.custodians, std::vector<std::string>{kAlice});

  // The trail: clean, one entry per change made, none twice.
  std::vector<AuditEntry> entries = AllEntries();
  std::map<std::string, int> count;
  std::set<std::pair<std::string, std::string>> request_actions;
  for (const AuditEntry& e : entries) {
    const std::string& a = e.event.action;
    if (a == "user.create" && e.event.target == "dup" && e.event.status == 201) ++count["user.create dup"];
    if (a == "user.update" && e.event.target == "counsel") ++count["user.update counsel"];
    if (a == "user.update" && e.event.target == "shifty") ++count["user.update shifty"];
    if (a == "token.create" && e.event.user == "reviewer" && e.event.status == 201) ++count["token.create"];
    if (a == "token.revoke" && e.event.user == "reviewer") ++count["token.revoke"];
    if (a == "tag.add") ++count["tag.add"];
    if (a == "export.create") ++count["export.create"];
    std::string rid = e.event.details.value("request_id", "");
    if (!rid.empty()) {
      EXPECT_TRUE(request_actions.emplace(rid, a).second) << "two " << a << " entries for request " << rid;
    }
  }
  EXPECT_EQ(count["user.create dup"], 1);
  EXPECT_EQ(count["user.update counsel"], scope_changes);
  EXPECT_EQ(count["user.update shifty"], role_changes);
  EXPECT_EQ(count["token.create"], static_cast<int>(tokens_kept.size() + tokens_revoked.size()));
  EXPECT_EQ(count["token.revoke"], static_cast<int>(tokens_revoked.size()));
  EXPECT_EQ(count["tag.add"], static_cast<int>(tags_added.size()));
  EXPECT_EQ(count["export.create"], static_cast<int>(export_ids.size()));
  ExpectExpiryConsistent(entries, records_.get());
  ExpectAuditClean();
}

// Item 3, the state store: an older sealed value put back still authenticates. Here the
// attacker (who can write the files, not the key) keeps copies of the audit head and of a
// revoked user's record, lets the log and the store move on, then puts the old values back and
// deletes the entries written since, straight through RocksDB. The chain alone is consistent
// again; the store's digest is not.
TEST(StateRollback, OlderValuesPutBackAreFoundByAuditVerify) {
  TempDir tmp;
  const SecretKey state_key(std::string(32, 's')), audit_key(std::string(32, 'a'));
  std::string old_head, old_user;
  {
    auto store = StateStore::Open(tmp.path(), state_key);
    ASSERT_TRUE(store.ok()) << store.error().ToString();
    auto log = AuditLog::Open(store->get(), audit_key);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*store)->Write({{"u/mallory", std::string("{\"role\":\"admin\"}")}}).ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Record(AuditEvent{"ada", "admin", "cli", "cli", "search", "", 0, json::object()}).ok());
    old_head = **(*store)->GetRaw(AuditLog::kHeadKey);
    old_user = **(*store)->GetRaw("u/mallory");
    ASSERT_TRUE((*store)->Write({{"u/mallory", std::string("{\"role\":\"disabled\"}")}}).ok());
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Record(AuditEvent{"ada", "admin", "cli", "cli", "user.disable", "mallory", 0, json::object()}).ok());
    AuditVerifyReport clean = *AuditLog::Verify(**store, audit_key);
    ASSERT_TRUE(clean.ok()) << clean.problems[0].detail;
    EXPECT_GE(clean.state_values, 12u);
  }
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), tmp.path() + "/state", &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), AuditLog::kHeadKey, old_head).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "u/mallory", old_user).ok());
    for (uint64_t seq = 6; seq <= 10; ++seq) ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), AuditLog::KeyOf(seq)).ok());
  }
  auto store = StateStore::Open(tmp.path(), state_key);
  ASSERT_TRUE(store.ok()) << store.error().ToString();
  EXPECT_EQ(**(*store)->Get("u/mallory"), "{\"role\":\"admin\"}") << "the test should have rolled the record back";
  AuditVerifyReport r = *AuditLog::Verify(**store, audit_key);
  ASSERT_FALSE(r.ok()) << "a rolled-back state store verified clean";
  bool rolled_back = false;
  for (const AuditProblem& p : r.problems) rolled_back |= p.kind == "rolled back";
  EXPECT_TRUE(rolled_back);
}

// Writes through the store (including the audit log's raw ones) keep the digest, across
// reopening, with keys written twice in one batch and deleted.
TEST(StateRollback, TheDigestFollowsEveryWrite) {
  TempDir tmp;
  const SecretKey key(std::string(32, 's'));
  for (int round = 0; round < 3; ++round) {
    auto store = StateStore::Open(tmp.path(), key);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Write({{"t/a", std::string("1")}, {"t/a", std::string("2")}, {"t/b", std::string("x")}}).ok());
    ASSERT_TRUE((*store)->Write({{"t/b", std::nullopt}, {"t/c" + std::to_string(round), std::string("y")}}).ok());
    ASSERT_TRUE((*store)->Write({{"t/d", std::string("z")}}, /*durable=*/false).ok());
    Result<StateStore::DigestReport> d = (*store)->VerifyDigest();
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->problem, "");
    EXPECT_EQ(d->values, 3u + round);  // t/a, t/d, t/c0..t/c<round>
  }
}

}  // namespace
}  // namespace mailvault::api
