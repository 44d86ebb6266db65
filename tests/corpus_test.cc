// The real corpus (SpamAssassin, 6,046 messages): every message stored and read back
// byte-identical, verified, and a second import of the same files adds (almost) nothing.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "capture/mail_source.h"
#include "core/message.h"
#include "tests/test_util.h"
#include "vault/vault.h"

namespace mailvault {
namespace {

uint64_t DirBytes(const std::string& dir) {
  uint64_t total = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) total += e.file_size();
  }
  return total;
}

TEST(CorpusTest, EveryMessageRoundTripsAndReimportAddsLessThanOnePercent) {
  InitMessageParsing();
  std::vector<std::string> files = testing::CorpusFiles();
  ASSERT_EQ(files.size(), 6046u) << "the SpamAssassin corpus has 6,046 messages";
  testing::TempDir tmp;
  KeySource keys;
  keys.key_file = tmp / "master.key";
  VaultOptions options;
  bool created;
  ASSERT_TRUE(Vault::Init(tmp / "vault", keys, options, &created).ok());

  auto import_all = [&](Vault& v, std::vector<ObjectId>* ids) {
    std::vector<std::future<Result<IngestResult>>> pending;
    for (const std::string& f : files) {
      std::string raw = testing::ReadFile(f);
      ASSERT_TRUE(CheckLooksLikeMail(raw).ok()) << f;
      Envelope env;
      env.source = "import:" + f;
      pending.push_back(v.IngestAsync(raw, env));
    }
    for (size_t i = 0; i < pending.size(); ++i) {
      Result<IngestResult> r = pending[i].get();
      ASSERT_TRUE(r.ok()) << files[i] << ": " << r.error().ToString();
      if (ids) ids->push_back(r->id);
    }
  };

  std::vector<ObjectId> ids;
  {
    Result<std::unique_ptr<Vault>> v = Vault::Open(tmp / "vault", keys, options);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    import_all(**v, &ids);
  }
  uint64_t after_first = DirBytes(tmp / "vault");
  Result<std::unique_ptr<Vault>> v = Vault::Open(tmp / "vault", keys, options);
  ASSERT_TRUE(v.ok());
  // Independent oracle: the files themselves.
  size_t mismatches = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    Result<std::string> back = (*v)->ReadMessage(ids[i]);
    ASSERT_TRUE(back.ok()) << files[i] << ": " << back.error().ToString();
    if (*back != testing::ReadFile(files[i])) {
      ++mismatches;
      ADD_FAILURE() << files[i] << " did not round-trip byte for byte";
    }
  }
  EXPECT_EQ(mismatches, 0u);
  Result<VaultStats> st = (*v)->Stats();
  ASSERT_TRUE(st.ok());
  uint64_t raw_bytes = 0;
  for (const std::string& f : files) raw_bytes += std::filesystem::file_size(f);
  // Some corpus files are byte-identical copies of each other.
  EXPECT_EQ(st->messages + st->duplicates, files.size());
  EXPECT_LE(st->raw_bytes, raw_bytes);

  import_all(**v, nullptr);
  v->reset();
  uint64_t after_second = DirBytes(tmp / "vault");
  EXPECT_LT(static_cast<double>(after_second), after_first * 1.01)
      << "first import " << after_first << " bytes, after the second " << after_second;

  Result<std::unique_ptr<Vault>> again = Vault::Open(tmp / "vault", keys, options);
  ASSERT_TRUE(again.ok());
  Result<VerifyReport> report = (*again)->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->messages_checked, (*again)->Stats()->messages);
}

}  // namespace
}  // namespace mailvault
