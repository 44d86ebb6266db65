// Issue 13: the vault under damage and faults. A damaged byte anywhere in a pack costs at most
// the records of its compression block; nothing acknowledged is ever cut off; verify names
// exactly what was lost.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "core/bytes.h"
#include "core/message.h"
#include "tests/test_util.h"
#include "vault/pack.h"
#include "vault/vault.h"

namespace mailvault {
namespace {

using testing::SimpleMessage;
using testing::TempDir;

Envelope Env(const std::string& source, std::vector<std::string> rcpts = {}) {
  Envelope e;
  e.capture_time_us = 1700000000000000;
  e.source = source;
  e.recipients = std::move(rcpts);
  return e;
}

void FlipByte(const std::string& path, uint64_t at, uint8_t mask) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  char c;
  ASSERT_EQ(::pread(fd, &c, 1, static_cast<off_t>(at)), 1);
  c = static_cast<char>(c ^ mask);
  ASSERT_EQ(::pwrite(fd, &c, 1, static_cast<off_t>(at)), 1);
  ::close(fd);
}

void Append(const std::string& path, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// Every run of exactly 64 lower-case hex digits (a message id) in the lines.
std::set<std::string> IdsIn(const std::vector<std::string>& lines) {
  std::set<std::string> out;
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  for (const std::string& l : lines) {
    for (size_t i = 0; i < l.size();) {
      size_t j = i;
      while (j < l.size() && hex(l[j])) ++j;
      if (j - i == 64) out.insert(l.substr(i, 64));
      i = j == i ? i + 1 : j;
    }
  }
  return out;
}

// One vault with several packs (the first ones sealed), blocks of several messages, and
// further envelopes, built once; each case damages a copy.
class CorruptionMatrix : public ::testing::Test {
 protected:
  struct Stored {
    std::string raw;
    MessageMeta meta;
    size_t envelopes = 0;
    std::vector<StoredEnvelope> later;  // envelope records
  };

  static void SetUpTestSuite() {
    InitMessageParsing();
    base_ = new TempDir;
    stored_ = new std::map<ObjectId, Stored>;
    KeySource keys = Keys(base_->path());
    VaultOptions o = Options();
    bool created;
    ASSERT_TRUE(Vault::Init(base_->path() + "/vault", keys, o, &created).ok());
    auto v = Vault::Open(base_->path() + "/vault", keys, o);
    ASSERT_TRUE(v.ok());
    std::mt19937 rng(7);
    std::vector<std::pair<std::string, std::future<Result<IngestResult>>>> f;
    for (int i = 0; i < 240; ++i) {
      std::string body;
      for (int k = 0; k < 150; ++k) body += std::to_string(rng() % 100000) + (k % 12 ? " " : "\r\n");
      std::string raw = SimpleMessage("matrix " + std::to_string(i), body, "<m" + std::to_string(i) + "@x>");
      f.emplace_back(raw, (*v)->IngestAsync(raw, Env("s", {"a@x"})));
      if (i % 40 == 39) {  // bursts, so commit groups hold blocks of several messages
        for (auto& [raw, fut] : f) {
          Result<IngestResult> r = fut.get();
          ASSERT_TRUE(r.ok());
          (*stored_)[r->id].raw = raw;
        }
        f.clear();
        // Further captures: envelope records between the blocks.
        for (int d = 0; d < 3; ++d) {
          auto it = std::next(stored_->begin(), static_cast<long>(rng() % stored_->size()));
          ASSERT_TRUE((*v)->Ingest(it->second.raw, Env("s", {"r" + std::to_string(i) + "-" + std::to_string(d) + "@x"})).ok());
        }
      }
    }
    // The open pack (the last file) must hold a block of several messages too: a burst
    // that ends in a seal leaves a fresh, empty pack last, so go on until it does not.
    for (int tries = 0; tries < 20; ++tries) {
      std::vector<std::pair<std::string, std::future<Result<IngestResult>>>> tail;
      for (int i = 0; i < 6; ++i) {
        std::string raw = SimpleMessage("tail " + std::to_string(tries * 10 + i), std::to_string(rng()) + " tail",
                                        "<t" + std::to_string(tries * 10 + i) + "@x>");
        auto fut = (*v)->IngestAsync(raw, Env("s", {"a@x"}));
        tail.emplace_back(std::move(raw), std::move(fut));
      }
      uint64_t pack = 0;
      for (auto& [raw, fut] : tail) {
        Result<IngestResult> r = fut.get();
        ASSERT_TRUE(r.ok());
        (*stored_)[r->id].raw = raw;
        pack = (*v)->GetMeta(r->id)->where.pack;
      }
      if (std::filesystem::exists(base_->path() + "/vault/packs/" + PackFileName(pack)) &&
          !std::filesystem::exists(base_->path() + "/vault/packs/" + PackFileName(pack + 1))) {
        break;
      }
    }
    for (auto& [id, s] : *stored_) {
      s.meta = *(*v)->GetMeta(id);
      std::vector<StoredEnvelope> envs = *(*v)->GetEnvelopes(id);
      s.envelopes = envs.size();
      s.later.assign(envs.begin() + 1, envs.end());
    }
  }
  static void TearDownTestSuite() {
    delete stored_;
    delete base_;
  }
  static KeySource Keys(const std::string& root) {
    KeySource k;
    k.key_file = root + "/master.key";
    return k;
  }
  static VaultOptions Options() {
    VaultOptions o;
    o.seal_bytes = 48 << 10;
    o.auto_train_messages = 0;
    return o;
  }
  // The open pack: the last file.
  static uint64_t LastPack() {
    uint64_t last = 0;
    while (std::filesystem::exists(base_->path() + "/vault/packs/" + PackFileName(last + 1))) ++last;
    return last;
  }
  // A message record in the middle of a block of at least three, in the given pack.
  static std::pair<ObjectId, Stored> MidBlockVictim(uint64_t pack) {
    std::map<uint64_t, std::vector<std::pair<uint64_t, ObjectId>>> blocks;
    for (auto& [id, s] : *stored_) {
      if (s.meta.where.pack == pack) blocks[s.meta.block_start].emplace_back(s.meta.where.offset, id);
    }
    for (auto& [start, members] : blocks) {
      if (members.size() < 3) continue;
      std::sort(members.begin(), members.end());
      return {members[1].second, stored_->at(members[1].second)};
    }
    ADD_FAILURE() << "no block of three in pack " << pack;
    return {};
  }

  // Damages a copy of the vault, opens it (after a rebuild when asked), and checks that what
  // may be lost is only the victim's block from the victim on (or the one envelope record).
  void Check(const std::string& label, const std::function<void(const std::string& vault_dir)>& damage,
             const std::set<ObjectId>& may_lose, bool rebuild, const ObjectId* envelope_victim = nullptr,
             bool id_damaged = false) {
    SCOPED_TRACE(label + (rebuild ? " (rebuild)" : " (with the catalog)"));
    TempDir t;
    std::filesystem::copy(base_->path(), t.path(), std::filesystem::copy_options::recursive |
                                                      std::filesystem::copy_options::overwrite_existing);
    const std::string dir = t.path() + "/vault";
    damage(dir);
    if (::testing::Test::HasFatalFailure()) return;
    std::map<std::string, uint64_t> sizes;
    for (auto& e : std::filesystem::directory_iterator(dir + "/packs")) sizes[e.path().string()] = e.file_size();
    KeySource keys = Keys(t.path());
    if (rebuild) {
      Result<OpenReport> r = Vault::Rebuild(dir, keys, Options());
      ASSERT_TRUE(r.ok()) << r.error().ToString();
    }
    OpenReport report;
    auto v = Vault::Open(dir, keys, Options(), &report);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    for (auto& [path, size] : sizes) EXPECT_EQ(std::filesystem::file_size(path), size) << path << " was cut";
    std::set<std::string> lost;
    size_t lost_records = 0;
    for (auto& [id, s] : *stored_) {
      Result<std::string> raw = (*v)->ReadMessage(id);
      if (!raw.ok() || *raw != s.raw) {
        lost.insert(id.Hex());
        if (!may_lose.count(id)) {
          ++lost_records;
          ADD_FAILURE() << "lost " << id.Hex() << " outside the damaged block: "
                        << (raw.ok() ? std::string("different bytes") : raw.error().ToString());
        }
        continue;
      }
      Result<std::vector<StoredEnvelope>> envs = (*v)->GetEnvelopes(id);
      ASSERT_TRUE(envs.ok());
      size_t want = s.envelopes - (envelope_victim && *envelope_victim == id ? 1 : 0);
      if (envs->size() < want) {
        ++lost_records;
        ADD_FAILURE() << id.Hex() << " lost envelopes: " << envs->size() << " of " << s.envelopes;
      }
    }
    EXPECT_EQ(lost_records, 0u);
    Result<VerifyReport> vr = (*v)->Verify();
    ASSERT_TRUE(vr.ok());
    std::set<std::string> named = IdsIn(vr->problems);
    for (const std::string& id : lost) {
      // After a rebuild, a message whose id bytes are the damage cannot be named (nothing
      // else holds its id): then the damaged range at its offset must be reported.
      if (rebuild && id_damaged && may_lose.count(*ObjectId::FromHex(id))) {
        const RecordLocation w = stored_->at(*ObjectId::FromHex(id)).meta.where;
        bool ranged = false;
        for (const std::string& p : vr->problems) ranged |= p.find("bytes " + std::to_string(w.offset) + "..") != std::string::npos;
        if (ranged) continue;
      }
      EXPECT_TRUE(named.count(id)) << "verify does not name lost message " << id;
    }
    for (auto& [id, s] : *stored_) {
      if (lost.count(id.Hex()) || (envelope_victim && *envelope_victim == id)) continue;
      EXPECT_FALSE(named.count(id.Hex())) << "verify names healthy message " << id.Hex();
    }
    if (!may_lose.empty() || envelope_victim) {
      EXPECT_FALSE(vr->ok()) << "verify saw no damage";
    }
    // The vault goes on taking mail after damage.
    std::string fresh = SimpleMessage("after damage", "still taking mail", "<after@x>");
    Result<IngestResult> r = (*v)->Ingest(fresh, Env("s"));
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(*(*v)->ReadMessage(r->id), fresh);
  }

  static std::set<ObjectId> BlockFrom(const ObjectId& victim) {
    const MessageMeta& m = stored_->at(victim).meta;
    std::set<ObjectId> out;
    for (auto& [id, s] : *stored_) {
      if (s.meta.where.pack == m.where.pack && s.meta.block_start == m.block_start && s.meta.where.offset >= m.where.offset) {
        out.insert(id);
      }
    }
    return out;
  }

  static TempDir* base_;
  static std::map<ObjectId, Stored>* stored_;
};
TempDir* CorruptionMatrix::base_ = nullptr;
std::map<ObjectId, CorruptionMatrix::Stored>* CorruptionMatrix::stored_ = nullptr;

TEST_F(CorruptionMatrix, EveryFieldOfAFrameInTheOpenAndASealedPack) {
  ASSERT_GE(LastPack(), 2u) << "the matrix needs a sealed pack and an open one";
  struct Field {
    std::string name;
    uint64_t at;  // within the frame; (uint64_t)-k: k bytes before its end
    uint8_t mask;
  };
  const std::vector<Field> fields = {
      {"magic byte 0", 0, 0x01},      {"magic byte 3", 3, 0x80},      {"type", 4, 0x02},
      {"length byte 0", 8, 0x01},     {"length byte 0 high", 8, 0x80}, {"length byte 1", 9, 0x40},
      {"length byte 2", 10, 0x10},    {"length byte 3", 11, 0x01},    {"length byte 3 high", 11, 0x80},
      {"body (id)", 20, 0x04},        {"body (ciphertext)", 150, 0x20}, {"crc", static_cast<uint64_t>(-2), 0x08},
  };
  for (uint64_t pack : {uint64_t{1}, LastPack()}) {
    auto [victim, s] = MidBlockVictim(pack);
    std::set<ObjectId> may_lose = BlockFrom(victim);
    for (const Field& f : fields) {
      for (bool rebuild : {false, true}) {
        const RecordLocation w = s.meta.where;
        uint64_t at = w.offset + (f.at < w.length ? f.at : w.length - (0 - f.at));
        Check("pack " + std::to_string(pack) + ": " + f.name,
              [&](const std::string& dir) { FlipByte(dir + "/packs/" + PackFileName(pack), at, f.mask); }, may_lose, rebuild,
              nullptr, f.name == "body (id)");
      }
    }
  }
}

TEST_F(CorruptionMatrix, AnEnvelopeRecordLosesOnlyThatEnvelope) {
  for (auto& [id, s] : *stored_) {
    if (s.later.empty()) continue;
    const RecordLocation w = s.later[0].where;
    ObjectId victim = id;
    for (bool rebuild : {false, true}) {
      for (uint64_t at : {uint64_t{9}, uint64_t{w.length - 30}}) {
        Check("envelope byte " + std::to_string(at),
              [&](const std::string& dir) { FlipByte(dir + "/packs/" + PackFileName(w.pack), w.offset + at, 0x10); }, {},
              rebuild, &victim);
      }
    }
    return;
  }
  FAIL() << "no envelope record in the test vault";
}

TEST_F(CorruptionMatrix, ZeroAndRandomTailsAreNeverCutAndNeverCostMail) {
  const std::string last = PackFileName(LastPack());
  std::mt19937 rng(11);
  std::string random(4096, '\0');
  for (char& c : random) c = static_cast<char>(rng());
  for (bool rebuild : {false, true}) {
    for (size_t n : {size_t{3}, size_t{11}, size_t{4096}}) {
      Check("zero-filled tail of " + std::to_string(n),
            [&](const std::string& dir) { Append(dir + "/packs/" + last, std::string(n, '\0')); }, {}, rebuild);
    }
    Check("random tail", [&](const std::string& dir) { Append(dir + "/packs/" + last, random); }, {}, rebuild);
    // A damaged frame followed by intact ones at the very end: nothing after it is cut.
    Check("a whole frame with a bad CRC as the tail",
          [&](const std::string& dir) {
            std::string f = FrameRecord(RecordType::kMessage, std::string(300, 'x'));
            f[f.size() - 1] ^= 1;
            Append(dir + "/packs/" + last, f);
          },
          {}, rebuild);
  }
}

// The length field of the very last record flipped to run past the end: that record was
// written whole (its CRC checks with the length that reaches the end), so it is damage, not a
// torn append, and nothing is cut.
TEST_F(CorruptionMatrix, TheLastRecordsLengthFlippedIsNotATornTail) {
  uint64_t pack = LastPack();
  ObjectId last_id;
  uint64_t last_off = 0;
  bool is_envelope = false;
  for (auto& [id, s] : *stored_) {
    if (s.meta.where.pack == pack && s.meta.where.offset >= last_off) {
      last_off = s.meta.where.offset;
      last_id = id;
      is_envelope = false;
    }
    for (const StoredEnvelope& e : s.later) {
      if (e.where.pack == pack && e.where.offset >= last_off) {
        last_off = e.where.offset;
        last_id = id;
        is_envelope = true;
      }
    }
  }
  std::set<ObjectId> may_lose;
  if (!is_envelope) may_lose.insert(last_id);
  for (bool rebuild : {false, true}) {
    Check("last record's length", [&](const std::string& dir) { FlipByte(dir + "/packs/" + PackFileName(pack), last_off + 10, 0x20); },
          may_lose, rebuild, is_envelope ? &last_id : nullptr);
  }
}

// A real torn append is still cut, and only it.
TEST_F(CorruptionMatrix, ATornAppendIsStillCutAndOnlyIt) {
  TempDir t;
  std::filesystem::copy(base_->path(), t.path(), std::filesystem::copy_options::recursive);
  const std::string path = t.path() + "/vault/packs/" + PackFileName(LastPack());
  uint64_t size = std::filesystem::file_size(path);
  Append(path, FrameRecord(RecordType::kMessage, std::string(500, 'x')).substr(0, 200));
  OpenReport report;
  auto v = Vault::Open(t.path() + "/vault", Keys(t.path()), Options(), &report);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(report.torn_bytes_dropped, 200u);
  EXPECT_EQ(std::filesystem::file_size(path), size);
  for (auto& [id, s] : *stored_) EXPECT_EQ(*(*v)->ReadMessage(id), s.raw);
}

// Splicing without the key: whole records removed (CRCs untouched, each frame is whole), the
// SEAL's count and hash recomputed, blocks swapped, a record replayed. Every one is found by
// rebuild and by verify; before keyed records, each came out clean.
class Splice : public CorruptionMatrix {
 protected:
  struct Frame {
    uint64_t offset, length;
    uint8_t type;
  };
  static std::vector<Frame> Frames(const std::string& pack) {
    std::vector<Frame> out;
    for (uint64_t at = kPackHeaderSize; at < pack.size();) {
      Result<RawRecord> r = ParseFramedRecord(std::string_view(pack).substr(at), at);
      if (!r.ok()) break;
      out.push_back({at, r->length, static_cast<uint8_t>(r->type)});
      at += r->length;
    }
    return out;
  }
  // Rewrites a frame's body in place and recomputes its CRC, keeping the rest of its trailer.
  static void PatchBody(std::string* pack, const Frame& f, const std::string& body) {
    ASSERT_EQ(body.size(), DecodeU32(pack->data() + f.offset + 8));
    pack->replace(f.offset + kRecordHeaderSize, body.size(), body);
    EncodeU32(pack->data() + f.offset + f.length - 4, Crc32c(std::string_view(*pack).substr(f.offset, f.length - 4)));
  }
  // Makes a sealed pack's SEAL agree with its (changed) contents again.
  static void Reseal(std::string* pack) {
    std::vector<Frame> fr = Frames(*pack);
    ASSERT_FALSE(fr.empty());
    ASSERT_EQ(fr.back().type, static_cast<uint8_t>(RecordType::kSeal));
    SealRecord seal{fr.size() - 1, Sha256Of(std::string_view(*pack).substr(0, fr.back().offset))};
    PatchBody(pack, fr.back(), EncodeSealBody(seal));
  }
  void ExpectFound(const std::string& label, const std::function<void(std::string& vault_dir)>& tamper) {
    SCOPED_TRACE(label);
    TempDir t;
    std::filesystem::copy(base_->path(), t.path(), std::filesystem::copy_options::recursive);
    std::string dir = t.path() + "/vault";
    tamper(dir);
    if (HasFatalFailure()) return;
    Result<OpenReport> r = Vault::Rebuild(dir, Keys(t.path()), Options());
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_FALSE(r->warnings.empty()) << "rebuild noticed nothing";
    auto v = Vault::Open(dir, Keys(t.path()), Options());
    ASSERT_TRUE(v.ok());
    Result<VerifyReport> vr = (*v)->Verify();
    ASSERT_TRUE(vr.ok());
    EXPECT_FALSE(vr->ok()) << "verify found nothing";
  }
  static std::string PackPathIn(const std::string& dir, uint64_t n) { return dir + "/packs/" + PackFileName(n); }
  // The frames of one compression block (a message starting one, and its members), by index.
  static std::pair<size_t, size_t> ABlock(const std::vector<Frame>& fr, const std::string& pack, size_t skip) {
    for (size_t i = 0; i < fr.size(); ++i) {
      if (fr[i].type != static_cast<uint8_t>(RecordType::kMessage)) continue;
      if (DecodeU32(pack.data() + fr[i].offset + kRecordHeaderSize + kMessageRecordFixed - 4) != 0) continue;
      size_t j = i + 1;
      while (j < fr.size() && fr[j].type == static_cast<uint8_t>(RecordType::kMessage) &&
             DecodeU32(pack.data() + fr[j].offset + kRecordHeaderSize + kMessageRecordFixed - 4) != 0) {
        ++j;
      }
      if (skip-- == 0) return {i, j};
    }
    ADD_FAILURE() << "no such block";
    return {0, 0};
  }
};

// (Cutting records off the end of the open pack is a truncation: the catalog catches it
// (APackShorterThanTheCatalogKnew...); the packs alone cannot, which the offsite manifest will.)
TEST_F(Splice, RemovingAWholeBlockAndResealingIsFound) {
  ExpectFound("block removed, seal recomputed", [](std::string& dir) {
    std::string path = PackPathIn(dir, 1);
    std::string pack = testing::ReadFile(path);
    std::vector<Frame> fr = Frames(pack);
    auto [i, j] = ABlock(fr, pack, 1);
    pack.erase(fr[i].offset, fr[j - 1].offset + fr[j - 1].length - fr[i].offset);
    Reseal(&pack);
    testing::WriteFile(path, pack);
  });
}

TEST_F(Splice, RemovingAnEnvelopeFromASealedPackAndResealingIsFound) {
  ExpectFound("envelope removed, seal recomputed", [](std::string& dir) {
    for (uint64_t n = 1; n < LastPack(); ++n) {
      std::string path = PackPathIn(dir, n);
      std::string pack = testing::ReadFile(path);
      std::vector<Frame> fr = Frames(pack);
      for (const Frame& f : fr) {
        if (f.type != static_cast<uint8_t>(RecordType::kEnvelope)) continue;
        pack.erase(f.offset, f.length);
        Reseal(&pack);
        testing::WriteFile(path, pack);
        return;
      }
    }
    FAIL() << "no envelope record in a sealed pack";
  });
}

TEST_F(Splice, SwappingTwoBlocksIsFound) {
  ExpectFound("blocks swapped", [](std::string& dir) {
    std::string path = PackPathIn(dir, 1);
    std::string pack = testing::ReadFile(path);
    std::vector<Frame> fr = Frames(pack);
    // The first two blocks change places (whatever lies between them stays): A M B -> B M A.
    auto [a0, a1] = ABlock(fr, pack, 0);
    auto [b0, b1] = ABlock(fr, pack, 1);
    if (HasFailure()) return;
    const uint64_t a_begin = fr[a0].offset, a_end = fr[a1 - 1].offset + fr[a1 - 1].length;
    const uint64_t b_begin = fr[b0].offset, b_end = fr[b1 - 1].offset + fr[b1 - 1].length;
    std::string a = pack.substr(a_begin, a_end - a_begin), m = pack.substr(a_end, b_begin - a_end),
                b = pack.substr(b_begin, b_end - b_begin);
    pack.replace(a_begin, b_end - a_begin, b + m + a);
    Reseal(&pack);
    testing::WriteFile(path, pack);
  });
}

TEST_F(Splice, ReplayingAnEnvelopeRecordIsFound) {
  ExpectFound("envelope replayed at the end", [](std::string& dir) {
    for (uint64_t n = 1; n <= LastPack(); ++n) {
      std::string pack = testing::ReadFile(PackPathIn(dir, n));
      for (const Frame& f : Frames(pack)) {
        if (f.type != static_cast<uint8_t>(RecordType::kEnvelope)) continue;
        Append(PackPathIn(dir, LastPack()), pack.substr(f.offset, f.length));
        return;
      }
    }
    FAIL() << "no envelope record";
  });
}

// Bytes cut off the end of a pack the catalog knew longer: reported, the pack closed (nothing
// appended at the shorter size), and verify names the messages that were in the lost bytes.
TEST_F(CorruptionMatrix, APackShorterThanTheCatalogKnewIsReportedAndNotAppendedTo) {
  TempDir t;
  std::filesystem::copy(base_->path(), t.path(), std::filesystem::copy_options::recursive);
  uint64_t pack = LastPack();
  const std::string path = t.path() + "/vault/packs/" + PackFileName(pack);
  auto [victim, s] = MidBlockVictim(pack);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(s.meta.where.offset)), 0);
  uint64_t cut_size = std::filesystem::file_size(path);
  OpenReport report;
  auto v = Vault::Open(t.path() + "/vault", Keys(t.path()), Options(), &report);
  ASSERT_TRUE(v.ok());
  bool warned = false;
  for (const std::string& w : report.warnings) warned |= w.find("shorter than") != std::string::npos;
  EXPECT_TRUE(warned);
  Result<IngestResult> r = (*v)->Ingest(SimpleMessage("new", "new", "<new@x>"), Env("s"));
  ASSERT_TRUE(r.ok());
  EXPECT_NE((*v)->GetMeta(r->id)->where.pack, pack) << "appended to a pack that lost bytes";
  EXPECT_EQ(std::filesystem::file_size(path), cut_size);
  Result<VerifyReport> vr = (*v)->Verify();
  ASSERT_TRUE(vr.ok());
  std::set<std::string> named = IdsIn(vr->problems);
  for (auto& [id, st] : *stored_) {
    bool gone = st.meta.where.pack == pack && st.meta.where.offset >= s.meta.where.offset;
    for (const StoredEnvelope& e : st.later) gone |= e.where.pack == pack && e.where.offset >= s.meta.where.offset;
    EXPECT_EQ(named.count(id.Hex()) > 0, gone) << id.Hex();
  }
}

// A pack closed by damage is not reported as "sealed without a hash" on every verify.
TEST_F(CorruptionMatrix, DamageDoesNotMarkAPackSealed) {
  TempDir t;
  std::filesystem::copy(base_->path(), t.path(), std::filesystem::copy_options::recursive);
  Append(t.path() + "/vault/packs/" + PackFileName(LastPack()), std::string(64, '\0'));
  auto v = Vault::Open(t.path() + "/vault", Keys(t.path()), Options());
  ASSERT_TRUE(v.ok());
  Result<VerifyReport> vr = (*v)->Verify();
  ASSERT_TRUE(vr.ok());
  for (const std::string& p : vr->problems) EXPECT_EQ(p.find("checksum recorded when it was sealed"), std::string::npos) << p;
}

}  // namespace
}  // namespace mailvault

namespace mailvault {
namespace {

// Fills the file system at dir until it refuses a byte, then gives `leave` bytes back, so the
// next appends pass the free-space check and meet the full disk in the middle of a write.
std::string FillDisk(const std::string& dir, off_t leave) {
  std::string path = dir + "/filler";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  EXPECT_GE(fd, 0);
  std::string chunk(64 << 10, 'f');
  for (size_t n = chunk.size(); n > 0;) {
    ssize_t w = ::write(fd, chunk.data(), n);
    if (w < 0) {
      if (errno != ENOSPC) ADD_FAILURE() << "filler: " << strerror(errno);
      n /= 2;  // the last blocks, in smaller writes
    }
  }
  off_t size = ::lseek(fd, 0, SEEK_END);
  EXPECT_EQ(::ftruncate(fd, std::max<off_t>(0, size - leave)), 0);
  ::fsync(fd);
  ::close(fd);
  return path;
}

// A full disk (ENOSPC on the pack append, the SEAL, the new pack and the catalog, whichever
// comes first) must not latch: once space is freed the same open vault takes mail again, and
// health() says it was failing meanwhile. Nothing acknowledged is lost.
TEST(VaultFaults, AFullDiskDoesNotLatchAndHealthTellsMeanwhile) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root (CI runs as root)";
  InitMessageParsing();
  TempDir mnt;
  ASSERT_EQ(::mount("tmpfs", mnt.path().c_str(), "tmpfs", 0, "size=6m"), 0) << strerror(errno);
  VaultOptions o;
  o.auto_train_messages = 0;
  o.min_free_bytes = 0;  // let the appends themselves meet the full disk
  o.seal_bytes = 96 << 10;
  KeySource keys;
  keys.key_file = mnt / "master.key";
  bool created;
  ASSERT_TRUE(Vault::Init(mnt / "v", keys, o, &created).ok());
  std::map<ObjectId, std::string> acked;
  {
    auto v = Vault::Open(mnt / "v", keys, o);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    std::mt19937 rng(3);
    int n = 0;
    auto next_message = [&] {
      std::string body;
      for (int k = 0; k < 300; ++k) body += std::to_string(rng()) + " ";
      std::string tag = std::to_string(n++);
      return SimpleMessage("fault " + tag, body, "<fault" + tag + "@x>");
    };
    int refused_while_appending = 0;  // past the free-space check: the append itself failed
    for (int round = 0; round < 4; ++round) {
      SCOPED_TRACE("round " + std::to_string(round));
      for (int i = 0; i < 20 + round * 7; ++i) {
        std::string raw = next_message();
        Result<IngestResult> r = (*v)->Ingest(raw, Env("s"));
        ASSERT_TRUE(r.ok()) << r.error().ToString();
        acked[r->id] = raw;
      }
      std::string filler = FillDisk(mnt.path(), (round + 1) * (round + 1) * (8 << 10));
      int refused = 0;
      // Bursts: each message alone passes the free-space check, a group together does not.
      for (int burst = 0; burst < 40 && refused < 3; ++burst) {
        std::vector<std::pair<std::string, std::future<Result<IngestResult>>>> f;
        for (int i = 0; i < 24; ++i) {
          std::string raw = next_message();
          auto fut = (*v)->IngestAsync(raw, Env("s"));
          f.emplace_back(std::move(raw), std::move(fut));
        }
        for (auto& [raw, fut] : f) {
          Result<IngestResult> r = fut.get();
          if (r.ok()) {
            acked[r->id] = raw;  // it fit
          } else {
            ++refused;
            if (r.error().message().find("nearly full") == std::string::npos) ++refused_while_appending;
          }
        }
      }
      EXPECT_GT(refused, 0);
      // A later, smaller group may have fit and cleared the state meanwhile; with the disk
      // full to the last byte nothing can, and health must say so.
      std::string filler2 = FillDisk(mnt.path() + "/v", 0);
      EXPECT_FALSE((*v)->Ingest(next_message(), Env("s")).ok());
      VaultHealth h = (*v)->health();
      EXPECT_FALSE(h.ok);
      EXPECT_NE(h.error.find("No space left"), std::string::npos) << h.error;
      const uint64_t recoveries = h.recoveries;
      ASSERT_EQ(::unlink(filler.c_str()), 0);
      ASSERT_EQ(::unlink(filler2.c_str()), 0);
      // Space is back: the same vault takes mail again, without a reopen. The first attempt
      // may come within the retry interval of the last failure.
      Result<IngestResult> r = Error(ErrorCode::kIoError, "not tried");
      for (int i = 0; i < 50 && !r.ok(); ++i) {
        std::string raw = next_message();
        r = (*v)->Ingest(raw, Env("s"));
        if (r.ok()) acked[r->id] = raw;
        else std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      ASSERT_TRUE(r.ok()) << "still latched: " << r.error().ToString();
      EXPECT_TRUE((*v)->health().ok);
      EXPECT_GT((*v)->health().recoveries, recoveries);
    }
    EXPECT_GT(refused_while_appending, 0) << "no round reached the append path";
    for (auto& [id, raw] : acked) EXPECT_EQ(*(*v)->ReadMessage(id), raw);
  }
  auto v = Vault::Open(mnt / "v", keys, o);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  for (auto& [id, raw] : acked) EXPECT_EQ(*(*v)->ReadMessage(id), raw);
  Result<VerifyReport> vr = (*v)->Verify();
  ASSERT_TRUE(vr.ok());
  EXPECT_TRUE(vr->ok()) << vr->problems[0];
  v->reset();
  ::umount(mnt.path().c_str());
}

}  // namespace
}  // namespace mailvault
