#include "indexer/extract/pdf_text.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "core/text.h"
#include "indexer/extract/helper_process.h"
#include "indexer/extract/text_sink.h"

namespace mailvault {
namespace {

constexpr char kHelperName[] = "mailvault-pdftotext";

std::mutex helper_mu;
std::string* helper_path = nullptr;  // guarded by helper_mu; empty means the default; never freed

std::string DefaultHelperPath() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return kHelperName;
  std::string exe(buf, static_cast<size_t>(n));
  size_t slash = exe.rfind('/');
  return slash == std::string::npos ? std::string(kHelperName) : exe.substr(0, slash + 1) + kHelperName;
}

// The first line the helper wrote to stderr, trimmed: its own account of what went wrong.
std::string FirstLine(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return ToValidUtf8(line.substr(0, 300));
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace

void SetPdfHelperPath(std::string path) {
  std::lock_guard<std::mutex> lock(helper_mu);
  if (helper_path == nullptr) {
    helper_path = new std::string(std::move(path));
  } else {
    *helper_path = std::move(path);
  }
}

std::string PdfHelperPath() {
  {
    std::lock_guard<std::mutex> lock(helper_mu);
    if (helper_path != nullptr && !helper_path->empty()) return *helper_path;
  }
  return DefaultHelperPath();
}

namespace extract_internal {

Extracted ExtractPdfText(std::string_view pdf, const ExtractLimits& limits) {
  Extracted result;
  result.outcome = ExtractOutcome::kUnreadable;
  const std::string helper = PdfHelperPath();
  if (access(helper.c_str(), X_OK) != 0) {
    result.reason = "PDF not read: the helper " + helper + " is missing or not executable (" + strerror(errno) +
                    "); install " + kHelperName + " next to the mailvault binaries";
    return result;
  }

  HelperRun run = RunHelperProcess(helper, pdf, {limits.timeout_ms, limits.memory_bytes, limits.max_output_bytes});
  // Whatever the helper wrote before it stopped is good text: it writes page by page.
  std::string text = ToValidUtf8(run.out);
  bool cut = text.size() > limits.max_output_bytes;
  if (cut) text.resize(Utf8Boundary(text, limits.max_output_bytes));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();

  std::string why;
  switch (run.end) {
    case HelperRun::End::kExited:
      if (run.exit_code == 0) {
        if (cut) why = "PDF text cut at " + FormatBytes(limits.max_output_bytes) + " (limits.max_output_bytes)";
      } else if (run.exit_code == 3) {
        why = "PDF not readable: " + FirstLine(run.err);
      } else if (run.exit_code == 4) {
        why = "PDF helper ran out of memory at " + FormatBytes(limits.memory_bytes) + " (limits.memory_bytes)";
      } else {
        why = "PDF helper failed (exit status " + std::to_string(run.exit_code) + ")";
        if (!run.err.empty()) why += ": " + FirstLine(run.err);
      }
      break;
    case HelperRun::End::kSignaled:
      if (run.term_signal == SIGXCPU) {
        why = "PDF helper used its CPU time limit (" + FormatMillis(limits.timeout_ms) + ", limits.timeout_ms)";
      } else {
        why = "PDF helper crashed (" + SignalName(run.term_signal) + "); the PDF is probably malformed";
      }
      break;
    case HelperRun::End::kTimedOut:
      why = "PDF helper timed out after " + FormatMillis(limits.timeout_ms) + " (limits.timeout_ms)";
      break;
    case HelperRun::End::kOutputCapped:
      why = "PDF text cut at " + FormatBytes(limits.max_output_bytes) + " (limits.max_output_bytes)";
      break;
    case HelperRun::End::kNotStarted:
      why = "PDF not read: could not start the helper: " + run.error;
      break;
  }
  result.text = std::move(text);
  result.reason = std::move(why);
  if (result.reason.empty()) {
    result.outcome = ExtractOutcome::kComplete;
  } else {
    result.outcome = result.text.empty() ? ExtractOutcome::kUnreadable : ExtractOutcome::kPartial;
  }
  return result;
}

}  // namespace extract_internal
}  // namespace mailvault
