// Restore: selection, the vault's messages planned into targets (SelectForRestore).
#include <algorithm>
#include <unordered_map>

#include "core/text.h"
#include "indexer/searcher.h"
#include "recovery/restore_internal.h"
#include "vault/vault.h"

namespace mailvault::recovery {

using restore_internal::Fingerprint;
using restore_internal::MatchKey;
using restore_internal::UpperAscii;

Result<std::vector<PlannedTarget>> SelectForRestore(Vault& vault, index::Searcher* searcher, const RestoreCriteria& c,
                                                    const RestoreOptions& options) {
  MV_RETURN_IF_ERROR(ValidateRestoreOptions(options));
  if (c.users.empty()) return InvalidArgument("name the custodians whose mail is restored (--users)");
  std::vector<std::string> users;
  for (const std::string& u : c.users) users.push_back(NormalizeAddress(u));
  const int64_t lo = c.from ? *c.from - c.margin_before : INT64_MIN;
  const int64_t hi = c.until ? *c.until + c.margin_after : INT64_MAX;
  if (lo > hi) return InvalidArgument("the window ends before it starts (--from is after --until)");

  // Candidates: the query's hits when there is a query, else every message. The vault is the
  // record of what was captured; the index only narrows by content, and must be complete.
  std::vector<ObjectId> ids;
  if (!c.query.empty()) {
    if (!searcher) return InvalidArgument("--query needs the index: run `mailvault index` first");
    const uint64_t complete_to = c.index_complete_to ? c.index_complete_to : vault.last_change();
    if (searcher->Info().applied_change < complete_to) {
      return Error(ErrorCode::kBusy, "the index is behind the vault (" + std::to_string(searcher->Info().applied_change) +
                                         " of " + std::to_string(complete_to) +
                                         " changes): run `mailvault index` first, or a --query restore would miss mail");
    }
    index::SearchRequest req;
    req.query = c.query;
    req.limit = 0;
    MV_ASSIGN_OR_RETURN(std::vector<std::string> hex, searcher->MatchingIds(req));
    for (const std::string& h : hex) {
      if (auto id = ObjectId::FromHex(h)) ids.push_back(*id);
    }
  } else {
    MV_RETURN_IF_ERROR(vault.ForEachMessage([&](const ObjectId& id, const MessageMeta&) {
      ids.push_back(id);
      return true;
    }));
  }

  // Per (mailbox, folder): the messages, by id (a message lands once per target even when two
  // envelopes put it there).
  std::map<std::pair<std::string, std::string>, PlannedTarget> targets;
  std::map<std::pair<std::string, std::string>, std::map<std::string, size_t>> seen;
  std::unordered_map<std::string, std::string> match_key;  // id -> MatchKey
  // id -> position in storage order (ReadMany's order): messages captured in the same second
  // are kept in it, so an appender's chunk decodes few compression blocks, each once.
  std::unordered_map<std::string, uint64_t> stored_at;
  Status failed = Status::Ok();
  MV_RETURN_IF_ERROR(vault.ReadMany(ids, [&](const ObjectId& id, Result<StoredMessage> m) {
    if (!failed.ok()) return;
    if (!m.ok()) {
      failed = m.error().With("reading " + id.Hex() + " for the restore plan");
      return;
    }
    stored_at[id.Hex()] = stored_at.size();
    const MessageSummary summary = SummarizeHeaders(m->raw);
    if (c.by_date && (!summary.date || *summary.date < lo || *summary.date > hi)) return;
    std::optional<ParsedMessage> parsed;  // the full header, only when the envelope does not say
    auto header_names = [&](const std::string& u, bool* to_user, bool* from_user) {
      if (!parsed) {
        ParseOptions po;
        po.content_hashes = false;
        Result<ParsedMessage> p = ParseMessage(m->raw, MessageLimits{}, po);
        parsed = p.ok() ? std::move(p).value() : ParsedMessage{};
      }
      for (const auto* list : {&parsed->to, &parsed->cc, &parsed->bcc, &parsed->delivered_to}) {
        for (const Address& a : *list) *to_user |= NormalizeAddress(a.address) == u;
      }
      for (const Address& a : parsed->from) *from_user |= NormalizeAddress(a.address) == u;
    };
    const std::string from = NormalizeAddress(summary.from);
    const std::string key = MatchKey(summary);
    for (const std::string& u : users) {
      bool inbox = false, sent = false;
      int64_t when = INT64_MAX;
      for (const Envelope& e : m->envelopes) {
        const int64_t t = e.capture_time_us / 1000000;
        if (!c.by_date && (t < lo || t > hi)) continue;
        bool in = false, out = false;
        if (!e.custodian.empty()) {
          // Imported from a custodian's mailbox: theirs; sent by them when From says so.
          if (NormalizeAddress(e.custodian) == u) (from == u ? out : in) = true;
        } else {
          for (const std::string& r : e.recipients) in |= NormalizeAddress(r) == u;
          out = NormalizeAddress(e.sender) == u;
          // A journal report's recipient list is the server's word on who received it. Other
          // captures (Postfix always_bcc, an import without --custodian, a report whose
          // recipients could not be read, so that RCPT TO stands in: its `note` says so) name
          // the archive's own address or nobody: there the headers say whose mail it is.
          const bool report_says = !e.journal_report.empty() && e.note.empty();
          if (!in && !out && !report_says) header_names(u, &in, &out);
        }
        if (in || out) {
          inbox |= in;
          sent |= out;
          when = std::min(when, t);
        }
      }
      for (int pass = 0; pass < 2; ++pass) {
        const bool is_sent = pass == 1;
        if (!(is_sent ? sent : inbox)) continue;
        std::string mailbox = u;
        if (!options.into.empty()) {
          mailbox = NormalizeAddress(options.into);
        } else if (auto mapped = options.user_map.find(u); mapped != options.user_map.end()) {
          mailbox = NormalizeAddress(mapped->second);
        }
        std::string folder = !options.folder.empty() ? options.folder : is_sent ? options.sent_folder : "INBOX";
        if (UpperAscii(folder) == "INBOX") folder = "INBOX";  // any case is the one INBOX (RFC 3501)
        auto target_key = std::make_pair(mailbox, folder);
        PlannedTarget& t = targets[target_key];
        if (t.mailbox.empty()) {
          t.custodian = options.into.empty() ? u : "";
          t.mailbox = mailbox;
          t.folder = folder;
        } else if (t.custodian != u) {
          t.custodian = "";  // several custodians into one mailbox
        }
        auto [it, fresh] = seen[target_key].emplace(id.Hex(), t.messages.size());
        if (!fresh) continue;
        match_key[id.Hex()] = key;
        t.messages.push_back(PlannedMessage{id.Hex(), when == INT64_MAX ? 0 : when, m->raw.size(), is_sent});
      }
    }
  }));
  MV_RETURN_IF_ERROR(failed);

  // Copies inside one target (the journal's copy and an imported one of the same message, with
  // different trace headers): the same key and the same decoded content are appended once.
  std::vector<PlannedTarget> out;
  for (auto& [key, t] : targets) {
    std::sort(t.messages.begin(), t.messages.end(), [&stored_at](const PlannedMessage& a, const PlannedMessage& b) {
      return a.internal_date != b.internal_date ? a.internal_date < b.internal_date : stored_at[a.id] < stored_at[b.id];
    });
    std::map<std::string, std::vector<std::string>> by_key;
    for (const PlannedMessage& pm : t.messages) by_key[match_key[pm.id]].push_back(pm.id);
    std::set<std::string> dropped;
    std::vector<ObjectId> collide;
    for (const auto& [k, list] : by_key) {
      if (list.size() > 1) {
        for (const std::string& h : list) collide.push_back(*ObjectId::FromHex(h));
      }
    }
    if (!collide.empty()) {
      std::map<std::string, std::optional<Fingerprint>> hashes;
      MV_RETURN_IF_ERROR(vault.ReadMany(collide, [&](const ObjectId& id, Result<StoredMessage> m) {
        if (m.ok()) hashes[id.Hex()] = Fingerprint::Of(ToCrlf(m->raw));
      }));
      std::map<std::string, size_t> order;
      for (size_t i = 0; i < t.messages.size(); ++i) order[t.messages[i].id] = i;
      for (auto& [k, list] : by_key) {
        if (list.size() < 2) continue;
        std::sort(list.begin(), list.end(), [&](const std::string& a, const std::string& b) { return order[a] < order[b]; });
        for (size_t i = 0; i < list.size(); ++i) {
          if (dropped.count(list[i]) || !hashes[list[i]]) continue;
          for (size_t j = i + 1; j < list.size(); ++j) {
            if (!dropped.count(list[j]) && hashes[list[j]] && hashes[list[j]]->Same(*hashes[list[i]])) {
              dropped.insert(list[j]);
              t.copies.emplace_back(list[j], list[i]);
            }
          }
        }
      }
      std::erase_if(t.messages, [&](const PlannedMessage& pm) { return dropped.count(pm.id) > 0; });
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace mailvault::recovery
