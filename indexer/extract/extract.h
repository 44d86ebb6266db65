// Text extraction for the indexer: the words inside attachments (PDF, Office Open XML,
// OpenDocument, plain text, HTML) and inside HTML mail bodies.
//
// Everything here reads hostile bytes. Each call is bounded by ExtractLimits; when a limit cuts
// the work short the result says so in words a person can act on, naming the limit
// ("limits.max_output_bytes"). Nothing throws. PDFs are read by a separate helper process
// (mailvault-pdftotext) because poppler can crash or hang on hostile files; see README.md.
//
// Thread-safe: calls may run concurrently.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mailvault {

struct ExtractLimits {
  // Attachments larger than this are not read at all (kUnreadable).
  size_t max_input_bytes = 25 << 20;
  // Extracted text is cut here, at a UTF-8 character boundary (kPartial).
  size_t max_output_bytes = 2 << 20;
  // Wall time for one attachment: the PDF helper is killed after it; zip reading stops.
  int timeout_ms = 10000;
  // Address space of the PDF helper (RLIMIT_AS).
  size_t memory_bytes = 1 << 30;
  // Zip bombs: at most this many uncompressed bytes are read from any one member of an
  // Office/OpenDocument zip, and this many in total over all members read.
  size_t max_zip_member_bytes = 64 << 20;
  size_t max_zip_total_bytes = 256 << 20;
  // Members of a zip looked at (listed or read) before giving up on the rest.
  size_t max_zip_members = 10000;
};

enum class ExtractOutcome {
  kComplete,    // all the text there is
  kPartial,     // some text; a limit cut the rest (see reason)
  kUnreadable,  // a text-bearing format that could not be read (encrypted, damaged, too big, helper failed)
  kNotText,     // not a format that carries text (images, archives, executables, ...)
};

struct Extracted {
  std::string text;  // valid UTF-8; paragraphs, rows, slides and pages separated by '\n'
  ExtractOutcome outcome = ExtractOutcome::kNotText;
  // Empty when complete or not text; otherwise what happened and which limit, for a person:
  // "PDF text cut at 2 MiB (limits.max_output_bytes)", "PDF helper timed out after 10 s".
  std::string reason;
};

// Extracts the text of one attachment. The format comes from the content type, the filename's
// extension and the first bytes (%PDF-, PK\3\4), in that order of trust reversed: the bytes win
// when they are unambiguous, so a PDF sent as application/octet-stream, or a .docx labelled
// application/msword, is still read. `content_type` may carry parameters; "charset=" is honoured
// for text/* (UTF-8, US-ASCII, ISO-8859-1, windows-1252; UTF-16 with a byte-order mark).
Extracted ExtractAttachmentText(std::string_view content_type, std::string_view filename, std::string_view data,
                                const ExtractLimits& limits);

// The visible text of an HTML document: tags stripped; the contents of <script>, <style>,
// <template> and <head> dropped; block elements (p, br, div, tr, li, h1-h6, ...) become line
// breaks and table cells spaces; character references decoded (named HTML 4 ones and numeric);
// runs of white space collapsed to one space. At most `max_bytes` of output (cut at a character
// boundary); `*truncated` (may be null) says whether text was cut. Linear in the input; assumes
// UTF-8 input (invalid sequences become U+FFFD).
std::string HtmlToText(std::string_view html, size_t max_bytes, bool* truncated);

// Where the PDF helper lives. Default (and after SetPdfHelperPath("")): "mailvault-pdftotext" in
// the directory of the running executable (/proc/self/exe). May be called at any time.
void SetPdfHelperPath(std::string path);
std::string PdfHelperPath();

}  // namespace mailvault
