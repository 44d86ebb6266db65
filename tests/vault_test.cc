#include "vault/vault.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "core/message.h"
#include "tests/test_util.h"
#include "vault/pack.h"

namespace mailvault {
namespace {

using testing::ReadFile;
using testing::SimpleMessage;
using testing::TempDir;
using testing::WriteFile;

Envelope Env(const std::string& source, std::vector<std::string> rcpts = {}) {
  Envelope e;
  e.capture_time_us = 1700000000000000;
  e.source = source;
  e.recipients = std::move(rcpts);
  return e;
}

class VaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitMessageParsing();
    keys_.key_file = tmp_ / "master.key";
    options_.auto_train_messages = 0;
    bool created = false;
    ASSERT_TRUE(Vault::Init(dir(), keys_, options_, &created).ok());
    ASSERT_TRUE(created);
  }
  std::string dir() const { return tmp_ / "vault"; }
  std::unique_ptr<Vault> OpenVault() {
    Result<std::unique_ptr<Vault>> v = Vault::Open(dir(), keys_, options_, &report_);
    EXPECT_TRUE(v.ok()) << v.error().ToString();
    return v.ok() ? std::move(*v) : nullptr;
  }
  std::string PackPath(uint64_t n = 1) const { return dir() + "/packs/" + PackFileName(n); }

  TempDir tmp_;
  KeySource keys_;
  VaultOptions options_;
  OpenReport report_;
};

TEST_F(VaultTest, InitRefusesAnExistingVault) {
  bool created;
  Status s = Vault::Init(dir(), keys_, options_, &created);
  EXPECT_EQ(s.error().code(), ErrorCode::kAlreadyExists);
}

TEST_F(VaultTest, StoresAndReadsBackByteIdentical) {
  auto v = OpenVault();
  std::string raw = SimpleMessage("hello", "body\r\nwith CRLF\r\n\r\n");
  Result<IngestResult> r = v->Ingest(raw, Env("test"));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_FALSE(r->duplicate);
  EXPECT_EQ(r->id, ObjectId::Of(raw));
  Result<std::string> back = v->ReadMessage(r->id);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_EQ(*back, raw);
  Result<MessageMeta> meta = v->GetMeta(r->id);
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->raw_size, raw.size());
  EXPECT_FALSE(meta->has_warning);
}

TEST_F(VaultTest, SameMessageIsStoredOnceAndEnvelopesMerge) {
  auto v = OpenVault();
  std::string raw = SimpleMessage("journal", "body\n");
  ASSERT_TRUE(v->Ingest(raw, Env("smtp", {"a@x.com"})).ok());
  Result<IngestResult> again = v->Ingest(raw, Env("smtp", {"a@x.com"}));
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  EXPECT_FALSE(again->envelope_added);  // nothing new: nothing written
  Result<IngestResult> other = v->Ingest(raw, Env("smtp", {"b@x.com", "c@x.com"}));
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->duplicate);
  EXPECT_TRUE(other->envelope_added);
  Result<std::vector<StoredEnvelope>> envs = v->GetEnvelopes(other->id);
  ASSERT_TRUE(envs.ok()) << envs.error().ToString();
  ASSERT_EQ(envs->size(), 2u);
  EXPECT_EQ((*envs)[0].envelope.recipients, std::vector<std::string>{"a@x.com"});
  EXPECT_EQ((*envs)[1].envelope.recipients, (std::vector<std::string>{"b@x.com", "c@x.com"}));
  Result<VaultStats> st = v->Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->messages, 1u);
  EXPECT_EQ(st->duplicates, 2u);
  EXPECT_EQ(st->envelopes, 2u);
}

TEST_F(VaultTest, ConcurrentIngestsShareFsyncs) {
  auto v = OpenVault();
  constexpr int kThreads = 8, kPerThread = 40;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string raw = SimpleMessage("m", "t" + std::to_string(t) + " i" + std::to_string(i), "<" + std::to_string(t * 1000 + i) + "@x>");
        if (v->Ingest(raw, Env("t")).ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  // Each Ingest waits for durability; with 8 writers the groups must hold more than one.
  EXPECT_LT(v->commit_groups(), static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(v->Stats()->messages, static_cast<uint64_t>(kThreads * kPerThread));
}

TEST_F(VaultTest, SurvivesReopenAndRebuildAnswersTheSame) {
  std::vector<ObjectId> ids;
  {
    auto v = OpenVault();
    for (int i = 0; i < 50; ++i) {
      std::string raw = SimpleMessage("subject " + std::to_string(i), "body " + std::to_string(i), "<r" + std::to_string(i) + "@x>");
      ids.push_back(v->Ingest(raw, Env("src", {"u" + std::to_string(i % 3) + "@x"}))->id);
      if (i % 10 == 0) {
        ASSERT_TRUE(v->Ingest(raw, Env("again", {"extra@x"})).ok());
      }
    }
  }
  auto snapshot = [&](Vault& v) {
    std::vector<std::string> out;
    EXPECT_TRUE(v.ForEachMessage([&](const ObjectId& id, const MessageMeta& m) {
                   std::string line = id.Hex() + "|" + std::to_string(m.block_start) + "|" +
                                      std::to_string(m.raw_size) + "|" + std::to_string(m.sequence) + "|" +
                                      std::to_string(m.where.pack) + ":" + std::to_string(m.where.offset);
                   Result<std::vector<StoredEnvelope>> envs = v.GetEnvelopes(id);
                   EXPECT_TRUE(envs.ok());
                   if (envs.ok()) {
                     for (const StoredEnvelope& e : *envs) line += "|" + e.envelope.Encode();
                   }
                   line += "|" + *v.ReadMessage(id);
                   out.push_back(line);
                   return true;
                 }).ok());
    return out;
  };
  std::vector<std::string> before;
  {
    auto v = OpenVault();
    before = snapshot(*v);
  }
  ASSERT_EQ(before.size(), 50u);
  Result<OpenReport> rebuilt = Vault::Rebuild(dir(), keys_, options_);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.error().ToString();
  EXPECT_TRUE(rebuilt->warnings.empty());
  auto v = OpenVault();
  EXPECT_EQ(snapshot(*v), before);
  EXPECT_EQ(v->Stats()->messages, 50u);
  EXPECT_EQ(v->Stats()->envelopes, 55u);
}

TEST_F(VaultTest, FlippedByteIsDetectedAndNamed) {
  ObjectId victim, bystander;
  uint64_t victim_offset = 0;
  {
    auto v = OpenVault();
    bystander = v->Ingest(SimpleMessage("ok", "fine"), Env("s"))->id;
    victim = v->Ingest(SimpleMessage("victim", std::string(2000, 'v'), "<victim@x>"), Env("s"))->id;
    victim_offset = v->GetMeta(victim)->where.offset;
  }
  // Flip one byte inside the victim's ciphertext.
  int fd = ::open(PackPath().c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  off_t at = static_cast<off_t>(victim_offset + 200);
  ASSERT_EQ(::pread(fd, &c, 1, at), 1);
  c ^= 0x20;
  ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
  ::close(fd);

  auto v = OpenVault();
  Result<VerifyReport> r = v->Verify();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->problems.size(), 1u);
  EXPECT_NE(r->problems[0].find(victim.Hex()), std::string::npos) << r->problems[0];
  Result<std::string> read = v->ReadMessage(victim);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().code(), ErrorCode::kCorruption);
  EXPECT_TRUE(v->ReadMessage(bystander).ok());
}

// Messages committed together share a compression block; damage to one loses the rest of its
// block for reading (they use it as history) and nothing outside it.
TEST_F(VaultTest, DamageStaysInsideItsCompressionBlock) {
  std::vector<ObjectId> ids;
  {
    auto v = OpenVault();
    std::vector<std::future<Result<IngestResult>>> f;
    // 100 x 3 KB spans at least three 128 KiB blocks however the commit groups fall.
    for (int i = 0; i < 100; ++i) {
      f.push_back(v->IngestAsync(SimpleMessage("block " + std::to_string(i), std::string(3000, 'a' + i % 26), "<b" + std::to_string(i) + "@x>"), Env("s")));
    }
    for (auto& x : f) ids.push_back(x.get()->id);
  }
  auto v = OpenVault();
  std::map<uint64_t, std::vector<ObjectId>> blocks;
  for (const ObjectId& id : ids) blocks[v->GetMeta(id)->block_start].push_back(id);
  ASSERT_GE(blocks.size(), 2u) << "expected several blocks";
  auto biggest = std::max_element(blocks.begin(), blocks.end(), [](auto& a, auto& b) { return a.second.size() < b.second.size(); });
  const std::vector<ObjectId> block = biggest->second;
  ASSERT_GE(block.size(), 3u);
  ObjectId victim = block[1];
  uint64_t at = v->GetMeta(victim)->where.offset + 150;
  v.reset();
  int fd = ::open(PackPath().c_str(), O_RDWR);
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(at)), 1);
  c ^= 1;
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(at)), 1);
  ::close(fd);
  v = OpenVault();
  Result<VerifyReport> r = v->Verify();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->problems.size(), block.size() - 1);  // the victim and the members after it
  EXPECT_TRUE(v->ReadMessage(block[0]).ok());
  EXPECT_FALSE(v->ReadMessage(victim).ok());
  for (auto& [start, members] : blocks) {
    if (start == biggest->first) continue;
    for (const ObjectId& id : members) EXPECT_TRUE(v->ReadMessage(id).ok());
  }
}

TEST_F(VaultTest, WrongKeyIsRefusedClearly) {
  { auto v = OpenVault(); }
  KeySource other;
  other.key_file = tmp_ / "other.key";
  ASSERT_TRUE(KeyFile::Create(other.key_file, SecretKey::Random()).ok());
  Result<std::unique_ptr<Vault>> v = Vault::Open(dir(), other, options_);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), ErrorCode::kBadKey);
  EXPECT_NE(v.error().message().find("does not open the vault"), std::string::npos);
}

TEST_F(VaultTest, SecondOpenIsBusy) {
  auto v = OpenVault();
  Result<std::unique_ptr<Vault>> again = Vault::Open(dir(), keys_, options_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kBusy);
}

TEST_F(VaultTest, TornTailIsDroppedOnOpen) {
  ObjectId id;
  {
    auto v = OpenVault();
    id = v->Ingest(SimpleMessage("kept", "kept"), Env("s"))->id;
  }
  uint64_t good_size = std::filesystem::file_size(PackPath());
  // Half a record: a valid header announcing more bytes than follow (an interrupted append).
  std::string partial = FrameRecord(RecordType::kMessage, std::string(500, 'x')).substr(0, 200);
  int fd = ::open(PackPath().c_str(), O_WRONLY | O_APPEND);
  ASSERT_EQ(::write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
  ::close(fd);

  auto v = OpenVault();
  EXPECT_EQ(report_.torn_bytes_dropped, 200u);
  EXPECT_EQ(std::filesystem::file_size(PackPath()), good_size);
  EXPECT_TRUE(v->ReadMessage(id).ok());
  ASSERT_TRUE(v->Ingest(SimpleMessage("after", "after"), Env("s")).ok());
  EXPECT_TRUE(v->Verify()->ok());
}

TEST_F(VaultTest, DamagedTailIsKeptAndAppendsMoveToANewPack) {
  ObjectId id;
  {
    auto v = OpenVault();
    id = v->Ingest(SimpleMessage("kept", "kept"), Env("s"))->id;
  }
  // Whole, but wrong: not a torn write. Must not be truncated away.
  std::string bad = FrameRecord(RecordType::kMessage, std::string(100, 'x'));
  bad[20] ^= 1;
  int fd = ::open(PackPath().c_str(), O_WRONLY | O_APPEND);
  ASSERT_EQ(::write(fd, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
  ::close(fd);
  uint64_t size = std::filesystem::file_size(PackPath());
  auto v = OpenVault();
  EXPECT_FALSE(report_.warnings.empty());
  EXPECT_EQ(std::filesystem::file_size(PackPath()), size);
  Result<IngestResult> r = v->Ingest(SimpleMessage("new", "new"), Env("s"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(v->GetMeta(r->id)->where.pack, 2u);
  EXPECT_TRUE(v->ReadMessage(id).ok());
}

TEST_F(VaultTest, OversizedMessageIsRejectedWithTheLimitsName) {
  auto v = OpenVault();
  std::string huge = SimpleMessage("big", "") + std::string(200u << 20, 'a');
  Result<IngestResult> r = v->Ingest(huge, Env("s"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kLimitExceeded);
  EXPECT_NE(r.error().message().find("limits.max_message_bytes"), std::string::npos);
  EXPECT_EQ(v->Stats()->messages, 0u);
}

TEST_F(VaultTest, TooManyPartsIsStoredWithAWarning) {
  auto v = OpenVault();
  auto many = [](int leaves) {
    std::string m = "From: a@x\nMessage-ID: <p" + std::to_string(leaves) + "@x>\nContent-Type: multipart/mixed; boundary=s\n\n";
    for (int i = 0; i < leaves; ++i) m += "--s\nContent-Type: text/plain\n\n" + std::to_string(i) + "\n";
    return m + "--s--\n";
  };
  std::string at = many(9999), over = many(10000);
  Result<IngestResult> a = v->Ingest(at, Env("s"));
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->warning.empty()) << a->warning;
  Result<IngestResult> b = v->Ingest(over, Env("s"));
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->warning.find("limits.max_mime_parts"), std::string::npos);
  EXPECT_EQ(*v->ReadMessage(b->id), over);
  EXPECT_TRUE(v->GetMeta(b->id)->has_warning);
  EXPECT_EQ(*v->Warning(b->id), b->warning);
}

TEST_F(VaultTest, NoPlaintextCanaryAnywhereUnderTheVault) {
  const std::string canary = "CANARY-7f3a9d-plaintext-must-not-leak";
  {
    auto v = OpenVault();
    std::string raw = "From: \"" + canary + "\" <" + canary + "@example.com>\nSubject: " + canary +
                      "\nMessage-ID: <" + canary + "@x>\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
                      "Content-Type: text/plain\n\n" + canary + " in the body\n--b\n"
                      "Content-Disposition: attachment; filename=\"" + canary + ".txt\"\n\n" + canary + "\n--b--\n";
    Envelope e = Env("import:" + canary, {canary + "@rcpt.example"});
    e.custodian = canary;
    ASSERT_TRUE(v->Ingest(raw, e).ok());
    ASSERT_TRUE(v->Ingest(raw, Env("second", {canary + "2@x"})).ok());
  }
  size_t files = 0;
  for (auto& entry : std::filesystem::recursive_directory_iterator(dir())) {
    if (!entry.is_regular_file()) continue;
    ++files;
    std::string bytes = ReadFile(entry.path());
    EXPECT_EQ(bytes.find("CANARY-7f3a9d"), std::string::npos) << "plaintext in " << entry.path();
  }
  EXPECT_GT(files, 3u);
}

TEST_F(VaultTest, MessagesFromBeforeADictionaryStayReadable) {
  std::vector<std::pair<ObjectId, std::string>> stored;
  auto msg = [](int i) {
    return SimpleMessage("dictionary test " + std::to_string(i),
                         "Dear customer, your order number " + std::to_string(i * 7919) + " has shipped.\n", "<d" + std::to_string(i) + "@x>");
  };
  {
    auto v = OpenVault();
    for (int i = 0; i < 300; ++i) {
      std::string raw = msg(i);
      stored.emplace_back(v->Ingest(raw, Env("s"))->id, raw);
    }
    std::vector<std::string> samples;
    std::vector<ObjectId> ids;
    for (int i = 1000; i < 1400; ++i) {
      samples.push_back(msg(i));
      ids.push_back(ObjectId::Of(samples.back()));
    }
    std::vector<std::string_view> views(samples.begin(), samples.end());
    ASSERT_TRUE(v->TrainDictionary(views, ids).ok());
    EXPECT_TRUE(v->has_dictionary());
    for (int i = 300; i < 310; ++i) {
      std::string raw = msg(i);
      stored.emplace_back(v->Ingest(raw, Env("s"))->id, raw);
    }
  }
  auto v = OpenVault();
  for (auto& [id, raw] : stored) EXPECT_EQ(*v->ReadMessage(id), raw);
  // The later messages really used the dictionary: their records are smaller.
  EXPECT_LT(v->GetMeta(stored.back().first)->where.length, v->GetMeta(stored.front().first)->where.length);
  EXPECT_TRUE(v->Verify()->ok());
}

TEST_F(VaultTest, PassphraseVault) {
  TempDir t;
  KeySource pass;
  pass.passphrase = "a long enough passphrase";
  bool created = false;
  ASSERT_TRUE(Vault::Init(t / "pv", pass, options_, &created).ok());
  EXPECT_FALSE(created);
  {
    Result<std::unique_ptr<Vault>> v = Vault::Open(t / "pv", pass, options_);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    ASSERT_TRUE((*v)->Ingest(SimpleMessage("p", "p"), Env("s")).ok());
  }
  KeySource wrong;
  wrong.passphrase = "not the passphrase";
  Result<std::unique_ptr<Vault>> v = Vault::Open(t / "pv", wrong, options_);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), ErrorCode::kBadKey);
}

TEST_F(VaultTest, PacksAreSealedAtTheConfiguredSize) {
  options_.seal_bytes = 64 << 10;
  std::vector<ObjectId> ids;
  {
    auto v = OpenVault();
    for (int i = 0; i < 60; ++i) {
      std::string body;
      for (int k = 0; k < 300; ++k) body += std::to_string(i * 1000003 + k * 7919) + " ";
      ids.push_back(v->Ingest(SimpleMessage("s", body, "<s" + std::to_string(i) + "@x>"), Env("s"))->id);
    }
  }
  EXPECT_TRUE(std::filesystem::exists(PackPath(2)));
  auto v = OpenVault();
  for (const ObjectId& id : ids) EXPECT_TRUE(v->ReadMessage(id).ok());
  Result<VerifyReport> r = v->Verify();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok()) << r->problems[0];
  EXPECT_GE(r->packs_checked, 2u);
}

// A full disk: the vault on a 2 MiB tmpfs. Appends fail with a clear error and nothing that
// was acknowledged is lost.
TEST_F(VaultTest, FullDiskLosesNothingAcknowledged) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root (CI runs as root)";
  TempDir mnt;
  ASSERT_EQ(::mount("tmpfs", mnt.path().c_str(), "tmpfs", 0, "size=2m"), 0) << "mount tmpfs: " << strerror(errno);
  std::vector<std::pair<ObjectId, std::string>> acked;
  std::string error;
  options_.min_free_bytes = 128 << 10;
  {
    KeySource keys;
    keys.key_file = mnt / "master.key";
    bool created;
    ASSERT_TRUE(Vault::Init(mnt / "v", keys, options_, &created).ok());
    Result<std::unique_ptr<Vault>> v = Vault::Open(mnt / "v", keys, options_);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    for (int i = 0; i < 2000 && error.empty(); ++i) {
      std::string body;
      for (int k = 0; k < 200; ++k) body += std::to_string((i * 2654435761u + k * 40503u) % 1000003) + " ";
      std::string raw = SimpleMessage("fill", body, "<f" + std::to_string(i) + "@x>");
      Result<IngestResult> r = (*v)->Ingest(raw, Env("s"));
      if (r.ok()) acked.emplace_back(r->id, raw);
      else error = r.error().ToString();
    }
  }
  EXPECT_NE(error.find("No space left"), std::string::npos) << error;
  EXPECT_NE(error.find("free space"), std::string::npos) << error;
  EXPECT_GT(acked.size(), 10u);
  {
    KeySource keys;
    keys.key_file = mnt / "master.key";
    Result<std::unique_ptr<Vault>> v = Vault::Open(mnt / "v", keys, options_);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    for (auto& [id, raw] : acked) EXPECT_EQ(*(*v)->ReadMessage(id), raw);
    Result<VerifyReport> r = (*v)->Verify();
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->ok());
  }
  ::umount(mnt.path().c_str());
}

}  // namespace
}  // namespace mailvault
