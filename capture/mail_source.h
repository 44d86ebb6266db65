// Importers: turn Maildir folders, mbox files, .eml files and directory trees of them into a
// stream of messages, each with a label saying where it came from.
//
// Formats accepted (docs/import.md):
//   - Maildir: a directory with cur/ and new/; every regular file in them is one message.
//   - mbox (mboxrd): a file whose first line starts with "From "; messages start at a "From "
//     line at the start of the file or after an empty line; ">From " lines lose one '>'; the
//     empty line before each "From " separator belongs to the separator.
//   - EML: any other file; the whole file is one message.
//   - A directory that is not a Maildir is walked recursively (hidden entries and Maildir tmp/
//     skipped, symbolic links not followed).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace mailvault {

enum class SourceKind { kMaildirFile, kMbox, kEml };

struct SourceFile {
  std::string path;
  SourceKind kind;
  uint64_t size = 0;
};

// Walks the given paths. Paths that do not exist or cannot be read are reported through
// on_error and skipped.
std::vector<SourceFile> FindSourceFiles(const std::vector<std::string>& paths,
                                        const std::function<void(const std::string& path, const Error&)>& on_error);

// One message split out of a source file.
struct SourceMessage {
  std::string label;  // "path" or "path#n" (1-based message number inside an mbox)
  std::string bytes;
};

// Checks that bytes look like an RFC 5322 message at all; the error says why not.
Status CheckLooksLikeMail(std::string_view bytes);

// Splits an mbox's contents into messages (mboxrd unescaping), calling fn for each.
void SplitMbox(std::string_view contents, const std::function<void(size_t index, std::string message)>& fn);
// Writes one message in mboxrd form (the inverse of SplitMbox for messages ending in "\n").
void AppendMboxMessage(std::string_view message, int64_t date, std::string* out);

// Reads a source file and emits its messages; errors concern the whole file.
Status ReadSourceFile(const SourceFile& file, uint64_t max_file_bytes,
                      const std::function<void(SourceMessage)>& fn);

}  // namespace mailvault
