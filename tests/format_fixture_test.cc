// Pins the on-disk formats of docs/formats.md byte for byte against a checked-in vault
// (tests/fixtures/format): the key file, the VAULT file and a pack holding one message record
// and one envelope record. Reads the pack with nothing but the documented layout and the
// primitives (AES-256-GCM, HKDF, zstd), not with the vault's own decoders.
//
// To regenerate after a deliberate format change: MAILVAULT_REGENERATE_FIXTURES=1, then review
// the diff and update docs/formats.md.
#define ZSTD_STATIC_LINKING_ONLY
#include <gtest/gtest.h>
#include <zstd.h>

#include <filesystem>

#include "core/bytes.h"
#include "core/envelope.h"
#include "core/fingerprint.h"
#include "core/message.h"
#include "policy/store.h"
#include "tests/test_util.h"
#include "vault/crypto.h"
#include "vault/vault.h"

namespace mailvault {
namespace {

const std::string kDir = std::string(MAILVAULT_FIXTURES) + "/format";

Envelope FirstEnvelope() {
  Envelope e;
  e.capture_time_us = 1700000000000000;
  e.source = "fixture";
  e.recipients = {"alice@example.com"};
  e.custodian = "alice@example.com";
  return e;
}
Envelope SecondEnvelope() {
  Envelope e;
  e.capture_time_us = 1700000060000000;
  e.source = "fixture";
  e.recipients = {"bob@example.com"};
  e.sender = "carol@example.com";
  return e;
}

void Regenerate() {
  namespace fs = std::filesystem;
  testing::TempDir t;
  KeySource keys;
  keys.key_file = t / "master.key";
  VaultOptions options;
  options.auto_train_messages = 0;
  bool created;
  ASSERT_TRUE(Vault::Init(t / "vault", keys, options, &created).ok());
  std::string eml = testing::ReadFile(kDir + "/message.eml");
  {
    auto v = Vault::Open(t / "vault", keys, options);
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE((*v)->Ingest(eml, FirstEnvelope()).ok());
    ASSERT_TRUE((*v)->Ingest(eml, SecondEnvelope()).ok());
  }
  fs::copy_file(t / "master.key", kDir + "/master.key", fs::copy_options::overwrite_existing);
  fs::copy_file(t / "vault/VAULT", kDir + "/VAULT", fs::copy_options::overwrite_existing);
  fs::copy_file(t / "vault/packs/00000001.pack", kDir + "/00000001.pack", fs::copy_options::overwrite_existing);
}

TEST(FormatFixtureTest, KeyFileVaultFileAndPackReadByteForByte) {
  InitMessageParsing();
  if (std::getenv("MAILVAULT_REGENERATE_FIXTURES")) Regenerate();
  const std::string eml = testing::ReadFile(kDir + "/message.eml");
  ASSERT_FALSE(eml.empty());

  // Key file: magic line, comments, "key: " + base64 of 32 bytes.
  std::string keyfile = testing::ReadFile(kDir + "/master.key");
  ASSERT_EQ(keyfile.rfind("mailvault-key v1\n", 0), 0u);
  size_t kpos = keyfile.find("\nkey: ");
  ASSERT_NE(kpos, std::string::npos);
  std::string master_raw;
  ASSERT_TRUE(Base64Decode(keyfile.substr(kpos + 6, keyfile.size() - kpos - 7), &master_raw));
  ASSERT_EQ(master_raw.size(), 32u);
  EXPECT_EQ(keyfile.back(), '\n');
  SecretKey master(master_raw);

  // VAULT file.
  std::string vf = testing::ReadFile(kDir + "/VAULT");
  ASSERT_EQ(vf.rfind("mailvault-vault v1\nid: ", 0), 0u);
  std::string vault_id;
  ASSERT_TRUE(HexDecode(vf.substr(23, 32), &vault_id));
  EXPECT_EQ(vf.substr(55), "\nkey-check: " + VaultKeys::CheckValue(master, vault_id) + "\nkey: key-file\n");

  // Pack header: 48 bytes.
  std::string pack = testing::ReadFile(kDir + "/00000001.pack");
  ASSERT_GE(pack.size(), 48u);
  EXPECT_EQ(pack.substr(0, 8), std::string("MVPACK\r\n", 8));
  EXPECT_EQ(DecodeU32(&pack[8]), 1u);    // format version
  EXPECT_EQ(DecodeU32(&pack[12]), 0u);   // flags
  EXPECT_EQ(DecodeU64(&pack[16]), 1u);   // pack number
  EXPECT_EQ(pack.substr(24, 16), vault_id);
  EXPECT_EQ(DecodeU32(&pack[40]), 0u);   // reserved
  EXPECT_EQ(DecodeU32(&pack[44]), Crc32c(pack.substr(0, 44)));

  // Record 1 at 48: MESSAGE.
  size_t at = 48;
  EXPECT_EQ(pack.substr(at, 4), "MVR1");
  EXPECT_EQ(pack[at + 4], 1);  // type MESSAGE
  EXPECT_EQ(pack[at + 5], 0);  // flags
  EXPECT_EQ(DecodeU32(&pack[at + 4]) >> 16, 0u);  // reserved
  uint32_t len = DecodeU32(&pack[at + 8]);
  std::string body = pack.substr(at + 12, len);
  EXPECT_EQ(DecodeU32(&pack[at + 12 + len]), Crc32c(pack.substr(at, 12 + len)));
  std::string id = body.substr(0, 32);
  EXPECT_EQ(id, Sha256Of(eml));
  EXPECT_EQ(DecodeU32(&body[32]), 0u);  // no dictionary
  EXPECT_EQ(DecodeU64(&body[36]), eml.size());
  EXPECT_EQ(DecodeU32(&body[44]), 0u);  // first in its compression block
  std::string wrapped = body.substr(48, 60), box = body.substr(108);

  SecretKey wrap = DeriveKey(master, vault_id, "mailvault/v1/wrap");
  Result<std::string> dk = Open(wrap, "mailvault data key v1" + id, wrapped);
  ASSERT_TRUE(dk.ok());
  ASSERT_EQ(dk->size(), 32u);
  std::string aad = "mailvault message v1" + id + body.substr(32, 16);
  Result<std::string> plain = Open(SecretKey(*dk), aad, box);
  ASSERT_TRUE(plain.ok());
  // The plaintext: varint envelope length, then this message's segment of its block's zstd
  // stream (magicless frame, flushed after the message, never ended).
  ByteReader r(*plain);
  uint64_t env_len = 0;
  ASSERT_TRUE(r.GetVarint(&env_len));
  std::string_view frame = r.rest();
  EXPECT_NE(frame.substr(0, 4), std::string_view("\x28\xb5\x2f\xfd", 4));  // magicless
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ZSTD_DCtx_setParameter(dctx, ZSTD_d_format, ZSTD_f_zstd1_magicless);
  std::string out(env_len + eml.size(), '\0');
  ZSTD_inBuffer in{frame.data(), frame.size(), 0};
  ZSTD_outBuffer o{out.data(), out.size(), 0};
  size_t rc = ZSTD_decompressStream(dctx, &o, &in);
  ZSTD_freeDCtx(dctx);
  ASSERT_FALSE(ZSTD_isError(rc)) << ZSTD_getErrorName(rc);
  ASSERT_EQ(in.pos, in.size);
  ASSERT_EQ(o.pos, out.size());
  // The envelope encoding: version 1, capture time (u64 LE), source, recipients, custodian tag.
  std::string want_env = std::string("\x01", 1) + std::string("\x00\x40\x1e\x18\x24\x0a\x06\x00", 8) + "\x07" "fixture" +
                         "\x01\x11" "alice@example.com" + "\x01\x11" "alice@example.com";
  EXPECT_EQ(want_env, FirstEnvelope().Encode());
  EXPECT_EQ(out.substr(0, env_len), want_env);
  EXPECT_EQ(out.substr(env_len), eml);

  // Record 2: ENVELOPE, sealed under the same data key.
  at += 12 + len + 4;
  EXPECT_EQ(pack.substr(at, 4), "MVR1");
  EXPECT_EQ(pack[at + 4], 2);
  uint32_t len2 = DecodeU32(&pack[at + 8]);
  std::string body2 = pack.substr(at + 12, len2);
  EXPECT_EQ(DecodeU32(&pack[at + 12 + len2]), Crc32c(pack.substr(at, 12 + len2)));
  EXPECT_EQ(body2.substr(0, 32), id);
  Result<std::string> env2 = Open(SecretKey(*dk), "mailvault envelope v1" + id, body2.substr(32));
  ASSERT_TRUE(env2.ok());
  EXPECT_EQ(*env2, SecondEnvelope().Encode());
  EXPECT_EQ(at + 12 + len2 + 4, pack.size());  // nothing else

  // And the vault itself reads the fixture (the catalog is rebuilt from the pack alone).
  testing::TempDir t;
  std::filesystem::create_directories(t / "vault/packs");
  std::filesystem::copy_file(kDir + "/VAULT", t / "vault/VAULT");
  std::filesystem::copy_file(kDir + "/00000001.pack", t / "vault/packs/00000001.pack");
  std::filesystem::copy_file(kDir + "/master.key", t / "master.key");
  std::filesystem::permissions(t / "master.key", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  KeySource keys;
  keys.key_file = t / "master.key";
  VaultOptions options;
  auto v = Vault::Open(t / "vault", keys, options);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  EXPECT_EQ(*(*v)->ReadMessage(ObjectId::FromBytes(id)), eml);
  auto envs = (*v)->GetEnvelopes(ObjectId::FromBytes(id));
  ASSERT_TRUE(envs.ok());
  ASSERT_EQ(envs->size(), 2u);
  EXPECT_EQ((*envs)[1].envelope, SecondEnvelope());
}

// The stored policy set (docs/formats.md, "Policy set": the value of P/set and P/v/<version>),
// pinned by a checked-in file: every field read as documented, and written back the same.
TEST(FormatFixtureTest, StoredPolicySetReadsAsDocumentedAndWritesBackTheSame) {
  nlohmann::json j = nlohmann::json::parse(testing::ReadFile(std::string(MAILVAULT_FIXTURES) + "/policy/set-v1.json"));
  Result<policy::PolicySet> s = policy::PolicySet::FromJson(j);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_EQ(s->version, 2u);
  EXPECT_EQ(s->saved, 1765065600);
  EXPECT_EQ(s->saved_by, "carol");
  ASSERT_EQ(s->policies.size(), 4u);
  const policy::Policy& finance = s->policies[1];
  EXPECT_EQ(finance.name, "finance");
  EXPECT_EQ(finance.kind, policy::Kind::kRetention);
  EXPECT_EQ(finance.keep.unit, policy::Period::kMonths);
  EXPECT_EQ(finance.keep.count, 18u);
  EXPECT_EQ(finance.from, policy::From::kCapture);
  EXPECT_EQ(finance.action, policy::Action::kReview);
  EXPECT_EQ(finance.weight, 5);
  EXPECT_FALSE(finance.retroactive);
  EXPECT_EQ(finance.effective, 1765065600);
  EXPECT_EQ(finance.custodians, std::vector<std::string>{"cfo@corp.example"});
  EXPECT_EQ(s->policies[2].case_id, "4711");
  EXPECT_EQ(s->policies[2].query, "date:2025-01-01..2026-06-30");
  EXPECT_EQ(s->policies[3].tag, "spam");
  EXPECT_EQ(s->ToJson(), j);
}

}  // namespace
}  // namespace mailvault
