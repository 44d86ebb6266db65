#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mailvault::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/mailvault-test-XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string CorpusMaildir() {
  const char* c = std::getenv("MAILVAULT_CORPUS");
  if (!c || !*c) {
    ADD_FAILURE() << "MAILVAULT_CORPUS is not set: run scripts/fetch-corpus.sh and export MAILVAULT_CORPUS=<its output>/maildir "
                     "(scripts/test.sh does both)";
    return "";
  }
  return c;
}

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> out;
  std::string dir = CorpusMaildir();
  if (dir.empty()) return out;
  for (const char* sub : {"/cur", "/new"}) {
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator(dir + sub, ec)) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

std::string SimpleMessage(const std::string& subject, const std::string& body, const std::string& message_id) {
  return "From: Alice Example <alice@example.com>\r\n"
         "To: bob@example.org\r\n"
         "Subject: " + subject + "\r\n"
         "Date: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
         "Message-ID: " + message_id + "\r\n"
         "\r\n" + body;
}

}  // namespace mailvault::testing
