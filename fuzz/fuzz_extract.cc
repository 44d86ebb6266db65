// libFuzzer target: indexer/extract's readers of outside bytes that run in this process: the
// HTML stripper, the zip (libarchive) + XML path of Office/OpenDocument files, the streaming XML
// stripper, and charset decoding. The PDF path runs in a helper process and is not fuzzed here;
// the helper path points nowhere so that no input can start one.
//
// The first input byte picks the path and its parameters; the rest is the document. Besides
// crashes, hangs and sanitizer reports, these are bugs: output that is not valid UTF-8, output
// over its limit, and an XML stripper whose output depends on how its input was split.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/text.h"
#include "indexer/extract/extract.h"
#include "indexer/extract/office_text.h"
#include "indexer/extract/text_sink.h"
#include "indexer/extract/xml_text.h"

namespace {

using mailvault::ExtractLimits;
using mailvault::extract_internal::OfficeKind;
using mailvault::extract_internal::TextSink;
using mailvault::extract_internal::XmlAction;
using mailvault::extract_internal::XmlRule;
using mailvault::extract_internal::XmlRules;
using mailvault::extract_internal::XmlTextStripper;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckText(const std::string& text, size_t max) {
  Check(text.size() <= max);
  Check(mailvault::ToValidUtf8(text) == text);
}

constexpr XmlRule kRules[] = {
    {"t", XmlAction::kCapture}, {"del", XmlAction::kSkip}, {"p", XmlAction::kBlockEnd},
    {"c", XmlAction::kCellEnd}, {"br", XmlAction::kBreak}, {"s", XmlAction::kSpace},
};

std::string StripXml(std::string_view xml, bool capture_all, size_t chunk, size_t max) {
  TextSink sink(max);
  XmlRules rules{capture_all, kRules};
  XmlTextStripper stripper(rules, &sink);
  for (size_t i = 0; i < xml.size(); i += chunk) stripper.Feed(xml.substr(i, chunk));
  stripper.Finish();
  return sink.Finish(nullptr);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mailvault::SetPdfHelperPath("/nonexistent/mailvault-pdftotext");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Small limits half the time, so that every cut is reached.
  const bool small = (selector & 0x80) != 0;
  ExtractLimits limits;
  limits.max_output_bytes = small ? 64 : 1 << 20;
  limits.max_zip_member_bytes = small ? 4096 : 8 << 20;
  limits.max_zip_total_bytes = small ? 8192 : 16 << 20;
  limits.max_zip_members = small ? 8 : 1000;
  limits.timeout_ms = 5000;

  switch (selector & 0x3) {
    case 0: {
      bool truncated = false;
      std::string text = mailvault::HtmlToText(in, limits.max_output_bytes, &truncated);
      CheckText(text, limits.max_output_bytes);
      break;
    }
    case 1: {
      auto declared = static_cast<OfficeKind>((selector >> 2) % 7);
      mailvault::Extracted e = mailvault::extract_internal::ExtractOfficeText(in, declared, limits);
      CheckText(e.text, limits.max_output_bytes);
      Check(e.outcome == mailvault::ExtractOutcome::kComplete || !e.reason.empty() ||
            e.outcome == mailvault::ExtractOutcome::kNotText);
      break;
    }
    case 2: {
      bool capture_all = (selector & 0x4) != 0;
      size_t chunk = 1 + ((selector >> 3) & 0xf);
      std::string whole = StripXml(in, capture_all, in.size() + 1, limits.max_output_bytes);
      std::string pieces = StripXml(in, capture_all, chunk, limits.max_output_bytes);
      CheckText(whole, limits.max_output_bytes);
      Check(whole == pieces);
      break;
    }
    case 3: {
      static constexpr const char* kTypes[] = {"text/plain",
                                               "text/plain; charset=iso-8859-1",
                                               "text/plain; charset=utf-16",
                                               "text/plain; charset=shift_jis",
                                               "text/html; charset=windows-1252",
                                               "text/html",
                                               "application/octet-stream",
                                               "text/plain; charset=bogus"};
      if (in.substr(0, 1024).find("%PDF-") != std::string_view::npos) break;  // the helper is not fuzzed here
      mailvault::Extracted e = mailvault::ExtractAttachmentText(kTypes[(selector >> 2) % 8], "attachment", in, limits);
      CheckText(e.text, limits.max_output_bytes);
      break;
    }
  }
  return 0;
}
