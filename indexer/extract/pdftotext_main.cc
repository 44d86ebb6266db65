// mailvault-pdftotext: reads a PDF on stdin, writes its text as UTF-8 to stdout, page by page
// (pages separated by a newline), so that whatever it wrote before dying is usable.
//
// Run by indexer/extract (pdf_text.cc) in its own process, under memory and CPU limits, because
// poppler parsing hostile PDFs can crash or hang; it is not meant to be run by hand, but can be:
//   mailvault-pdftotext < file.pdf
// Exit status: 0 text written; 3 not readable (encrypted, or not a PDF poppler can open), with
// the reason on stderr; 4 out of memory; 1 any other failure; 2 usage.
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreadable = 3;
constexpr int kExitNoMemory = 4;

// poppler reports every syntax error in a damaged file; the caller only wants the verdict.
void IgnorePopplerMessage(const std::string&, void*) {}

bool ReadAll(int fd, std::vector<char>* out) {
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    out->insert(out->end(), buf, buf + n);
  }
}

bool IsTrailingSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\f'; }

int Run() {
  std::vector<char> pdf;
  if (!ReadAll(0, &pdf)) {
    std::fprintf(stderr, "cannot read the PDF from stdin: %s\n", std::strerror(errno));
    return kExitFailure;
  }
  if (pdf.size() > static_cast<size_t>(INT_MAX)) {
    std::fputs("too large: poppler reads PDFs of at most 2 GiB\n", stderr);
    return kExitUnreadable;
  }
  poppler::set_debug_error_function(IgnorePopplerMessage, nullptr);
  std::unique_ptr<poppler::document> doc(
      poppler::document::load_from_raw_data(pdf.data(), static_cast<int>(pdf.size())));
  if (!doc) {
    std::fputs("damaged: poppler cannot open it as a PDF\n", stderr);
    return kExitUnreadable;
  }
  if (doc->is_locked()) {
    std::fputs("encrypted: a password is needed to open it\n", stderr);
    return kExitUnreadable;
  }
  bool first = true;
  for (int i = 0; i < doc->pages(); ++i) {
    std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) continue;
    poppler::byte_array utf8 = page->text(poppler::rectf(), poppler::page::non_raw_non_physical_layout).to_utf8();
    std::string_view text(utf8.data(), utf8.size());
    while (!text.empty() && IsTrailingSpace(text.back())) text.remove_suffix(1);
    if (text.empty()) continue;
    if (!first) std::fputc('\n', stdout);
    first = false;
    std::fwrite(text.data(), 1, text.size(), stdout);
    // Flushed page by page: if a later page kills us, the caller still has these.
    if (std::fflush(stdout) != 0) return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: %s < file.pdf > file.txt\n", argv[0]);
    return kExitUsage;
  }
  try {
    return Run();
  } catch (const std::bad_alloc&) {
    std::fputs("out of memory\n", stderr);
    return kExitNoMemory;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "failed: %s\n", e.what());
    return kExitFailure;
  }
}
