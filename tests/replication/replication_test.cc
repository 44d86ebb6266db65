// The parts of replication that need no server: Signature Version 4 against AWS's own published
// example, the S3 XML answers (with the limits), URLs and the config section, and the offsite
// formats (docs/replication.md), including the checked-in fixtures read with nothing but the
// document and the primitives (HMAC-SHA256, AES-256-GCM).
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/bytes.h"
#include "core/fingerprint.h"
#include "replication/config.h"
#include "replication/formats.h"
#include "replication/s3_store.h"
#include "replication/s3_xml.h"
#include "replication/shipper.h"
#include "vault/layout.h"
#include "tests/test_util.h"

namespace mailvault::replication {
namespace {

using mailvault::testing::ReadFile;
using mailvault::testing::TempDir;
using mailvault::testing::WriteFile;

// AWS's worked example "GET Object" in "Signature Calculations for the Authorization Header:
// Transferring Payload in a Single Chunk" (Amazon S3 API reference): the expected signature is
// the document's, not ours.
TEST(SigV4Test, MatchesAwsPublishedGetObjectExample) {
  SigV4Request r;
  r.method = "GET";
  r.canonical_uri = "/test.txt";
  r.canonical_query = "";
  r.host_header = "examplebucket.s3.amazonaws.com";
  r.payload_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  r.amz_date = "20130524T000000Z";
  r.region = "us-east-1";
  r.extra_signed_headers = "range:bytes=0-9\n";
  r.extra_signed_names = ";range";
  S3Credentials c{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"};
  EXPECT_EQ(SignV4(r, c),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4Test, UriEncodingIsRfc3986) {
  EXPECT_EQ(UriEncode("a b/c~d_e.f-g+h", true), "a%20b/c~d_e.f-g%2Bh");
  EXPECT_EQ(UriEncode("a/b", false), "a%2Fb");
  EXPECT_EQ(UriEncode("\xc3\xa9", false), "%C3%A9");
}

// Offsite replication ships exactly the vault's truth (vault/layout.h): a new truth entry fails
// here until the shipper copies it.
TEST(OffsiteLayoutTest, ShipsExactlyTheTruthEntriesOfTheVaultLayout) {
  std::vector<std::string> truth;
  for (const layout::Entry& e : layout::kEntries) {
    if (e.kind == layout::Kind::kTruth) truth.push_back(e.name);
  }
  std::vector<std::string> shipped = ShippedEntries();
  std::sort(truth.begin(), truth.end());
  std::sort(shipped.begin(), shipped.end());
  EXPECT_EQ(shipped, truth);
}

TEST(S3UrlTest, ParsesAndRefusesPlainHttpOffLoopback) {
  Result<S3Config> c = ParseS3Url("s3://127.0.0.1:7480/mv-dr", true);
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_FALSE(c->tls);
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->port, 7480);
  EXPECT_EQ(c->bucket, "mv-dr");
  Result<S3Config> tls = ParseS3Url("s3://s3.example.com/bucket-1", false);
  ASSERT_TRUE(tls.ok());
  EXPECT_EQ(tls->port, 443);
  Result<S3Config> clear = ParseS3Url("s3://s3.example.com/bucket-1", true);
  ASSERT_FALSE(clear.ok());
  EXPECT_NE(clear.error().message().find("loopback"), std::string::npos);
  EXPECT_FALSE(ParseS3Url("http://h/b", false).ok());
  EXPECT_FALSE(ParseS3Url("s3://h:99999/bucket", false).ok());
  EXPECT_FALSE(ParseS3Url("s3://h/", false).ok());
  EXPECT_FALSE(ParseS3Url("s3://h/Upper_Case", false).ok());
}

TEST(S3CredentialsTest, OneLineTwoWordsAndPrivate) {
  TempDir d;
  std::string p = d.path() + "/cred";
  WriteFile(p, "AKIDEXAMPLE secret/with+chars\n");
  ASSERT_EQ(::chmod(p.c_str(), 0600), 0);
  Result<S3Credentials> c = ReadS3Credentials(p);
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(c->secret_access_key, "secret/with+chars");
  ASSERT_EQ(::chmod(p.c_str(), 0644), 0);
  Result<S3Credentials> loose = ReadS3Credentials(p);
  ASSERT_FALSE(loose.ok());
  EXPECT_NE(loose.error().message().find("chmod 600"), std::string::npos);
  WriteFile(p, "only-one-word\n");
  ASSERT_EQ(::chmod(p.c_str(), 0600), 0);
  EXPECT_FALSE(ReadS3Credentials(p).ok());
}

TEST(S3XmlTest, ListingsErrorsAndParts) {
  const std::string list = R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>2</KeyCount>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok&amp;1</NextContinuationToken>
<Contents><Key>packs/00000001.g0.0000000000000000</Key><Size>123</Size></Contents>
<Contents><Key>a&amp;b</Key><Size>7</Size></Contents></ListBucketResult>)";
  Result<S3ListPage> page = ParseListObjects(list);
  ASSERT_TRUE(page.ok()) << page.error().ToString();
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].key, "packs/00000001.g0.0000000000000000");
  EXPECT_EQ(page->items[0].size, 123u);
  EXPECT_EQ(page->items[1].key, "a&b");
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_token, "tok&1");
  // Truncated without a token would loop for ever: refused.
  EXPECT_FALSE(ParseListObjects("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>").ok());
  EXPECT_FALSE(ParseListObjects("<Error/>").ok());
  EXPECT_FALSE(ParseListObjects(std::string(kMaxS3ResponseBytes + 1, ' ')).ok());

  S3ErrorBody e = ParseS3Error(
      "<?xml version=\"1.0\"?><Error><Code>RequestTimeTooSkewed</Code><Message>The difference is too large.</Message></Error>");
  EXPECT_EQ(e.code, "RequestTimeTooSkewed");
  EXPECT_EQ(e.message, "The difference is too large.");
  EXPECT_EQ(ParseS3Error("not xml").code, "");

  Result<S3PartsPage> parts = ParseListParts(
      "<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>2</PartNumber><ETag>&quot;ABCDEF&quot;</ETag>"
      "<Size>5242880</Size></Part><Part><PartNumber>0</PartNumber></Part></ListPartsResult>");
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->parts.size(), 1u);  // part 0 is not a part
  EXPECT_EQ(parts->parts[0].number, 2);
  EXPECT_EQ(parts->parts[0].etag, "abcdef");
  EXPECT_EQ(parts->parts[0].size, 5242880u);

  Result<S3ListPage> versions = ParseListVersions(
      "<ListVersionsResult><IsTruncated>false</IsTruncated><Version><Key>k</Key><VersionId>v1</VersionId><Size>3</Size>"
      "</Version><DeleteMarker><Key>k</Key><VersionId>v2</VersionId></DeleteMarker></ListVersionsResult>");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->items.size(), 2u);
  EXPECT_EQ(versions->items[1].version_id, "v2");
  EXPECT_TRUE(versions->items[1].delete_marker);

  EXPECT_EQ(ParseObjectLockSeconds("<ObjectLockConfiguration><Rule><DefaultRetention><Mode>COMPLIANCE</Mode>"
                                   "<Days>30</Days></DefaultRetention></Rule></ObjectLockConfiguration>"),
            30 * 86400);
  EXPECT_EQ(ParseObjectLockSeconds("<ObjectLockConfiguration/>"), 0);
  EXPECT_EQ(XmlUnescape("&#x41;&#66;&bogus;&"), "AB&bogus;&");
}

TEST(OffsiteConfigTest, SectionsKeysAndErrors) {
  TempDir d;
  const std::string conf = d.path() + "/c.conf";
  WriteFile(conf,
            "vault = /x\n[offsite s3-dr]\nurl = s3://127.0.0.1:7480/mv-dr\nno-tls = yes\nregion = eu-west-1\n"
            "credentials-file = /etc/c\nbwlimit = 20M\nactive-hours = 19:00-07:00\nmax-unshipped-age = 30\n"
            "[offsite sftp-branch]\nurl = sftp://backup@127.0.0.1:2222/srv/vault\nidentity-file = /k\nknown-hosts = /kh\n");
  auto t = LoadOffsiteTargets(conf);
  ASSERT_TRUE(t.ok()) << t.error().ToString();
  ASSERT_EQ(t->size(), 2u);
  const OffsiteTargetConfig& s3 = t->at("s3-dr");
  EXPECT_FALSE(s3.sftp);
  EXPECT_EQ(s3.bwlimit, 20u << 20);
  EXPECT_EQ(s3.region, "eu-west-1");
  EXPECT_EQ(s3.max_unshipped_age_seconds, 30);
  EXPECT_TRUE(s3.ActiveAt(19 * 60));
  EXPECT_TRUE(s3.ActiveAt(3 * 60));
  EXPECT_FALSE(s3.ActiveAt(7 * 60));
  EXPECT_FALSE(s3.ActiveAt(12 * 60));
  EXPECT_TRUE(t->at("sftp-branch").sftp);

  WriteFile(conf, "[offsite x]\nurl = sftp://u@h/p\n");
  auto no_pin = LoadOffsiteTargets(conf);
  ASSERT_FALSE(no_pin.ok());
  EXPECT_NE(no_pin.error().message().find("known-hosts"), std::string::npos);
  WriteFile(conf, "[offsite x]\nurl = s3://h/bucket\ncredentials-file = /c\nbogus = 1\n");
  auto unknown = LoadOffsiteTargets(conf);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find(":4:"), std::string::npos) << unknown.error().message();
  WriteFile(conf, "[offsite x]\nurl = s3://h/bucket\ncredentials-file = /c\nactive-hours = 25:00-01:00\n");
  EXPECT_FALSE(LoadOffsiteTargets(conf).ok());
  EXPECT_FALSE(ParseByteRate("0").ok());
  EXPECT_FALSE(ParseByteRate("5X").ok());
  EXPECT_EQ(*ParseByteRate("512K"), 512u << 10);
}

Manifest SampleManifest() {
  Manifest m;
  m.vault = "00112233445566778899aabbccddeeff";
  m.target = "s3-dr";
  m.seq = 7;
  m.prev = std::string(64, 'a');
  m.time_us = 1765000000000000;
  m.identity.push_back({"VAULT", 120, std::string(64, '1')});
  ShippedPack p;
  p.number = 1;
  p.generation = 2;
  p.sealed = true;
  p.segments.push_back({SegmentName(1, 2, 0), 100, std::string(64, '2')});
  p.segments.push_back({SegmentName(1, 2, 100), 50, std::string(64, '3')});
  p.bytes = 150;
  m.packs.push_back(p);
  m.state.generation = 42;
  m.state.objects.push_back({StateObjectName(40, true), 300, std::string(64, '4')});
  m.state.objects.push_back({StateObjectName(42, false), 60, std::string(64, '5')});
  m.audit_seq = 9;
  m.audit_head = std::string(64, 'f');
  return m;
}

TEST(OffsiteFormatsTest, ManifestRoundTripsAndRefusesEditsAndOtherKeys) {
  const SecretKey key(std::string(32, 'k'));
  const std::string bytes = EncodeManifest(SampleManifest(), key);
  Result<Manifest> m = DecodeManifest(bytes, key);
  ASSERT_TRUE(m.ok()) << m.error().ToString();
  EXPECT_EQ(m->seq, 7u);
  EXPECT_EQ(m->packs.at(0).segments.at(1).name, "packs/00000001.g2.0000000000000064");
  EXPECT_EQ(m->state.objects.at(1).name, "state/000000000000002a.delta");
  EXPECT_EQ(m->audit_head, std::string(64, 'f'));
  // One byte of a size changed: the MAC fails.
  std::string edited = bytes;
  edited.replace(edited.find("\"size\": 50"), 10, "\"size\": 51");
  Result<Manifest> e = DecodeManifest(edited, key);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code(), ErrorCode::kCorruption);
  EXPECT_FALSE(DecodeManifest(bytes, SecretKey(std::string(32, 'x'))).ok());
  // Readable without the key, for status and listings.
  EXPECT_TRUE(DecodeManifestUnauthenticated(bytes).ok());
  EXPECT_FALSE(DecodeManifestUnauthenticated(std::string(kMaxManifestBytes + 1, ' ')).ok());
  // Numbers that are not whole or do not fit (fuzz_offsite: a float time_us was cast with
  // undefined behaviour) are refused as malformed.
  for (const char* bad : {"1.765e+24", "-1", "1.5", "18446744073709551616"}) {
    nlohmann::json j = nlohmann::json::parse(bytes);
    j.erase("mac");
    j["seq"] = nlohmann::json::parse(bad);
    Result<Manifest> r = DecodeManifestUnauthenticated(j.dump());
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kMalformedInput) << bad;
    if (std::string(bad) == "-1") continue;  // a valid (signed) time
    j = nlohmann::json::parse(bytes);
    j["time_us"] = nlohmann::json::parse(bad);
    EXPECT_FALSE(DecodeManifestUnauthenticated(j.dump()).ok()) << bad;
  }
  EXPECT_EQ(ManifestName(7), "manifests/0000000000000007");
  EXPECT_EQ(ManifestSeqOf("manifests/000000000000000a"), 10u);
  EXPECT_FALSE(ManifestSeqOf("manifests/xyz").has_value());
}

TEST(OffsiteFormatsTest, StateObjectRoundTripsAndIsBoundToItsName) {
  const SecretKey key(std::string(32, 's'));
  StateObject o;
  o.snapshot = false;
  o.base_generation = 40;
  o.generation = 42;
  o.records.push_back({"u/alice", std::string("\x00\x01sealed", 8)});
  o.records.push_back({"t/gone", std::nullopt});
  const std::string name = StateObjectName(42, false);
  std::string box = EncodeStateObject(o, key, name);
  EXPECT_EQ(box.find("alice"), std::string::npos) << "a key in clear offsite";
  Result<StateObject> back = DecodeStateObject(box, key, name);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_FALSE(back->snapshot);
  EXPECT_EQ(back->base_generation, 40u);
  ASSERT_EQ(back->records.size(), 2u);
  EXPECT_EQ(*back->records[0].value, std::string("\x00\x01sealed", 8));
  EXPECT_FALSE(back->records[1].value.has_value());
  // Put under another name (an old delta in a newer one's place), it does not open.
  EXPECT_FALSE(DecodeStateObject(box, key, StateObjectName(43, false)).ok());
  box[box.size() / 2] ^= 1;
  EXPECT_FALSE(DecodeStateObject(box, key, name).ok());
}

TEST(OffsiteFormatsTest, IndexSnapshotArchiveRoundTripsAndRefusesEscapingPaths) {
  TempDir d;
  std::filesystem::create_directories(d.path() + "/idx/shard0");
  WriteFile(d.path() + "/idx/shard0/postlist.glass", std::string(100000, 'p'));
  WriteFile(d.path() + "/idx/shard0/iamglass", "glass");
  WriteFile(d.path() + "/idx/meta", "m");
  std::string archive;
  ASSERT_TRUE(WriteIndexArchive(d.path() + "/idx", [&](std::string_view b) {
                archive.append(b);
                return Status::Ok();
              }).ok());
  ASSERT_TRUE(ReadIndexArchive(archive, d.path() + "/out").ok());
  EXPECT_EQ(ReadFile(d.path() + "/out/shard0/postlist.glass"), std::string(100000, 'p'));
  EXPECT_EQ(ReadFile(d.path() + "/out/shard0/iamglass"), "glass");
  EXPECT_EQ(ReadFile(d.path() + "/out/meta"), "m");
  // Cut short anywhere: refused.
  EXPECT_FALSE(ReadIndexArchive(archive.substr(0, archive.size() - 1), d.path() + "/cut").ok());
  // A path that climbs out of the index directory: refused, nothing written outside.
  for (const char* evil : {"../escaped", "/etc/escaped", "a/../../escaped", "a//b", "."}) {
    ByteWriter w;
    w.PutString(evil);
    w.PutU64(1);
    const std::string bad = "mailvault-offsite-index v1\n" + w.Take() + "x";
    Status st = ReadIndexArchive(bad, d.path() + "/evil/index");
    EXPECT_FALSE(st.ok()) << evil;
  }
  EXPECT_FALSE(std::filesystem::exists(d.path() + "/evil/escaped"));
  // A chunk opens only under its own name.
  const SecretKey key(std::string(32, 'i'));
  std::string box = SealIndexChunk("chunk bytes", key, IndexObjectName(7, 0));
  EXPECT_EQ(*OpenIndexChunk(box, key, IndexObjectName(7, 0)), "chunk bytes");
  EXPECT_FALSE(OpenIndexChunk(box, key, IndexObjectName(7, 1)).ok());
  EXPECT_EQ(IndexObjectName(7, 3), "index/0000000000000007.00000003");
  // The manifest carries it (and one without it, the fixture's, still reads).
  Manifest m = SampleManifest();
  m.index = ShippedIndex{41, 1765000000000001, 11, {{IndexObjectName(7, 0), 39, std::string(64, '6')}}};
  const SecretKey mk(std::string(32, 'k'));
  Result<Manifest> back = DecodeManifest(EncodeManifest(m, mk), mk);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  ASSERT_TRUE(back->index.has_value());
  EXPECT_EQ(back->index->change, 41u);
  EXPECT_EQ(back->index->objects.at(0).name, "index/0000000000000007.00000000");
}

std::string HmacHex(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return HexEncode(std::string_view(reinterpret_cast<char*>(out), len));
}

// The checked-in fixtures (tests/fixtures/replication/, key: 32 bytes of 'k' for the manifest,
// 's' for the state object), read as docs/replication.md describes them. MV_WRITE_FIXTURES=1
// writes them afresh (only when the format changes on purpose).
TEST(OffsiteFormatsTest, FixturesReadAsDocumented) {
  const std::string dir = std::string(MAILVAULT_FIXTURES) + "/replication";
  const SecretKey mkey(std::string(32, 'k')), skey(std::string(32, 's'));
  if (std::getenv("MV_WRITE_FIXTURES")) {
    std::filesystem::create_directories(dir);
    WriteFile(dir + "/manifest-v1.json", EncodeManifest(SampleManifest(), mkey));
    StateObject o;
    o.snapshot = true;
    o.generation = 40;
    o.records.push_back({"u/alice", "sealed-bytes"});
    WriteFile(dir + "/state-v1.snap", EncodeStateObject(o, skey, StateObjectName(40, true)));
  }
  // The manifest: JSON; "mac" is HMAC-SHA256 (hex) over the compact JSON of the other keys.
  const std::string text = ReadFile(dir + "/manifest-v1.json");
  nlohmann::json j = nlohmann::json::parse(text);
  std::string mac = j["mac"];
  j.erase("mac");
  EXPECT_EQ(HmacHex(mkey.view(), j.dump()), mac);
  EXPECT_EQ(j["format"], "mailvault-offsite-manifest v1");
  EXPECT_EQ(j["packs"][0]["segments"][1]["name"], "packs/00000001.g2.0000000000000064");
  EXPECT_EQ(j["audit"]["seq"], 9);
  EXPECT_TRUE(DecodeManifest(text, mkey).ok());
  // The state object: nonce (12) || AES-256-GCM ciphertext || tag (16), AAD = the object's name;
  // the plaintext is the magic line, kind (1 = snapshot), base and generation (u64 LE), a
  // varint count, then per record: 1 (put) or 0 (delete), string key, [string value].
  const std::string box = ReadFile(dir + "/state-v1.snap");
  ASSERT_GT(box.size(), 28u);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  std::string plain(box.size() - 28, '\0');
  int len = 0, fin = 0;
  const std::string name = "state/0000000000000028.snap";
  ASSERT_EQ(EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, skey.data(), reinterpret_cast<const unsigned char*>(box.data())), 1);
  ASSERT_EQ(EVP_DecryptUpdate(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(name.data()), int(name.size())), 1);
  ASSERT_EQ(EVP_DecryptUpdate(ctx, reinterpret_cast<unsigned char*>(plain.data()), &len,
                              reinterpret_cast<const unsigned char*>(box.data() + 12), int(box.size() - 28)), 1);
  ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, const_cast<char*>(box.data() + box.size() - 16)), 1);
  EXPECT_EQ(EVP_DecryptFinal_ex(ctx, reinterpret_cast<unsigned char*>(plain.data()) + len, &fin), 1);
  EVP_CIPHER_CTX_free(ctx);
  const std::string want = std::string("mailvault-offsite-state v1\n") + "\x01" + std::string(8, '\0') +
                           std::string("\x28\0\0\0\0\0\0\0", 8) + "\x01" + "\x01" + "\x07" + "u/alice" + "\x0c" + "sealed-bytes";
  EXPECT_EQ(plain, want);
}

}  // namespace
}  // namespace mailvault::replication
