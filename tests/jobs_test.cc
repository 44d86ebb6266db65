// The control plane's job store (control/jobs.h), the configured restore targets
// (jobs/targets.h), the control socket's request format at its limits (cli/control_protocol.h)
// and the vault layout table (vault/layout.h) against a real vault directory.
#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "cli/control_protocol.h"
#include "control/jobs.h"
#include "control/keys.h"
#include "control/state.h"
#include "core/message.h"
#include "indexer/index.h"
#include "jobs/targets.h"
#include "test_util.h"
#include "vault/layout.h"
#include "vault/purposes.h"
#include "vault/vault.h"

namespace mailvault {
namespace {

using control::Actor;
using control::JobKind;
using control::JobRecord;
using control::JobState;
using control::JobStore;
using nlohmann::json;
using testing::TempDir;

SecretKey Key(char c) { return SecretKey(std::string(kKeySize, c)); }

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<control::StateStore>> s = control::StateStore::Open(tmp_.path(), Key('s'));
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    store_ = std::move(*s);
    jobs_ = std::make_unique<JobStore>(store_.get());
  }
  JobRecord NewJob() {
    Actor who{"ada", "admin", "session", "127.0.0.1"};
    Result<JobRecord> r = jobs_->Create(JobKind::kRestore, who, json{{"target", "primary"}});
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : JobRecord{};
  }
  void MarkRunning(const std::string& id) {
    ASSERT_TRUE(jobs_->Update(id, [](JobRecord& r) {
                  r.state = JobState::kRunning;
                  return Status::Ok();
                }).ok());
  }
  JobState StateOf(const std::string& id) { return (**jobs_->Get(id)).state; }

  TempDir tmp_;
  std::unique_ptr<control::StateStore> store_;
  std::unique_ptr<JobStore> jobs_;
};

TEST_F(JobStoreTest, NamesAndIds) {
  for (JobKind k : {JobKind::kRestore, JobKind::kExport, JobKind::kVerify, JobKind::kImport, JobKind::kReindex, JobKind::kPurge}) {
    EXPECT_EQ(control::ParseJobKind(control::JobKindName(k)), k);
    const std::string id = control::NewJobId(k);
    EXPECT_TRUE(control::ValidJobId(id)) << id;
  }
  for (int s = 0; s < 6; ++s) {
    EXPECT_EQ(control::ParseJobState(control::JobStateName(static_cast<JobState>(s))), static_cast<JobState>(s));
  }
  EXPECT_FALSE(control::ParseJobKind("shred"));
  EXPECT_EQ(control::NewJobId(JobKind::kPurge)[0], 'p');
  EXPECT_FALSE(control::ValidJobId(""));
  EXPECT_FALSE(control::ValidJobId("r20261207-114501-3fa9c"));     // short
  EXPECT_FALSE(control::ValidJobId("q20261207-114501-3fa9c2"));    // no such kind
  EXPECT_FALSE(control::ValidJobId("r20261207-114501-3FA9C2"));    // upper case
  EXPECT_FALSE(control::ValidJobId("r2026120/-114501-3fa9c2"));    // a path
  EXPECT_TRUE(control::ValidJobId("r20261207-114501-3fa9c2"));
  // An id that is not valid is never looked up (ids reach keys, file names and URLs).
  EXPECT_FALSE(*jobs_->Get("../../etc"));
}

TEST_F(JobStoreTest, RecordRoundTripsAndStartsQueued) {
  JobRecord j = NewJob();
  EXPECT_EQ(j.state, JobState::kQueued);
  EXPECT_EQ(j.id[0], 'r');
  Result<std::optional<JobRecord>> back = jobs_->Get(j.id);
  ASSERT_TRUE(back.ok() && *back);
  EXPECT_EQ((*back)->ToJson(), j.ToJson());
  EXPECT_EQ((*back)->started_by.user, "ada");
  // The public view has the fields the API documents.
  json p = (*back)->PublicJson();
  for (const char* f : {"id", "kind", "state", "created", "started", "finished", "progress", "report"}) {
    EXPECT_TRUE(p.contains(f)) << f;
  }
  EXPECT_EQ(p["started"], nullptr);
}

TEST_F(JobStoreTest, QueuedJobPausesResumesAndCancelsAtOnce) {
  JobRecord j = NewJob();
  ASSERT_TRUE(jobs_->RequestPause(j.id).ok());
  EXPECT_EQ(StateOf(j.id), JobState::kPaused);
  EXPECT_EQ(jobs_->RequestPause(j.id).error().code(), ErrorCode::kConflict);  // paused already
  ASSERT_TRUE(jobs_->RequestResume(j.id).ok());
  EXPECT_EQ(StateOf(j.id), JobState::kQueued);
  EXPECT_EQ(jobs_->RequestResume(j.id).error().code(), ErrorCode::kConflict);  // queued is not paused
  ASSERT_TRUE(jobs_->RequestCancel(j.id).ok());
  EXPECT_EQ(StateOf(j.id), JobState::kCancelled);
  EXPECT_NE((**jobs_->Get(j.id)).finished, 0);
  // Nothing more happens to a cancelled job.
  EXPECT_EQ(jobs_->RequestCancel(j.id).error().code(), ErrorCode::kConflict);
  EXPECT_EQ(jobs_->RequestResume(j.id).error().code(), ErrorCode::kConflict);
  EXPECT_EQ(jobs_->RequestPause(j.id).error().code(), ErrorCode::kConflict);
  EXPECT_EQ(jobs_->RequestCancel("r20261207-114501-3fa9c2").error().code(), ErrorCode::kNotFound);
}

TEST_F(JobStoreTest, RunningJobRecordsTheRequestForTheRunner) {
  JobRecord j = NewJob();
  MarkRunning(j.id);
  EXPECT_EQ(*jobs_->Requested(j.id), JobState::kRunning);
  ASSERT_TRUE(jobs_->RequestPause(j.id).ok());
  EXPECT_EQ(StateOf(j.id), JobState::kRunning);  // it stops at its next batch
  EXPECT_EQ(*jobs_->Requested(j.id), JobState::kPaused);
  ASSERT_TRUE(jobs_->RequestResume(j.id).ok());  // asked back before it stopped
  EXPECT_EQ(*jobs_->Requested(j.id), JobState::kRunning);
  ASSERT_TRUE(jobs_->RequestCancel(j.id).ok());
  EXPECT_EQ(*jobs_->Requested(j.id), JobState::kCancelled);
  EXPECT_EQ(jobs_->RequestPause(j.id).error().code(), ErrorCode::kConflict);  // being cancelled
}

TEST_F(JobStoreTest, FailedRestoreResumesOtherKindsDoNot) {
  JobRecord j = NewJob();
  ASSERT_TRUE(jobs_->Update(j.id, [](JobRecord& r) {
                r.state = JobState::kFailed;
                r.error = "the server was down";
                return Status::Ok();
              }).ok());
  ASSERT_TRUE(jobs_->RequestResume(j.id).ok());
  EXPECT_EQ(StateOf(j.id), JobState::kQueued);
  EXPECT_EQ((**jobs_->Get(j.id)).error, "");
  Result<JobRecord> v = jobs_->Create(JobKind::kVerify, Actor{}, json::object());
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(jobs_->Update(v->id, [](JobRecord& r) {
                r.state = JobState::kFailed;
                return Status::Ok();
              }).ok());
  EXPECT_EQ(jobs_->RequestResume(v->id).error().code(), ErrorCode::kConflict);
}

TEST_F(JobStoreTest, ConcurrentCancelsAreOrdered) {
  // Eight clients cancel one queued job at once: exactly one succeeds, the others are told it
  // is cancelled already; none is lost or half-applied.
  for (int round = 0; round < 20; ++round) {
    JobRecord j = NewJob();
    std::atomic<int> ok{0}, conflict{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        Result<JobRecord> r = t % 2 ? jobs_->RequestCancel(j.id) : jobs_->RequestPause(j.id);
        if (r.ok()) ++ok;
        else if (r.error().code() == ErrorCode::kConflict) ++conflict;
        else ++other;
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(other.load(), 0);
    EXPECT_EQ(ok + conflict, 8);
    const JobState s = StateOf(j.id);
    // Pauses may come first (each after the first is a conflict); the first cancel wins after.
    EXPECT_TRUE(s == JobState::kCancelled || s == JobState::kPaused) << control::JobStateName(s);
    if (s == JobState::kPaused) {
      EXPECT_EQ(ok.load(), 1);
    }
  }
}

TEST_F(JobStoreTest, ListFiltersNewestFirstAndSurvivesReopen) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(NewJob().id);
  ASSERT_TRUE(jobs_->RequestCancel(ids[2]).ok());
  Result<std::vector<JobRecord>> all = jobs_->List();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 5u);
  for (size_t i = 1; i < all->size(); ++i) EXPECT_GE((*all)[i - 1].id.substr(1), (*all)[i].id.substr(1));
  EXPECT_EQ(jobs_->List(std::nullopt, JobState::kCancelled)->size(), 1u);
  EXPECT_EQ(jobs_->List(JobKind::kVerify)->size(), 0u);
  // Synced: a new store on the same directory (after the process is gone) has them all.
  jobs_.reset();
  store_.reset();
  Result<std::unique_ptr<control::StateStore>> s = control::StateStore::Open(tmp_.path(), Key('s'));
  ASSERT_TRUE(s.ok());
  JobStore again(s->get());
  EXPECT_EQ(again.List()->size(), 5u);
  EXPECT_EQ((**again.Get(ids[2])).state, JobState::kCancelled);
}

TEST_F(JobStoreTest, WaitForChangeWakesOnUpdate) {
  JobRecord j = NewJob();
  const uint64_t seen = jobs_->changes();
  std::thread t([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    (void)jobs_->RequestPause(j.id);
  });
  const uint64_t now = jobs_->WaitForChange(seen, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  t.join();
  EXPECT_GT(now, seen);
  EXPECT_EQ(StateOf(j.id), JobState::kPaused);
}

TEST_F(JobStoreTest, AdoptTakesAnExistingIdOnce) {
  const std::string id = control::NewJobId(JobKind::kRestore);
  ASSERT_TRUE(jobs_->Adopt(id, JobKind::kRestore, Actor{}, json::object()).ok());
  EXPECT_EQ(jobs_->Adopt(id, JobKind::kRestore, Actor{}, json::object()).error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(jobs_->Adopt("not-an-id", JobKind::kRestore, Actor{}, json::object()).error().code(), ErrorCode::kInvalidArgument);
}

// ---- restore targets ----

TEST(RestoreTargets, ParsesSectionsAndRefusesMistakesByLine) {
  TempDir t;
  testing::WriteFile(t / "ok.conf",
                     "vault = /srv/v\n[capture]\nsmtp-listen = 127.0.0.1:2525\n"
                     "[restore-target primary]\nurl = imaps://mail.corp.example\nauth-file = /etc/mailvault/restore.auth\n"
                     "ca-file = /etc/ca.pem\ntimeout = 30\n"
                     "[restore-target lab]\nurl = imap://127.0.0.1:1143\nauth-file = lab.auth\nno-tls = yes\ninsecure = yes\n");
  Result<std::map<std::string, jobs::RestoreTargetConfig>> r = jobs::LoadRestoreTargets(t / "ok.conf");
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  ASSERT_EQ(r->size(), 2u);
  const jobs::RestoreTargetConfig& p = r->at("primary");
  EXPECT_EQ(p.url, "imaps://mail.corp.example");
  EXPECT_EQ(p.ca_file, "/etc/ca.pem");
  EXPECT_EQ(p.timeout_seconds, 30);
  EXPECT_FALSE(p.no_tls);
  EXPECT_TRUE(r->at("lab").no_tls);
  EXPECT_EQ(r->at("lab").auth_file.front(), '/');  // made absolute
  EXPECT_FALSE(p.PublicJson().contains("auth_file"));  // the API does not say where credentials are
  struct Bad {
    const char* text;
    const char* says;
  };
  for (const Bad& b : {Bad{"[restore-target x]\nurl = imap://127.0.0.1:1\n", "needs url and auth-file"},
                       Bad{"[restore-target x]\nurl = imap://10.0.0.1:143\nauth-file = a\nno-tls = yes\n", "loopback"},
                       Bad{"[restore-target x]\nurl = imap://h\nauth-file = a\npassword = hunter2\n", ":4: unknown key \"password\""},
                       Bad{"[restore-target x]\nurl = imap://h\nauth-file = a\n[restore-target x]\n", "defined twice"},
                       Bad{"[restore-target a/b]\n", "1-64 of a-z"},
                       Bad{"[restore-target x]\nurl = imap://h\nauth-file = a\ntimeout = 1\n", "5 to 3600"},
                       Bad{"[restore-target x]\nurl = imap://h\nauth-file = a\ninsecure = maybe\n", "yes or no"}}) {
    testing::WriteFile(t / "bad.conf", b.text);
    Result<std::map<std::string, jobs::RestoreTargetConfig>> e = jobs::LoadRestoreTargets(t / "bad.conf");
    ASSERT_FALSE(e.ok()) << b.text;
    EXPECT_NE(e.error().message().find(b.says), std::string::npos) << e.error().message();
  }
}

// ---- the control socket's request ----

TEST(ControlProtocol, RoundTripAndLimits) {
  cli::ControlRequest r;
  r.argv = {"list", "--json"};
  r.cwd = "/root";
  r.sudo_user = "ada";
  r.stderr_tty = true;
  r.stdin_data = "password123\n";
  const std::string wire = cli::EncodeControlRequest(r);
  Result<uint32_t> n = cli::ParseControlHeader(std::string_view(wire).substr(0, 8));
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, wire.size() - 8);
  Result<cli::ControlRequest> back = cli::ParseControlRequest(std::string_view(wire).substr(8));
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(back->argv, r.argv);
  EXPECT_EQ(back->cwd, r.cwd);
  EXPECT_EQ(back->stdin_data, r.stdin_data);
  EXPECT_TRUE(back->stderr_tty);

  // The header: magic, and a length at the limit passes, one past it does not.
  auto header = [](uint32_t len, const char* magic = "MVC1") {
    std::string h(magic, 4);
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((len >> s) & 0xff));
    return h;
  };
  EXPECT_TRUE(cli::ParseControlHeader(header(cli::kMaxControlRequestBytes)).ok());
  EXPECT_EQ(cli::ParseControlHeader(header(cli::kMaxControlRequestBytes + 1)).error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(cli::ParseControlHeader(header(10 << 20)).error().code(), ErrorCode::kLimitExceeded);
  EXPECT_EQ(cli::ParseControlHeader(header(5, "GET ")).error().code(), ErrorCode::kMalformedInput);

  // Fields: argv at its count limit passes, one more does not; stdin likewise; types checked.
  json many{{"argv", std::vector<std::string>(cli::kMaxControlArgs, "x")}};
  EXPECT_TRUE(cli::ParseControlRequest(many.dump()).ok());
  many["argv"].push_back("x");
  EXPECT_FALSE(cli::ParseControlRequest(many.dump()).ok());
  json in{{"argv", {"user"}}, {"stdin", std::string(cli::kMaxControlStdinBytes, 'p')}};
  EXPECT_TRUE(cli::ParseControlRequest(in.dump()).ok());
  in["stdin"] = std::string(cli::kMaxControlStdinBytes + 1, 'p');
  EXPECT_FALSE(cli::ParseControlRequest(in.dump()).ok());
  for (const char* bad : {"", "[]", "{}", "{\"argv\":[]}", "{\"argv\":[1]}", "{\"argv\":\"list\"}",
                          "{\"argv\":[\"list\"],\"cwd\":\"relative\"}", "{\"argv\":[\"list\"],\"stderr_tty\":1}",
                          "{\"argv\":[\"list\"]", "\xff\xfe"}) {
    EXPECT_FALSE(cli::ParseControlRequest(bad).ok()) << bad;
  }
}

// ---- the vault layout table ----

TEST(VaultLayout, EveryEntryOfARealVaultIsInTheTable) {
  InitMessageParsing();
  TempDir t;
  KeySource keys;
  keys.key_file = t / "master.key";
  VaultOptions options;
  bool created = false;
  ASSERT_TRUE(Vault::Init(t / "vault", keys, options, &created).ok());
  {
    Result<std::unique_ptr<Vault>> v = Vault::Open(t / "vault", keys, options);
    ASSERT_TRUE(v.ok());
    Envelope e;
    e.capture_time_us = 1700000000000000;
    e.source = "test";
    ASSERT_TRUE((*v)->Ingest(testing::SimpleMessage("layout", "body"), e).ok());
    Result<std::unique_ptr<control::StateStore>> s = control::StateStore::Open(t / "vault", (*v)->DeriveSubkey(purpose::kState));
    ASSERT_TRUE(s.ok());
    JobStore jobs(s->get());
    ASSERT_TRUE(jobs.Create(JobKind::kVerify, Actor{}, json::object()).ok());
    Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(t / "vault");
    ASSERT_TRUE(w.ok());
    std::atomic<bool> stop{true};
    ASSERT_TRUE((*w)->CatchUp(**v, &stop).ok());
  }
  std::set<std::string> seen;
  DIR* d = ::opendir((t / "vault").c_str());
  ASSERT_NE(d, nullptr);
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    seen.insert(name);
    const layout::Entry* entry = layout::Find(name.c_str());
    EXPECT_NE(entry, nullptr) << "the vault holds \"" << name << "\", which vault/layout.h does not name";
  }
  ::closedir(d);
  // Everything replication must ship is there.
  for (const char* truth : {"VAULT", "packs", "state"}) EXPECT_TRUE(seen.count(truth)) << truth;
  for (const layout::Entry& e : layout::kEntries) EXPECT_EQ(layout::Find(e.name), &e);
  EXPECT_EQ(layout::Find("packs")->kind, layout::Kind::kTruth);
  EXPECT_EQ(layout::Find("catalog")->kind, layout::Kind::kDerived);
  EXPECT_EQ(layout::Find("index")->kind, layout::Kind::kDerived);
  EXPECT_EQ(layout::Find("packsx"), nullptr);
}

}  // namespace
}  // namespace mailvault
