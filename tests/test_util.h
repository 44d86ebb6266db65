// Helpers shared by the tests: temporary directories, the real corpus, message builders.
#pragma once

#include <string>
#include <vector>

namespace mailvault::testing {

// A fresh directory under $TMPDIR, removed when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The SpamAssassin corpus as a Maildir, fetched by scripts/fetch-corpus.sh. Fails the test (not
// skips) when MAILVAULT_CORPUS is unset: the README's test command always provides it.
std::string CorpusMaildir();
// Every file of the corpus Maildir, sorted.
std::vector<std::string> CorpusFiles();

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& data);

// A plain message with the given headers and body.
std::string SimpleMessage(const std::string& subject, const std::string& body,
                          const std::string& message_id = "<test@example.com>");

}  // namespace mailvault::testing
