// kill -9 at random instants while several threads ingest: every acknowledged message must be
// readable afterwards, and verify must find nothing corrupt.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "core/message.h"
#include "tests/test_util.h"
#include "vault/vault.h"

namespace mailvault {
namespace {

// Runs the writer, kills it after delay_ms, returns the ids it reported as acknowledged.
std::vector<std::string> RunAndKill(const std::vector<std::string>& args, int delay_ms, bool* finished) {
  int out[2];
  EXPECT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(out[1]);
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms);
  bool killed = false;
  char buf[4096];
  for (;;) {
    if (!killed && std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    fd_set set;
    FD_ZERO(&set);
    FD_SET(out[0], &set);
    timeval tv{0, 5000};
    if (::select(out[0] + 1, &set, nullptr, nullptr, &tv) > 0) {
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;  // EOF: the child is gone
      got.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  *finished = got.find("DONE\n") != std::string::npos;
  std::vector<std::string> ids;
  size_t pos = 0;
  // Only whole lines count: a line cut by the kill was never fully reported.
  while (true) {
    size_t eol = got.find('\n', pos);
    if (eol == std::string::npos) break;
    std::string line = got.substr(pos, eol - pos);
    if (line.rfind("ACK ", 0) == 0) ids.push_back(line.substr(4));
    pos = eol + 1;
  }
  return ids;
}

TEST(KillLoopTest, NothingAcknowledgedIsLost) {
  InitMessageParsing();
  std::vector<std::string> files = testing::CorpusFiles();
  ASSERT_GT(files.size(), 1000u);
  testing::TempDir tmp;
  std::string list;
  for (const std::string& f : files) list += f + "\n";
  testing::WriteFile(tmp / "files", list);
  KeySource keys;
  keys.key_file = tmp / "master.key";
  VaultOptions options;
  bool created;
  ASSERT_TRUE(Vault::Init(tmp / "vault", keys, options, &created).ok());

  std::mt19937 rng(12345);
  std::set<std::string> acked;
  constexpr int kIterations = 20;
  for (int i = 0; i < kIterations; ++i) {
    // Start where the last run roughly stopped, so each run also writes new messages; some
    // overlap exercises duplicates and envelope records.
    size_t start = (acked.size() * 9 / 10) % files.size();
    int delay = std::uniform_int_distribution<int>(30, 400)(rng);
    bool finished = false;
    std::vector<std::string> ids = RunAndKill({INGEST_WRITER, tmp / "vault", keys.key_file, tmp / "files",
                                               std::to_string(start), "4"},
                                              delay, &finished);
    acked.insert(ids.begin(), ids.end());
  }
  ASSERT_GT(acked.size(), 100u) << "the writer acknowledged too little to prove anything";

  Result<std::unique_ptr<Vault>> v = Vault::Open(tmp / "vault", keys, options);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  size_t missing = 0;
  for (const std::string& hex : acked) {
    Result<std::string> raw = (*v)->ReadMessage(*ObjectId::FromHex(hex));
    if (!raw.ok()) {
      ++missing;
      ADD_FAILURE() << "acknowledged message " << hex << " lost: " << raw.error().ToString();
    }
  }
  EXPECT_EQ(missing, 0u);
  Result<VerifyReport> report = (*v)->Verify();
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << report->problems.size() << " problems, first: " << (report->ok() ? "" : report->problems[0]);
  EXPECT_GE((*v)->Stats()->messages, acked.size());
}

}  // namespace
}  // namespace mailvault
