#include "indexer/document.h"

#include <zstd.h>

#include <algorithm>
#include <set>

#include "core/bytes.h"
#include "core/message.h"
#include "core/text.h"
#include "indexer/schema.h"
#include "indexer/tokenizer.h"

namespace mailvault::index {
namespace {

constexpr uint8_t kSummaryVersion = 1;
constexpr uint8_t kStreamsVersion = 1;
// Word streams larger than this (decompressed) are refused as damaged.
constexpr size_t kMaxStreamBytes = 64u << 20;
// Xapian refuses terms over 245 bytes; exact values longer than this are not indexed whole.
constexpr size_t kMaxTermBytes = 240;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

class Builder {
 public:
  explicit Builder(Xapian::Document* doc) : doc_(doc) {}

  void Exact(std::string_view prefix, std::string_view value) {
    if (value.empty() || prefix.size() + value.size() > kMaxTermBytes) return;
    doc_->add_boolean_term(std::string(prefix) + std::string(value));
  }
  void Words(std::string_view prefix, std::string_view text) {
    ForEachWord(text, [&](std::string_view w) { doc_->add_term(std::string(prefix) + std::string(w)); });
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
      doc_->add_term(term);
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
};

void AddFlag(Xapian::Document* doc, std::string_view flag) { doc->add_boolean_term(std::string(kFlagPrefix) + std::string(flag)); }

std::string FormatAddress(const std::string& name, const std::string& address) {
  if (name.empty()) return address;
  if (address.empty()) return name;
  return name + " <" + address + ">";
}

}  // namespace

namespace {
std::string EncodeSummary(const Summary& s) {
  ByteWriter w;
  w.PutU8(kSummaryVersion);
  w.PutString(s.id);
  w.PutString(s.message_id);
  w.PutVarint(static_cast<uint64_t>(s.date));
  w.PutVarint(static_cast<uint64_t>(static_cast<int64_t>(s.utc_offset_minutes) + 100000));
  w.PutU8(s.date_from_header ? 1 : 0);
  w.PutString(s.from);
  w.PutString(s.subject);
  w.PutVarint(s.size);
  w.PutVarint(s.notes.size());
  for (const std::string& n : s.notes) w.PutString(n);
  return w.Take();
}
}  // namespace

bool WordStreams::HasPhrase(size_t field, const std::vector<std::string>& words) const {
  if (field >= parts.size() || words.empty()) return false;
  std::string needle;
  for (const std::string& w : words) {
    if (!needle.empty()) needle.push_back(' ');
    needle += w;
  }
  for (const std::string& part : parts[field]) {
    // Whole words only: the match must start and end at a space or an end of the part.
    for (size_t at = part.find(needle); at != std::string::npos; at = part.find(needle, at + 1)) {
      bool starts = at == 0 || part[at - 1] == ' ';
      size_t end = at + needle.size();
      bool ends = end == part.size() || part[end] == ' ';
      if (starts && ends) return true;
    }
  }
  return false;
}

std::string EncodeDocumentData(const Summary& s, const WordStreams& w) {
  ByteWriter streams;
  streams.PutU8(kStreamsVersion);
  for (const auto& field : w.parts) {
    streams.PutVarint(field.size());
    for (const std::string& part : field) streams.PutString(part);
  }
  std::string plain = streams.Take();
  std::string packed(ZSTD_compressBound(plain.size()), '\0');
  size_t n = ZSTD_compress(packed.data(), packed.size(), plain.data(), plain.size(), 3);
  packed.resize(ZSTD_isError(n) ? 0 : n);
  ByteWriter out;
  out.PutString(EncodeSummary(s));
  out.PutString(packed);
  return out.Take();
}

Result<WordStreams> DecodeWordStreams(std::string_view data) {
  ByteReader outer(data);
  std::string_view summary, packed;
  if (!outer.GetString(&summary, 1 << 24) || !outer.GetString(&packed, 1 << 28)) {
    return Corruption("an index entry's data is damaged; run `mailvault reindex`");
  }
  unsigned long long size = ZSTD_getFrameContentSize(packed.data(), packed.size());
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxStreamBytes) {
    return Corruption("an index entry's word streams are damaged; run `mailvault reindex`");
  }
  std::string plain(size, '\0');
  size_t n = ZSTD_decompress(plain.data(), plain.size(), packed.data(), packed.size());
  if (ZSTD_isError(n) || n != size) return Corruption("an index entry's word streams are damaged; run `mailvault reindex`");
  ByteReader r(plain);
  uint8_t version;
  WordStreams w;
  if (!r.GetU8(&version) || version != kStreamsVersion) return Corruption("an index entry's word streams are damaged");
  for (auto& field : w.parts) {
    uint64_t count;
    if (!r.GetVarint(&count) || count > r.remaining()) return Corruption("an index entry's word streams are damaged");
    for (uint64_t i = 0; i < count; ++i) {
      std::string_view part;
      if (!r.GetString(&part, kMaxStreamBytes)) return Corruption("an index entry's word streams are damaged");
      field.emplace_back(part);
    }
  }
  return w;
}

Result<Summary> DecodeSummary(std::string_view data) {
  ByteReader outer(data);
  std::string_view inner;
  if (!outer.GetString(&inner, 1 << 24)) return Corruption("an index entry's summary is damaged; run `mailvault reindex`");
  ByteReader r(inner);
  Summary s;
  uint8_t version, from_header;
  uint64_t date, offset, notes;
  std::string_view id, mid, from, subject;
  if (!r.GetU8(&version) || version != kSummaryVersion || !r.GetString(&id, 128) || !r.GetString(&mid, 4096) ||
      !r.GetVarint(&date) || !r.GetVarint(&offset) || !r.GetU8(&from_header) || !r.GetString(&from, 1 << 16) ||
      !r.GetString(&subject, 1 << 20) || !r.GetVarint(&s.size) || !r.GetVarint(&notes) || notes > 1000) {
    return Corruption("an index entry's summary is damaged; run `mailvault reindex`");
  }
  s.id = id;
  s.message_id = mid;
  s.date = static_cast<int64_t>(date);
  s.utc_offset_minutes = static_cast<int>(static_cast<int64_t>(offset) - 100000);
  s.date_from_header = from_header != 0;
  s.from = from;
  s.subject = subject;
  for (uint64_t i = 0; i < notes; ++i) {
    std::string_view n;
    if (!r.GetString(&n, 1 << 16)) return Corruption("an index entry's summary is damaged; run `mailvault reindex`");
    s.notes.emplace_back(n);
  }
  return s;
}

BuiltDocument BuildUnreadableDocument(const ObjectId& id, const Error& why) {
  BuiltDocument out;
  out.id_term = "Q" + id.Hex();
  out.doc.add_boolean_term(out.id_term);
  AddFlag(&out.doc, kFlagUnindexed);
  out.summary.id = id.Hex();
  out.summary.notes.push_back("the vault could not read the message: " + why.message());
  out.doc.set_data(EncodeDocumentData(out.summary, WordStreams{}));
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
    doc.set_data(EncodeDocumentData(sum, streams));
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
  doc.set_data(EncodeDocumentData(sum, streams));
  return out;
}

}  // namespace mailvault::index
