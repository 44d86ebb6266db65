#include "indexer/document.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "core/bytes.h"
#include "core/message.h"
#include "core/text.h"
#include "indexer/schema.h"
#include "indexer/tokenizer.h"

namespace mailvault::index {
namespace {

// Xapian refuses terms over 245 bytes; exact values longer than this are not indexed whole.
constexpr size_t kMaxTermBytes = 240;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

// Collects a document's terms. Word occurrences are counted here and handed to Xapian once per
// distinct term: Xapian's per-document term map costs a string-keyed tree operation per call,
// and a message repeats most of its words.
class Builder {
 public:
  explicit Builder(Xapian::Document* doc) : doc_(doc) { wdf_.reserve(1024); }
  // REQUIRES: Flush() before the document is used.

  void Flush() {
    for (const auto& [term, wdf] : wdf_) doc_->add_term(term, wdf);
    wdf_.clear();
  }

  void Exact(std::string_view prefix, std::string_view value) {
    if (value.empty() || prefix.size() + value.size() > kMaxTermBytes) return;
    doc_->add_boolean_term(std::string(prefix) + std::string(value));
  }
  void Words(std::string_view prefix, std::string_view text) {
    std::string term(prefix);
    const size_t keep = term.size();
    ForEachWord(text, [&](std::string_view w) {
      term.resize(keep);
      term.append(w);
      ++wdf_[term];
    });
  }
  // Words of a phrase field: terms, and one more part of the field's word stream.
  void Stream(std::string_view field, std::string_view text, WordStreams* streams) {
    const Field& f = FieldOf(field);
    std::string term(f.prefix);
    const size_t keep = term.size();
    std::string part;
    ForEachWord(text, [&](std::string_view w) {
      term.resize(keep);
      term.append(w);
      ++wdf_[term];
      if (!part.empty()) part.push_back(' ');
      part.append(w);
    });
    if (!part.empty()) streams->parts[static_cast<size_t>(PhraseFieldIndex(field))].push_back(std::move(part));
  }
  void Addresses(const Field& f, const std::vector<Address>& list) {
    for (const Address& a : list) {
      Words(f.prefix, a.name);
      Words(f.prefix, a.address);
      Exact(f.exact_prefix, Lower(a.address));
    }
  }

 private:
  Xapian::Document* doc_;
  std::unordered_map<std::string, Xapian::termcount> wdf_;
};

void AddFlag(Xapian::Document* doc, std::string_view flag) { doc->add_boolean_term(std::string(kFlagPrefix) + std::string(flag)); }

std::string FormatAddress(const std::string& name, const std::string& address) {
  if (name.empty()) return address;
  if (address.empty()) return name;
  return name + " <" + address + ">";
}

}  // namespace

BuiltDocument BuildUnreadableDocument(const ObjectId& id, const Error& why) {
  BuiltDocument out;
  out.id_term = "Q" + id.Hex();
  out.doc.add_boolean_term(out.id_term);
  AddFlag(&out.doc, kFlagUnindexed);
  out.summary.id = id.Hex();
  out.summary.notes.push_back("the vault could not read the message: " + why.message());
  out.doc.set_data(EncodeSummary(out.summary));
  return out;
}

BuiltDocument BuildDocument(const ObjectId& id, const StoredMessage& m, const DocumentLimits& limits) {
  BuiltDocument out;
  Xapian::Document& doc = out.doc;
  Summary& sum = out.summary;
  Builder b(&doc);
  out.id_term = "Q" + id.Hex();
  doc.add_boolean_term(out.id_term);
  sum.id = id.Hex();
  sum.size = m.raw.size();

  ParseOptions po;
  po.collect_text = true;
  po.content_hashes = false;
  po.collect_attachments_up_to = limits.extract.max_input_bytes;
  Result<ParsedMessage> parsed = ParseMessage(m.raw, limits.message, po);
  MessageSummary ms;
  if (parsed.ok()) {
    ms = parsed->summary;
  } else {
    // Over a MIME limit: the headers are still indexed; the body is not.
    ms = SummarizeHeaders(m.raw);
    AddFlag(&doc, kFlagUnindexed);
    sum.notes.push_back("body not indexed: " + parsed.error().message());
  }
  sum.message_id = ms.message_id;
  sum.from = FormatAddress(ms.from_name, ms.from);
  sum.subject = ms.subject;
  if (ms.date) {
    sum.date = *ms.date;
    sum.utc_offset_minutes = ms.date_utc_offset_minutes;
    sum.date_from_header = true;
  } else if (!m.envelopes.empty()) {
    sum.date = m.envelopes.front().capture_time_us / 1000000;
  }
  doc.add_value(kSlotDate, Xapian::sortable_serialise(static_cast<double>(sum.date)));
  doc.add_value(kSlotSize, Xapian::sortable_serialise(static_cast<double>(sum.size)));
  if (!m.envelopes.empty()) {
    // Retention counted from capture, and policies that are not retroactive, need it (policy/).
    int64_t first = m.envelopes.front().capture_time_us;
    for (const Envelope& e : m.envelopes) first = std::min(first, e.capture_time_us);
    doc.add_value(kSlotCaptured, Xapian::sortable_serialise(static_cast<double>(first / 1000000)));
  }
  b.Exact(FieldOf("msgid").prefix, Lower(ms.message_id));

  WordStreams streams;
  b.Stream("subject", ms.subject, &streams);

  // Envelopes: the journal's recipients (Bcc and expanded lists included) and custodians.
  std::set<std::string> recipients, custodians;
  for (const Envelope& e : m.envelopes) {
    for (const std::string& r : e.recipients) recipients.insert(Lower(r));
    if (!e.custodian.empty()) custodians.insert(Lower(e.custodian));
  }
  auto add_set = [&](const Field& f, const std::set<std::string>& set) {
    for (const std::string& a : set) {
      b.Words(f.prefix, a);
      b.Exact(f.exact_prefix, a);
    }
  };
  add_set(FieldOf("envelope"), recipients);
  add_set(FieldOf("custodian"), custodians);

  if (!parsed.ok()) {
    if (!ms.from.empty()) b.Addresses(FieldOf("from"), {Address{ms.from_name, ms.from}});
    b.Flush();
    doc.set_data(EncodeSummary(sum));
    doc.add_value(kSlotWords, EncodeWordStreams(id.bytes(), streams));
    return out;
  }
  const ParsedMessage& pm = *parsed;
  b.Addresses(FieldOf("from"), pm.from);
  b.Addresses(FieldOf("to"), pm.to);
  b.Addresses(FieldOf("cc"), pm.cc);
  b.Addresses(FieldOf("bcc"), pm.bcc);

  bool partial = false, unindexed = false;
  for (size_t i = 0; i < pm.text.size(); ++i) {
    const MimePart& part = pm.parts[pm.text_part[i]];
    std::string_view text = pm.text[i];
    std::string converted;
    bool cut = false;
    if (part.content_type == "text/html") {
      converted = HtmlToText(text, limits.max_part_text_bytes, &cut);
      text = converted;
    } else if (text.size() > limits.max_part_text_bytes) {
      text = text.substr(0, limits.max_part_text_bytes);
      cut = true;
    }
    if (cut) {
      partial = true;
      sum.notes.push_back("body part " + std::to_string(pm.text_part[i]) + " (" + part.content_type + ") cut at " +
                          std::to_string(limits.max_part_text_bytes) + " bytes of text (index max_part_text_bytes)");
    }
    b.Stream("body", text, &streams);
  }

  const Field& mime = FieldOf("mime");
  for (const MimePart& part : pm.parts) b.Exact(mime.prefix, part.content_type);
  const Field& names = FieldOf("attachment");
  for (const MimePart& part : pm.parts) {
    if (!part.is_attachment || part.filename.empty()) continue;
    b.Words(names.prefix, part.filename);
    b.Exact(names.exact_prefix, Lower(part.filename));
  }
  if (pm.summary.has_attachments) AddFlag(&doc, kFlagAttachment);

  for (const ParsedMessage::AttachmentBytes& a : pm.attachments) {
    const MimePart& part = pm.parts[a.part];
    std::string label = "attachment " + (part.filename.empty() ? "part " + std::to_string(a.part) : "\"" + part.filename + "\"");
    if (a.over_limit) {
      unindexed = true;
      sum.notes.push_back(label + ": text not extracted, " + std::to_string(part.decoded_size) +
                          " bytes is over the extraction limit (index extract.max_input_bytes)");
      continue;
    }
    std::string type = part.charset.empty() ? part.content_type : part.content_type + "; charset=" + part.charset;
    Extracted x = ExtractAttachmentText(type, part.filename, a.bytes, limits.extract);
    switch (x.outcome) {
      case ExtractOutcome::kNotText:
        continue;
      case ExtractOutcome::kComplete:
        break;
      case ExtractOutcome::kPartial:
        partial = true;
        sum.notes.push_back(label + ": " + x.reason);
        break;
      case ExtractOutcome::kUnreadable:
        unindexed = true;
        sum.notes.push_back(label + ": " + x.reason);
        break;
    }
    b.Stream("atext", x.text, &streams);
  }
  if (!pm.shape.truncation.empty()) sum.notes.push_back("the message looks cut short: " + pm.shape.truncation);
  if (partial) AddFlag(&doc, kFlagPartial);
  if (unindexed) AddFlag(&doc, kFlagUnindexed);
  b.Flush();
  doc.set_data(EncodeSummary(sum));
  doc.add_value(kSlotWords, EncodeWordStreams(id.bytes(), streams));
  return out;
}

}  // namespace mailvault::index
