// Purging at the vault level (vault/vault_purge.cc, docs/purge.md): forgetting, shredding packs,
// rebuild agreeing with the live catalog, crashes at every step, and retrained dictionaries.
// The oracle is the raw bytes each test stored and the pack files read with nothing but pack.h.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <future>
#include <map>
#include <random>
#include <set>

#include "control/audit.h"
#include "control/records.h"
#include "control/state.h"
#include "core/message.h"
#include "jobs/indexer.h"
#include "jobs/purge.h"
#include "policy/evaluate.h"
#include "policy/purge.h"
#include "policy/store.h"
#include "tests/test_util.h"
#include "vault/pack.h"
#include "vault/purposes.h"
#include "vault/vault.h"

namespace mailvault {
namespace {

using testing::ReadFile;
using testing::SimpleMessage;
using testing::TempDir;

Envelope Env(const std::string& source, int64_t t = 1700000000000000) {
  Envelope e;
  e.capture_time_us = t;
  e.source = source;
  e.recipients = {"someone@example.com"};
  return e;
}

std::string Msg(int i) {
  return SimpleMessage("purge test " + std::to_string(i),
                       "Dear customer, your order " + std::to_string(i * 7919) + " has shipped. uniqueword" +
                           std::to_string(i) + "x\n",
                       "<p" + std::to_string(i) + "@x>");
}

// What the pack files hold, read with pack.h alone: ids of message and envelope records,
// and every wrapped data key.
struct PackContents {
  std::multiset<ObjectId> messages, envelopes, tombstones;
  std::set<std::string> wrapped_keys;
  size_t bytes = 0;
};
PackContents ReadPacks(const std::string& vault_dir) {
  PackContents c;
  for (const auto& e : std::filesystem::directory_iterator(vault_dir + "/packs")) {
    std::string bytes = ReadFile(e.path());
    c.bytes += bytes.size();
    RecordScanner scanner(bytes, kPackHeaderSize);
    RawRecord rec;
    while (scanner.Next(&rec)) {
      if (rec.type == RecordType::kMessage) {
        MessageRecord mr = *DecodeMessageBody(rec.body);
        c.messages.insert(mr.id);
        c.wrapped_keys.insert(mr.wrapped_key);
      } else if (rec.type == RecordType::kEnvelope) {
        c.envelopes.insert(DecodeEnvelopeBody(rec.body)->id);
      } else if (rec.type == RecordType::kTombstone) {
        c.tombstones.insert(DecodeTombstoneBody(rec.body)->id);
      }
    }
    EXPECT_TRUE(scanner.at_end()) << e.path() << ": " << scanner.error();
  }
  return c;
}

// A rebuilt change log numbers as the live one did, except that a tombstone stands before the
// survivors of its compression block: a survivor's change may move later (it is indexed again),
// never earlier (it would be skipped). Deletes from PURGE records keep their numbers.
void ExpectRebuiltNumbering(const std::vector<std::pair<uint64_t, std::string>>& live,
                            const std::vector<std::pair<uint64_t, std::string>>& rebuilt) {
  ASSERT_EQ(rebuilt.size(), live.size());
  ASSERT_FALSE(live.empty());
  EXPECT_EQ(rebuilt.back().first, live.back().first);
  std::map<std::string, uint64_t> live_add, rebuilt_add;
  std::set<std::pair<uint64_t, std::string>> rebuilt_set(rebuilt.begin(), rebuilt.end());
  for (const auto& [n, what] : live) {
    if (what.back() == '+') live_add[what.substr(0, 64)] = n;
  }
  for (const auto& [n, what] : rebuilt) {
    if (what.back() == '+') rebuilt_add[what.substr(0, 64)] = n;
  }
  for (const auto& [n, what] : live) {
    if (what.back() == '-') {
      EXPECT_TRUE(rebuilt_set.count({n, what})) << "the delete " << n << " moved";
    }
  }
  for (const auto& [id, n] : rebuilt_add) {
    ASSERT_TRUE(live_add.count(id)) << id << " was stored only by the rebuild";
    EXPECT_GE(n, live_add[id]) << id << "'s change moved earlier";
  }
}

class PurgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitMessageParsing();
    keys_.key_file = tmp_ / "master.key";
    options_.auto_train_messages = 0;
    options_.seal_bytes = 16 << 10;  // many small packs
    bool created = false;
    ASSERT_TRUE(Vault::Init(dir(), keys_, options_, &created).ok());
  }
  std::string dir() const { return tmp_ / "vault"; }
  std::unique_ptr<Vault> OpenVault() {
    OpenReport report;
    Result<std::unique_ptr<Vault>> v = Vault::Open(dir(), keys_, options_, &report);
    EXPECT_TRUE(v.ok()) << v.error().ToString();
    warnings_ = report.warnings;
    return v.ok() ? std::move(*v) : nullptr;
  }
  // Stores n messages with many in flight, so compression blocks have several members.
  void Store(Vault& v, int from, int n) {
    std::vector<std::future<Result<IngestResult>>> fs;
    for (int i = from; i < from + n; ++i) {
      raw_[ObjectId::Of(Msg(i))] = Msg(i);
      fs.push_back(v.IngestAsync(Msg(i), Env("import:/m/" + std::to_string(i))));
    }
    for (auto& f : fs) ASSERT_TRUE(f.get().ok());
  }
  std::vector<PurgeItem> Items(const std::vector<int>& which) {
    std::vector<PurgeItem> out;
    for (int i : which) out.push_back(PurgeItem{ObjectId::Of(Msg(i)), 1});
    return out;
  }
  void ExpectSurvivorsIntact(Vault& v, const std::set<ObjectId>& purged) {
    for (const auto& [id, raw] : raw_) {
      Result<std::string> back = v.ReadMessage(id);
      if (purged.count(id)) {
        EXPECT_EQ(back.error().code(), ErrorCode::kNotFound) << id.Hex();
      } else {
        ASSERT_TRUE(back.ok()) << id.Hex() << ": " << back.error().ToString();
        EXPECT_EQ(*back, raw);
      }
    }
    Result<VerifyReport> vr = v.Verify();
    ASSERT_TRUE(vr.ok());
    EXPECT_TRUE(vr->ok()) << (vr->problems.empty() ? "" : vr->problems.front());
  }
  void ExpectShredded(const std::set<ObjectId>& purged, const std::set<std::string>& their_keys) {
    PackContents c = ReadPacks(dir());
    for (const ObjectId& id : purged) {
      EXPECT_EQ(c.messages.count(id), 0u) << "a message record of purged " << id.Hex() << " is still in a pack";
      EXPECT_EQ(c.envelopes.count(id), 0u) << "an envelope record of purged " << id.Hex() << " is still in a pack";
    }
    for (const std::string& k : their_keys) EXPECT_EQ(c.wrapped_keys.count(k), 0u) << "a purged data key survived";
    for (const auto& e : std::filesystem::directory_iterator(dir() + "/packs")) {
      EXPECT_EQ(e.path().extension(), ".pack") << "left behind: " << e.path();
    }
  }
  std::set<std::string> KeysOf(const std::set<ObjectId>& ids) {
    std::set<std::string> out;
    PackContents c = ReadPacks(dir());
    // Map ids to keys by reading records again (a multiset loses the pairing).
    for (const auto& e : std::filesystem::directory_iterator(dir() + "/packs")) {
      std::string bytes = ReadFile(e.path());
      RecordScanner scanner(bytes, kPackHeaderSize);
      RawRecord rec;
      while (scanner.Next(&rec)) {
        if (rec.type != RecordType::kMessage) continue;
        MessageRecord mr = *DecodeMessageBody(rec.body);
        if (ids.count(mr.id)) out.insert(mr.wrapped_key);
      }
    }
    return out;
  }
  std::vector<std::pair<uint64_t, std::string>> ChangeLog(Vault& v) {
    std::vector<std::pair<uint64_t, std::string>> out;
    Result<std::vector<Change>> log = v.ChangesAfter(0, 1 << 20);
    EXPECT_TRUE(log.ok());
    if (!log.ok()) return out;
    for (const Change& c : *log) out.emplace_back(c.number, c.id.Hex() + (c.deleted ? "-" : "+"));
    return out;
  }

  TempDir tmp_;
  KeySource keys_;
  VaultOptions options_;
  std::map<ObjectId, std::string> raw_;
  std::vector<std::string> warnings_;
};

TEST_F(PurgeTest, PurgedMessagesAreGoneFromCatalogAndPacksAndSurvivorsReadBack) {
  auto v = OpenVault();
  Store(*v, 0, 120);
  ASSERT_TRUE(v->Ingest(Msg(6), Env("smtp:second")).ok());  // an envelope record too
  std::set<ObjectId> purged;
  std::vector<int> which;
  for (int i = 0; i < 120; i += 3) which.push_back(i);
  std::vector<PurgeItem> items = Items(which);
  for (auto& it : items) {
    if (it.id == ObjectId::Of(Msg(6))) it.envelopes = 2;
    purged.insert(it.id);
  }
  std::set<std::string> keys = KeysOf(purged);
  ASSERT_EQ(keys.size(), purged.size());
  const uint64_t bytes_before = ReadPacks(dir()).bytes;
  VaultStats before = *v->Stats();

  Result<PurgeOutcome> out = v->Purge(items);
  ASSERT_TRUE(out.ok()) << out.error().ToString();
  EXPECT_EQ(out->purged.size(), purged.size());
  EXPECT_TRUE(out->skipped.empty());
  // Forgotten at once, before any pack is rewritten.
  EXPECT_EQ(v->ReadMessage(ObjectId::Of(Msg(0))).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(v->Stats()->messages, before.messages - purged.size());
  EXPECT_GT(*v->ShredPending(), 0u);

  Result<ShredReport> sr = v->Shred();
  ASSERT_TRUE(sr.ok()) << sr.error().ToString();
  EXPECT_EQ(sr->messages_removed, purged.size());
  EXPECT_EQ(sr->envelopes_removed, 1u);
  EXPECT_GT(sr->blocks_reencoded, 0u);
  EXPECT_EQ(sr->packs_left, 0u);
  EXPECT_TRUE(sr->problems.empty()) << sr->problems.front();
  EXPECT_EQ(*v->ShredPending(), 0u);
  ExpectSurvivorsIntact(*v, purged);
  ExpectShredded(purged, keys);
  EXPECT_LT(ReadPacks(dir()).bytes, bytes_before);

  // The change log says so: one deleted change per purged message, after its stored change.
  std::map<std::string, int> deletes;
  for (const auto& [n, what] : ChangeLog(*v)) deletes[what.substr(0, 64)] += what.back() == '-';
  for (const ObjectId& id : purged) EXPECT_EQ(deletes[id.Hex()], 1) << id.Hex();
}

TEST_F(PurgeTest, RebuildAgreesWithTheLiveCatalogAndResurrectsNothing) {
  std::vector<std::pair<uint64_t, std::string>> live;
  std::set<ObjectId> purged;
  VaultStats live_stats;
  {
    auto v = OpenVault();
    Store(*v, 0, 80);
    std::vector<int> which{1, 2, 3, 10, 40, 41, 79};
    for (int i : which) purged.insert(ObjectId::Of(Msg(i)));
    ASSERT_TRUE(v->Purge(Items(which)).ok());
    Store(*v, 80, 20);
    ASSERT_TRUE(v->Shred().ok());
    // A purged message captured again afterwards is a new message.
    ASSERT_TRUE(v->Ingest(Msg(40), Env("import:/again")).ok());
    purged.erase(ObjectId::Of(Msg(40)));
    live = ChangeLog(*v);
    live_stats = *v->Stats();
  }
  ASSERT_TRUE(Vault::Rebuild(dir(), keys_, options_).ok());
  auto v = OpenVault();
  ExpectRebuiltNumbering(live, ChangeLog(*v));
  VaultStats st = *v->Stats();
  EXPECT_EQ(st.messages, live_stats.messages);
  EXPECT_EQ(st.raw_bytes, live_stats.raw_bytes);
  EXPECT_EQ(st.next_change, live_stats.next_change);
  ExpectSurvivorsIntact(*v, purged);
}

TEST_F(PurgeTest, RebuildBeforeTheShredQueuesItAgain) {
  std::set<ObjectId> purged{ObjectId::Of(Msg(7))};
  std::vector<std::pair<uint64_t, std::string>> live;
  {
    auto v = OpenVault();
    Store(*v, 0, 30);
    ASSERT_TRUE(v->Purge(Items({7})).ok());
    live = ChangeLog(*v);
  }  // closed before any rewrite: the catalog is then thrown away
  ASSERT_TRUE(Vault::Rebuild(dir(), keys_, options_).ok());
  auto v = OpenVault();
  EXPECT_EQ(ChangeLog(*v), live);  // nothing was rewritten yet: exactly the same
  EXPECT_EQ(v->ReadMessage(ObjectId::Of(Msg(7))).error().code(), ErrorCode::kNotFound);
  EXPECT_GT(*v->ShredPending(), 0u);
  std::set<std::string> keys = KeysOf(purged);
  ASSERT_TRUE(v->Shred().ok());
  ExpectShredded(purged, keys);
  ExpectSurvivorsIntact(*v, purged);
}

TEST_F(PurgeTest, ACaptureSinceTheDecisionKeepsTheMessage) {
  auto v = OpenVault();
  Store(*v, 0, 10);
  // Captured again (a new envelope) after the purge counted one capture.
  ASSERT_TRUE(v->Ingest(Msg(3), Env("smtp:late")).ok());
  Result<PurgeOutcome> out = v->Purge(Items({3, 4, 999}));
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->purged.size(), 1u);
  EXPECT_EQ(out->purged[0], ObjectId::Of(Msg(4)));
  ASSERT_EQ(out->skipped.size(), 2u);
  EXPECT_NE(out->skipped[0].second.find("captured again since the purge was decided (2 captures now, 1 then)"), std::string::npos);
  EXPECT_NE(out->skipped[1].second.find("not stored"), std::string::npos);
  EXPECT_EQ(*v->ReadMessage(ObjectId::Of(Msg(3))), Msg(3));
}

TEST_F(PurgeTest, AnInterruptedSwapIsFinishedOrUndoneOnOpen) {
  std::set<ObjectId> purged{ObjectId::Of(Msg(2))};
  std::string old_copy, new_copy;
  const std::string pack1 = dir() + "/packs/" + PackFileName(1);
  {
    auto v = OpenVault();
    Store(*v, 0, 6);
    old_copy = ReadFile(pack1);
    ASSERT_TRUE(v->Purge(Items({2})).ok());
    ASSERT_TRUE(v->Shred().ok());
    new_copy = ReadFile(pack1);
    ASSERT_NE(old_copy, new_copy);
  }
  // The catalog adopted the rewrite, the rename did not happen: open finishes it.
  testing::WriteFile(pack1 + ".rewrite", new_copy);
  testing::WriteFile(pack1, old_copy);
  {
    auto v = OpenVault();
    EXPECT_EQ(ReadFile(pack1), new_copy);
    EXPECT_FALSE(std::filesystem::exists(pack1 + ".rewrite"));
    ExpectSurvivorsIntact(*v, purged);
  }
  // A rewrite the catalog never adopted (a crash before its commit point) is deleted.
  std::string stale = new_copy;
  stale[40] = 9;  // another generation
  testing::WriteFile(pack1 + ".rewrite", stale);
  {
    auto v = OpenVault();
    EXPECT_FALSE(std::filesystem::exists(pack1 + ".rewrite"));
    EXPECT_EQ(ReadFile(pack1), new_copy);
    ExpectSurvivorsIntact(*v, purged);
  }
}

TEST_F(PurgeTest, KillNineAnywhereLeavesEveryMessageIntactOrGoneAndTheResumeFinishes) {
  {
    auto v = OpenVault();
    Store(*v, 0, 300);
  }
  std::set<ObjectId> purged;
  std::vector<int> which;
  for (int i = 0; i < 300; i += 2) {
    which.push_back(i);
    purged.insert(ObjectId::Of(Msg(i)));
  }
  std::set<std::string> keys = KeysOf(purged);
  std::mt19937 rng(12345);
  for (int round = 0; round < 6; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      OpenReport report;
      Result<std::unique_ptr<Vault>> v = Vault::Open(dir(), keys_, options_, &report);
      if (!v.ok()) ::_exit(2);
      if (!(*v)->Purge(Items(which)).ok()) ::_exit(3);
      if (!(*v)->Shred().ok()) ::_exit(4);
      ::_exit(0);
    }
    ::usleep(std::uniform_int_distribution<int>(0, 60000)(rng));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    // Whatever the moment: every message is either readable byte for byte or gone.
    auto v = OpenVault();
    ASSERT_TRUE(v);
    for (const auto& [id, raw] : raw_) {
      Result<std::string> back = v->ReadMessage(id);
      if (back.ok()) {
        EXPECT_EQ(*back, raw);
      } else {
        EXPECT_EQ(back.error().code(), ErrorCode::kNotFound) << back.error().ToString();
        EXPECT_TRUE(purged.count(id)) << "a message that was not purged is gone: " << id.Hex();
      }
    }
  }
  // The resumed purge finishes: all of them gone, nothing half-written left.
  auto v = OpenVault();
  ASSERT_TRUE(v->Purge(Items(which)).ok());
  Result<ShredReport> sr = v->Shred();
  ASSERT_TRUE(sr.ok()) << sr.error().ToString();
  EXPECT_EQ(sr->packs_left, 0u);
  ExpectSurvivorsIntact(*v, purged);
  ExpectShredded(purged, keys);
}

TEST_F(PurgeTest, ADictionaryThatLearntFromAPurgedMessageIsRetrainedAndOthersAreShownClean) {
  std::set<ObjectId> purged;
  std::vector<std::pair<uint64_t, std::string>> live;
  {
    auto v = OpenVault();
    Store(*v, 0, 300);
    // Trained on messages 0..199.
    std::vector<std::string> samples;
    std::vector<ObjectId> ids;
    for (int i = 0; i < 200; ++i) {
      samples.push_back(Vault::TrainingSample(Env("import:/m/" + std::to_string(i)), Msg(i)));
      ids.push_back(ObjectId::Of(Msg(i)));
    }
    std::vector<std::string_view> views(samples.begin(), samples.end());
    ASSERT_TRUE(v->TrainDictionary(views, ids).ok());
    Store(*v, 300, 200);  // compressed with dictionary 1

    // Message 450 was no sample: dictionary 1 provably holds none of it and stays.
    ASSERT_TRUE(v->Purge(Items({450})).ok());
    purged.insert(ObjectId::Of(Msg(450)));
    Result<ShredReport> sr = v->Shred();
    ASSERT_TRUE(sr.ok());
    EXPECT_TRUE(sr->dictionaries.empty());

    // Message 17 was a sample: dictionary 1 is retrained and every block of it re-encoded.
    ASSERT_TRUE(v->Purge(Items({17})).ok());
    purged.insert(ObjectId::Of(Msg(17)));
    sr = v->Shred();
    ASSERT_TRUE(sr.ok()) << sr.error().ToString();
    ASSERT_EQ(sr->dictionaries.size(), 1u);
    EXPECT_NE(sr->dictionaries[0].find("dictionary 1 learnt from purged mail: retrained from"), std::string::npos)
        << sr->dictionaries[0];
    EXPECT_EQ(sr->packs_left, 0u);
    ExpectSurvivorsIntact(*v, purged);
    Store(*v, 500, 20);  // new mail uses the replacement
    ExpectSurvivorsIntact(*v, purged);
    live = ChangeLog(*v);
  }
  // No record of dictionary 1 is left, and no block refers to it.
  for (const auto& e : std::filesystem::directory_iterator(dir() + "/packs")) {
    std::string bytes = ReadFile(e.path());
    RecordScanner scanner(bytes, kPackHeaderSize);
    RawRecord rec;
    while (scanner.Next(&rec)) {
      if (rec.type == RecordType::kDictionary) {
        EXPECT_NE(DecodeDictionaryBody(rec.body)->dictionary_id, 1u);
      }
      if (rec.type == RecordType::kMessage) {
        EXPECT_NE(DecodeMessageBody(rec.body)->dictionary_id, 1u);
      }
    }
  }
  ASSERT_TRUE(Vault::Rebuild(dir(), keys_, options_).ok());
  auto v = OpenVault();
  ExpectRebuiltNumbering(live, ChangeLog(*v));
  ExpectSurvivorsIntact(*v, purged);
}


// ---------------------------------------------------------------------------------------------
// The property test with real purges: random sets of retentions and holds over random mail
// (shared messages captured for several custodians), a dry run, then a hold placed or a
// message captured again before the approval, and the purge job run to its end. The oracle is
// this file's own reading of the rules over what it generated (every retention deletes with
// weight 0, so once all that apply have run out a message may go); it never asks the engine.

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string RfcDate(int64_t t) {
  char buf[64];
  time_t tt = static_cast<time_t>(t);
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}


// The control plane beside a test's vault: its state store and audit trail.
struct ControlPlane {
  std::unique_ptr<control::StateStore> store;
  std::unique_ptr<control::AuditLog> audit;
};
Result<ControlPlane> OpenControlPlane(const std::string& dir, const Vault& vault) {
  ControlPlane c;
  MV_ASSIGN_OR_RETURN(c.store, control::StateStore::Open(dir, vault.DeriveSubkey(purpose::kState)));
  MV_ASSIGN_OR_RETURN(c.audit, control::AuditLog::Open(c.store.get(), vault.DeriveSubkey(purpose::kAudit)));
  return c;
}

TEST(PurgeProperty, RandomSetsHoldsCapturesAndPurgesKeepWhatMustStayAndTakeWhatMayGo) {
  InitMessageParsing();
  constexpr uint64_t kSeed = 0x7075726765ULL;  // "purge"
  constexpr int kScenarios = 100;
  std::mt19937_64 rng(kSeed);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  auto chance = [&](int percent) { return pick(0, 99) < percent; };
  const std::vector<std::string> pool = {"alice@corp.example", "bob@corp.example", "carol@corp.example"};
  const int64_t now = UnixNow();
  uint64_t purged_total = 0, kept_total = 0, raced_total = 0;

  for (int sc = 0; sc < kScenarios; ++sc) {
    SCOPED_TRACE("seed " + std::to_string(kSeed) + ", scenario " + std::to_string(sc));
    TempDir tmp;
    const std::string dir = tmp / "vault";
    KeySource keys;
    keys.key_file = tmp / "key";
    VaultOptions options;
    options.auto_train_messages = 0;
    options.seal_bytes = 8 << 10;
    bool created;
    ASSERT_TRUE(Vault::Init(dir, keys, options, &created).ok());
    Result<std::unique_ptr<Vault>> opened = Vault::Open(dir, keys, options);
    ASSERT_TRUE(opened.ok());
    std::unique_ptr<Vault> vault = std::move(*opened);

    // The mail: subjects carry words w0..w3 (what queries match), dates from 1995 to now.
    struct Mail {
      std::string raw;
      ObjectId id;
      int64_t date = 0, capture = 0;
      std::set<int> words;
      std::set<std::string> custodians;
    };
    std::vector<Mail> mail(static_cast<size_t>(pick(8, 25)));
    std::vector<std::string> samples;
    std::vector<ObjectId> sample_ids;
    for (size_t i = 0; i < mail.size(); ++i) {
      Mail& m = mail[i];
      m.date = pick(now - int64_t{86400} * 365 * 30, now - 86400);
      m.capture = now - pick(3600, int64_t{86400} * 365 * 3);
      std::string subject = "s" + std::to_string(sc) + "m" + std::to_string(i);
      for (int w = 0; w < 4; ++w) {
        if (chance(40)) {
          m.words.insert(w);
          subject += " w" + std::to_string(w);
        }
      }
      m.raw = "From: sender" + std::to_string(i) + "@example.com\r\nTo: team@corp.example\r\nSubject: " + subject +
              "\r\nDate: " + RfcDate(m.date) + "\r\nMessage-ID: <p" + std::to_string(sc) + "." + std::to_string(i) +
              "@x>\r\n\r\nOrder " + std::to_string(pick(1, 1 << 30)) + " shipped to customer " + std::to_string(i) + ".\r\n";
      m.id = ObjectId::Of(m.raw);
      // One to three custodians: the first capture, then copies for others (envelopes).
      std::vector<std::string> who = pool;
      std::shuffle(who.begin(), who.end(), rng);
      who.resize(static_cast<size_t>(pick(1, 3)));
      for (size_t k = 0; k < who.size(); ++k) {
        Envelope e;
        e.capture_time_us = (m.capture + static_cast<int64_t>(k)) * 1000000;
        e.source = "import:/prop/" + std::to_string(k);
        e.custodian = who[k];
        ASSERT_TRUE(vault->Ingest(m.raw, e).ok());
        m.custodians.insert(who[k]);
      }
      if (chance(50)) {
        samples.push_back(m.raw);
        sample_ids.push_back(m.id);
      }
    }
    if (samples.size() >= 4 && chance(50)) {
      std::vector<std::string_view> views(samples.begin(), samples.end());
      (void)vault->TrainDictionary(views, sample_ids);  // too few samples may fail: only compression differs
    }

    // The control plane, and a random set.
    Result<ControlPlane> cp = OpenControlPlane(dir, *vault);
    ASSERT_TRUE(cp.ok());
    std::unique_ptr<control::StateStore> store = std::move(cp->store);
    std::unique_ptr<control::AuditLog> audit = std::move(cp->audit);
    control::Records records(store.get());
    policy::PolicyStore policies(store.get(), audit.get());
    policy::PurgeStore purges(store.get(), audit.get());
    control::Actor c1{"c1", "compliance", "session", "test", ""}, c2{"c2", "compliance", "session", "test", ""};
    std::vector<policy::Policy> set;
    const int n_policies = static_cast<int>(pick(1, 5));
    for (int i = 0; i < n_policies; ++i) {
      policy::Policy p;
      p.name = "p" + std::to_string(i);
      p.kind = chance(75) ? policy::Kind::kRetention : policy::Kind::kHold;
      if (chance(50)) p.query = "subject:w" + std::to_string(pick(0, 3));
      if (chance(40)) p.custodians = {pool[static_cast<size_t>(pick(0, 2))]};
      if (p.kind == policy::Kind::kHold) {
        if (p.catch_all()) p.custodians = {pool[static_cast<size_t>(pick(0, 2))]};
        p.keep.forever = true;
      } else {
        p.keep.unit = chance(50) ? policy::Period::kDays : policy::Period::kYears;
        p.keep.count = static_cast<uint32_t>(p.keep.unit == policy::Period::kDays ? pick(1, 4000) : pick(1, 20));
        p.from = chance(60) ? policy::From::kDate : policy::From::kCapture;
      }
      set.push_back(std::move(p));
    }
    ASSERT_TRUE(policies.Replace(set, c1, now).ok());

    jobs::IndexFollower index(vault.get(), dir);
    index.SetRecords(&records);
    ASSERT_TRUE(index.Maintain(jobs::IndexTask::kLevelCompact, nullptr, {}).ok());
    Result<std::unique_ptr<index::Searcher>> opened_searcher = index::Searcher::Open(dir);
    ASSERT_TRUE(opened_searcher.ok());
    std::unique_ptr<index::Searcher> searcher = std::move(*opened_searcher);
    Result<policy::Impact> what_if = policy::Evaluate(*searcher, set, now);
    ASSERT_TRUE(what_if.ok()) << what_if.error().ToString();
    Result<policy::PurgeRecord> proposed = purges.Propose(*searcher, *vault, policies, c1, now);
    ASSERT_TRUE(proposed.ok()) << proposed.error().ToString();
    EXPECT_EQ(proposed->messages, what_if->purgeable) << "the dry run and what-if disagree";

    // The oracle, over the generated facts.
    auto applies = [&](const policy::Policy& p, const Mail& m) {
      if (!p.query.empty() && !m.words.count(p.query.back() - '0')) return false;
      if (!p.custodians.empty() && !m.custodians.count(p.custodians[0])) return false;
      return true;
    };
    auto may_go = [&](const std::vector<policy::Policy>& ps, const Mail& m) {
      bool any_retention = false;
      for (const policy::Policy& p : ps) {
        if (!applies(p, m)) continue;
        if (p.kind == policy::Kind::kHold) return false;
        any_retention = true;
        const int64_t start = p.from == policy::From::kDate ? m.date : m.capture;
        const int64_t end = p.keep.unit == policy::Period::kDays ? start + int64_t{86400} * p.keep.count : p.keep.End(start);
        if (now + 120 < end) return false;  // still running (with slack: the job runs a little later)
        if (now - 120 < end) return false;  // too close to call
      }
      return any_retention;
    };
    // Before the approval: a hold placed on one custodian, or a purgeable message captured again.
    std::set<ObjectId> raced;
    std::vector<policy::Policy> final_set = set;
    if (chance(40)) {
      policy::Policy h;
      h.name = "late-hold";
      h.kind = policy::Kind::kHold;
      h.keep.forever = true;
      h.custodians = {pool[static_cast<size_t>(pick(0, 2))]};
      ASSERT_TRUE(policies.Add(h, c2, now, "hold.place").ok());
      final_set.push_back(h);
    }
    if (chance(40)) {
      for (const Mail& m : mail) {
        if (!may_go(set, m)) continue;
        Envelope e;
        e.capture_time_us = now * 1000000;
        e.source = "smtp:late";
        e.custodian = "dave@corp.example";
        ASSERT_TRUE(vault->Ingest(m.raw, e).ok());
        raced.insert(m.id);
        break;
      }
    }

    ASSERT_TRUE(purges.Approve(proposed->id, c2, now).ok());
    jobs::PurgeEnv env{vault.get(), dir, store.get(), audit.get(), &records, &policies, dir + "/exports", nullptr};
    Result<nlohmann::json> ran = jobs::RunPurge(env, proposed->id, nullptr);
    ASSERT_TRUE(ran.ok()) << ran.error().ToString();
    Result<std::optional<policy::PurgeRecord>> after = purges.Get(proposed->id);
    ASSERT_TRUE(after.ok() && *after);

    uint64_t gone = 0;
    for (const Mail& m : mail) {
      Result<std::string> back = vault->ReadMessage(m.id);
      const bool must_stay = !may_go(set, m) && !may_go(final_set, m);  // under an unexpired retention or a hold
      const bool must_go = may_go(set, m) && may_go(final_set, m) && !raced.count(m.id);
      if (back.ok()) {
        EXPECT_EQ(*back, m.raw);
        EXPECT_FALSE(must_go) << m.id.Hex() << " was expired and unheld, and is still here";
        ++kept_total;
      } else {
        EXPECT_EQ(back.error().code(), ErrorCode::kNotFound);
        EXPECT_FALSE(must_stay) << m.id.Hex() << " was held or under an unexpired retention, and was purged";
        EXPECT_FALSE(raced.count(m.id)) << m.id.Hex() << " was captured again before the purge, and was purged";
        EXPECT_FALSE(may_go(final_set, m) == false) << m.id.Hex() << " was held by the late hold, and was purged";
        ++gone;
      }
    }
    purged_total += gone;
    raced_total += raced.size();
    EXPECT_EQ((*after)->purged, gone);
    EXPECT_EQ((*after)->purged + (*after)->skipped, proposed->messages) << "what the dry run counted is what the purge did, or skipped";
    uint64_t dispositions = 0;
    ASSERT_TRUE(purges.ForEachDisposition(proposed->id, [&](const policy::Disposition& d) {
      dispositions += d.state == "purged";
      return true;
    }).ok());
    EXPECT_EQ(dispositions, gone);
    Result<VerifyReport> vr = vault->Verify();
    ASSERT_TRUE(vr.ok());
    EXPECT_TRUE(vr->ok()) << (vr->problems.empty() ? "" : vr->problems.front());
    EXPECT_EQ(*vault->ShredPending(), 0u);
  }
  std::printf("[ purge   ] %d scenarios: %llu messages purged, %llu kept, %llu captured again before the purge\n", kScenarios,
              static_cast<unsigned long long>(purged_total), static_cast<unsigned long long>(kept_total),
              static_cast<unsigned long long>(raced_total));
  EXPECT_GT(purged_total, 0u);
  EXPECT_GT(kept_total, 0u);
}



// kill -9 of the purge job itself, at random moments: every message is readable byte for byte or
// gone with its disposition record, and `purge resume` (RunPurge again) finishes the purge.
TEST(PurgeJob, KillNineAnywhereLeavesNoMessageGoneWithoutItsDispositionAndTheResumeFinishes) {
  InitMessageParsing();
  TempDir tmp;
  const std::string dir = tmp / "vault";
  KeySource keys;
  keys.key_file = tmp / "key";
  VaultOptions options;
  options.auto_train_messages = 0;
  options.seal_bytes = 32 << 10;
  bool created;
  ASSERT_TRUE(Vault::Init(dir, keys, options, &created).ok());
  const int64_t now = UnixNow();
  std::map<ObjectId, std::string> raw;
  std::string policy_id;
  control::Actor c1{"c1", "compliance", "session", "test", ""}, c2{"c2", "compliance", "session", "test", ""};
  {
    Result<std::unique_ptr<Vault>> v = Vault::Open(dir, keys, options);
    ASSERT_TRUE(v.ok());
    std::vector<std::future<Result<IngestResult>>> fs;
    for (int i = 0; i < 600; ++i) {
      std::string m = "From: a@example.com\r\nSubject: job kill " + std::to_string(i) + "\r\nDate: " +
                      RfcDate(now - int64_t{86400} * (i % 2 ? 900 : 10)) + "\r\nMessage-ID: <k" + std::to_string(i) +
                      "@x>\r\n\r\nline " + std::to_string(i * 7919) + " of the body.\r\n";
      raw[ObjectId::Of(m)] = m;
      Envelope e;
      e.capture_time_us = (now - 3600) * 1000000;
      e.source = "import:/k";
      fs.push_back((*v)->IngestAsync(m, e));
    }
    for (auto& f : fs) ASSERT_TRUE(f.get().ok());
    Result<ControlPlane> cp = OpenControlPlane(dir, **v);
    ASSERT_TRUE(cp.ok());
    control::Records records(cp->store.get());
    policy::PolicyStore policies(cp->store.get(), cp->audit.get());
    policy::Policy r;
    r.name = "year";
    r.keep.unit = policy::Period::kDays;
    r.keep.count = 365;
    ASSERT_TRUE(policies.Replace({r}, c1, now).ok());  // the odd messages (900 days old) go
    jobs::IndexFollower index(v->get(), dir);
    index.SetRecords(&records);
    ASSERT_TRUE(index.Maintain(jobs::IndexTask::kLevelCompact, nullptr, {}).ok());
    Result<std::unique_ptr<index::Searcher>> searcher = index::Searcher::Open(dir);
    ASSERT_TRUE(searcher.ok());
    policy::PurgeStore purges(cp->store.get(), cp->audit.get());
    Result<policy::PurgeRecord> proposed = purges.Propose(**searcher, **v, policies, c1, now);
    ASSERT_TRUE(proposed.ok());
    ASSERT_EQ(proposed->messages, 300u);
    ASSERT_TRUE(purges.Approve(proposed->id, c2, now).ok());
    policy_id = proposed->id;
  }
  // Opens everything, runs (or resumes) the purge; the child is killed somewhere in it.
  auto run = [&]() -> Status {
    Result<std::unique_ptr<Vault>> v = Vault::Open(dir, keys, options);
    MV_RETURN_IF_ERROR(v.status());
    MV_ASSIGN_OR_RETURN(ControlPlane cp, OpenControlPlane(dir, **v));
    control::Records records(cp.store.get());
    policy::PolicyStore policies(cp.store.get(), cp.audit.get());
    jobs::PurgeEnv env{v->get(), dir, cp.store.get(), cp.audit.get(), &records, &policies, dir + "/exports", nullptr};
    return jobs::RunPurge(env, policy_id, nullptr).status();
  };
  std::string seen;  // per round: how many were gone, and the purge's state
  auto check = [&](bool finished) {
    Result<std::unique_ptr<Vault>> v = Vault::Open(dir, keys, options);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    Result<ControlPlane> cp = OpenControlPlane(dir, **v);
    ASSERT_TRUE(cp.ok());
    policy::PurgeStore purges(cp->store.get(), cp->audit.get());
    std::map<std::string, std::string> disposition;  // id -> state
    ASSERT_TRUE(purges.ForEachDisposition(policy_id, [&](const policy::Disposition& d) {
      disposition[d.id] = d.state;
      return true;
    }).ok());
    size_t gone = 0;
    for (const auto& [id, m] : raw) {
      Result<std::string> back = (*v)->ReadMessage(id);
      if (back.ok()) {
        EXPECT_EQ(*back, m);
        if (finished) {
          EXPECT_FALSE(disposition.count(id.Hex())) << "kept, yet a disposition record says purged";
        }
      } else {
        ++gone;
        EXPECT_EQ(back.error().code(), ErrorCode::kNotFound);
        EXPECT_TRUE(disposition.count(id.Hex())) << id.Hex() << " is gone without its disposition record";
        if (finished) {
          EXPECT_EQ(disposition[id.Hex()], "purged");
        }
      }
    }
    Result<std::optional<policy::PurgeRecord>> state = purges.Get(policy_id);
    seen += " " + std::to_string(gone) + "/" + (state.ok() && *state ? (*state)->state : std::string("?"));
    if (finished) {
      EXPECT_EQ(gone, 300u);
      Result<std::optional<policy::PurgeRecord>> r = purges.Get(policy_id);
      ASSERT_TRUE(r.ok() && *r);
      EXPECT_EQ((*r)->state, policy::kPurgeDone);
      EXPECT_EQ((*r)->purged, 300u);
      EXPECT_EQ(*(*v)->ShredPending(), 0u);
      for (const auto& e : std::filesystem::directory_iterator(dir + "/packs")) EXPECT_EQ(e.path().extension(), ".pack");
    }
  };
  std::mt19937 rng(4242);
  for (int round = 0; round < 8; ++round) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) ::_exit(run().ok() ? 0 : 3);
    ::usleep(std::uniform_int_distribution<int>(1000, round < 4 ? 60000 : 300000)(rng));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    check(false);
  }
  Status resumed = run();
  ASSERT_TRUE(resumed.ok() || resumed.error().code() == ErrorCode::kConflict) << resumed.error().ToString();  // done already
  check(true);
  std::printf("[ purge   ] after each kill -9 (gone/state):%s\n", seen.c_str());
}

// ---------------------------------------------------------------------------------------------
// The records docs/formats.md describes, as bytes written from the document (not by the
// encoders), read by the decoders and produced again by the encoders.

std::string Repeat(char c, size_t n) { return std::string(n, c); }

TEST(PurgeFormat, PurgeAndTombstoneBodiesAreWhatTheDocumentSays) {
  const ObjectId a = ObjectId::FromBytes(Repeat('\x11', 32)), b = ObjectId::FromBytes(Repeat('\x22', 32));
  // PURGE: u8 version 1, varint count, count x 32 bytes.
  const std::string purge = std::string("\x01\x02", 2) + Repeat('\x11', 32) + Repeat('\x22', 32);
  Result<PurgeRecord> pr = DecodePurgeBody(purge);
  ASSERT_TRUE(pr.ok()) << pr.error().ToString();
  EXPECT_EQ(pr->ids, (std::vector<ObjectId>{a, b}));
  EXPECT_EQ(EncodePurgeBody(PurgeRecord{{a, b}}), purge);
  // The limits: a count that does not match the bytes, a count over 4,096, another version.
  EXPECT_FALSE(DecodePurgeBody(std::string("\x01\x03", 2) + Repeat('\x11', 64)).ok());
  EXPECT_FALSE(DecodePurgeBody(std::string("\x01\x81\x20", 3) + Repeat('\x11', 32 * 4097)).ok());  // 4097
  EXPECT_TRUE(DecodePurgeBody(std::string("\x01\x80\x20", 3) + Repeat('\x11', 32 * 4096)).ok());   // 4096
  EXPECT_FALSE(DecodePurgeBody(std::string("\x02\x01", 2) + Repeat('\x11', 32)).ok());
  EXPECT_FALSE(DecodePurgeBody("").ok());
  // TOMBSTONE: id (32) || u8 what (1 message, 2 envelope).
  const std::string tomb = Repeat('\x11', 32) + "\x02";
  Result<TombstoneRecord> t = DecodeTombstoneBody(tomb);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->id, a);
  EXPECT_EQ(t->what, TombstoneRecord::kEnvelope);
  EXPECT_EQ(EncodeTombstoneBody(TombstoneRecord{a, TombstoneRecord::kEnvelope}), tomb);
  EXPECT_FALSE(DecodeTombstoneBody(Repeat('\x11', 32) + "\x03").ok());
  EXPECT_FALSE(DecodeTombstoneBody(Repeat('\x11', 31) + "\x01").ok());
  // Frame types 5 and 6 parse; 7 does not.
  EXPECT_TRUE(ParseFramedRecord(FrameRecord(RecordType::kPurge, purge), 48).ok());
  EXPECT_TRUE(ParseFramedRecord(FrameRecord(RecordType::kTombstone, tomb), 48).ok());
  std::string seven = FrameRecord(RecordType::kTombstone, tomb);
  seven[4] = 7;
  EXPECT_FALSE(ParseFramedRecord(seven, 48).ok());
}

TEST(PurgeFormat, DictionaryBoxVersion2IsWhatTheDocumentSays) {
  const SecretKey key = SecretKey::Random();
  const ObjectId a = ObjectId::FromBytes(Repeat('\x33', 32));
  // Plaintext: u8 2, varint replaces, varint n, n x 32-byte ids, the dictionary bytes; sealed
  // with AAD "mailvault dictionary v2" || id (u32 LE).
  const std::string plain = std::string("\x02\x05\x01", 3) + Repeat('\x33', 32) + "DICTBYTES";
  std::string aad = "mailvault dictionary v2";
  aad += std::string("\x09\x00\x00\x00", 4);
  std::string box;
  Seal(key, aad, plain, &box);
  Result<DictionaryContent> c = OpenDictionary(key, DictionaryRecord{9, box});
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_TRUE(c->samples_known);
  EXPECT_EQ(c->replaces, 5u);
  EXPECT_EQ(c->samples, std::vector<ObjectId>{a});
  EXPECT_EQ(c->bytes, "DICTBYTES");
  // What SealDictionary writes opens to the same plaintext under that AAD.
  Result<std::string> back = Open(key, aad, SealDictionary(key, 9, *c));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, plain);
  // Version 1: the dictionary alone, AAD "mailvault dictionary v1" || id; samples unknown.
  std::string box1;
  Seal(key, DictionaryAad(9), "OLDDICT", &box1);
  Result<DictionaryContent> c1 = OpenDictionary(key, DictionaryRecord{9, box1});
  ASSERT_TRUE(c1.ok());
  EXPECT_FALSE(c1->samples_known);
  EXPECT_EQ(c1->bytes, "OLDDICT");
  // Another id's box does not open.
  EXPECT_FALSE(OpenDictionary(key, DictionaryRecord{10, box}).ok());
}

TEST(PurgeFormat, DispositionCsvIsWhatTheDocumentSays) {
  policy::Disposition d;
  d.id = std::string(64, 'a');
  d.fingerprint = "sha256:" + d.id;
  d.size = 1234;
  d.policy = "everything-365d,=evil";
  d.proposer = "c1";
  d.approver = "c2";
  d.time = 1796643901;  // 2026-12-02T11:05:01Z
  d.purge = "p20261207-114501-3fa9c2";
  EXPECT_EQ(policy::DispositionCsvHeader(), "id,fingerprint,size,policy,proposer,approver,time,purge\r\n");
  EXPECT_EQ(policy::DispositionCsvLine(d), d.id + ",sha256:" + d.id + ",1234,\"everything-365d,=evil\",c1,c2," +
                                               control::Rfc3339(1796643901) + ",p20261207-114501-3fa9c2\r\n");
  d.policy = "=cmd";
  EXPECT_NE(policy::DispositionCsvLine(d).find(",'=cmd,"), std::string::npos) << "a formula is neutralised";
}

}  // namespace
}  // namespace mailvault
