#include "recovery/restore.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_map>

#include "control/jobs.h"
#include "control/keys.h"
#include "control/state.h"
#include "core/bytes.h"
#include "core/file_util.h"
#include "core/message.h"
#include "core/text.h"
#include "indexer/searcher.h"
#include "vault/crypto.h"
#include "vault/vault.h"

namespace mailvault::recovery {
namespace {

using nlohmann::json;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// A numeric loopback address (127.0.0.0/8, ::1) or "localhost": a name like 127.x.example
// could resolve anywhere.
bool IsLoopback(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// State store keys (docs/formats.md, "restore jobs"): one header per job, one record per
// target with its planned messages, and one journal record per (target, message).
std::string HeaderKey(const std::string& job) { return control::kRestoreHeaderPrefix + job; }
std::string TargetKey(const std::string& job, size_t t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%05zu", t);
  return control::kRestoreTargetPrefix + job + "/" + buf;
}
std::string OutcomePrefix(const std::string& job, size_t t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%05zu", t);
  return control::kRestoreOutcomePrefix + job + "/" + buf + "/";
}

const char* KindName(Outcome::Kind k) {
  switch (k) {
    case Outcome::Kind::kIntent: return "intent";
    case Outcome::Kind::kAppended: return "appended";
    case Outcome::Kind::kPresent: return "present";
    case Outcome::Kind::kFailed: return "failed";
  }
  return "intent";
}

std::string EncodeOutcome(const Outcome& o) {
  json j{{"k", KindName(o.kind)}, {"at", o.at}};
  if (o.uid) j["uid"] = o.uid;
  if (o.uid_validity) j["uv"] = o.uid_validity;
  if (!o.why.empty()) j["why"] = ToValidUtf8(o.why);  // a server's words may be any bytes
  return j.dump();
}

Result<Outcome> DecodeOutcome(std::string_view v) {
  json j = json::parse(v, nullptr, false);
  if (!j.is_object() || !j.contains("k")) return Error(ErrorCode::kCorruption, "a restore journal record is not readable");
  Outcome o;
  const std::string k = j.value("k", "");
  o.kind = k == "appended" ? Outcome::Kind::kAppended
           : k == "present" ? Outcome::Kind::kPresent
           : k == "failed"  ? Outcome::Kind::kFailed
                            : Outcome::Kind::kIntent;
  o.uid = j.value("uid", 0u);
  o.uid_validity = j.value("uv", 0u);
  o.why = j.value("why", "");
  o.at = j.value("at", int64_t{0});
  return o;
}

// What identifies a message for matching, before its content is compared: the normalised
// Message-ID and the Date. Mail without a Message-ID gets From and Subject in its key instead
// (the synthetic id hashes the body, which a server may have re-encoded).
std::string MatchKey(const MessageSummary& s) {
  const std::string date = s.date ? std::to_string(*s.date) : "-";
  if (!s.message_id_synthetic) return s.message_id + " " + date;
  return "(none) " + date + " " + NormalizeAddress(s.from) + " " + s.subject;
}

std::string UpperAscii(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

// The folder's name on a server whose personal namespace has this prefix. INBOX is INBOX
// everywhere (any case, RFC 3501); a name that has the prefix already is left alone.
std::string InNamespace(const std::string& folder, const std::string& prefix) {
  if (prefix.empty() || UpperAscii(folder) == "INBOX") return folder;
  if (UpperAscii(folder.substr(0, prefix.size())) == UpperAscii(prefix)) return folder;
  return prefix + folder;
}

// The decoded-part hashes, or nullopt when the message cannot be parsed. The size limit is
// raised by a tenth: a message near the vault's ceiling grows past it when sent with CRLF.
std::optional<std::set<std::string>> ContentHashesOf(std::string_view raw) {
  ParseOptions po;
  po.content_hashes = true;
  MessageLimits limits;
  limits.max_message_bytes += limits.max_message_bytes / 10;
  Result<ParsedMessage> p = ParseMessage(raw, limits, po);
  if (!p.ok()) return std::nullopt;
  return p->ContentHashes();
}

// For mail that cannot be parsed: the body after the header block, line ends made LF. Our own
// earlier append of such a message still matches (the same body), so it is not sent twice.
std::string BodyDigest(std::string_view raw) {
  size_t lf = raw.find("\n\n"), crlf = raw.find("\r\n\r\n");
  size_t start = std::min(lf == std::string_view::npos ? raw.size() : lf + 2, crlf == std::string_view::npos ? raw.size() : crlf + 4);
  std::string body;
  body.reserve(raw.size() - start);
  for (size_t i = start; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      if (i + 1 < raw.size() && raw[i + 1] == '\n') continue;
      body.push_back('\n');
      continue;
    }
    body.push_back(raw[i]);
  }
  return HexEncode(Sha256Of(body));
}

// What a folder's copy is compared by: the part hashes, or the body digest when unparseable.
struct Fingerprint {
  std::optional<std::set<std::string>> parts;
  std::string body;
  static Fingerprint Of(std::string_view raw) { return Fingerprint{ContentHashesOf(raw), BodyDigest(raw)}; }
  bool Same(const Fingerprint& o) const { return parts && o.parts ? *parts == *o.parts : body == o.body; }
};

// Shared by all workers: at most `rate` bytes per second leave, in bursts of up to one second.
class Bandwidth {
 public:
  explicit Bandwidth(uint64_t rate) : rate_(rate), next_(std::chrono::steady_clock::now()) {}
  void Take(uint64_t bytes) {
    if (rate_ == 0) return;
    std::chrono::steady_clock::time_point wake;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto now = std::chrono::steady_clock::now();
      if (next_ < now - std::chrono::seconds(1)) next_ = now - std::chrono::seconds(1);
      next_ += std::chrono::microseconds(bytes * 1000000 / rate_);
      wake = next_;
    }
    std::this_thread::sleep_until(wake);
  }

 private:
  uint64_t rate_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point next_;
};

// An error that retrying does not fix: wrong credentials, a mailbox with no identity.
bool Permanent(const Error& e) {
  return e.code() == ErrorCode::kInvalidArgument || e.code() == ErrorCode::kNotFound;
}

json OptionsJson(const RestoreOptions& o) {
  return json{{"folder", o.folder}, {"sent_folder", o.sent_folder}, {"into", o.into}, {"user_map", o.user_map},
              {"flags", o.flags}, {"workers", o.workers}, {"connections", o.connections}, {"bandwidth", o.bandwidth}, {"batch", o.batch}};
}

RestoreOptions OptionsFrom(const json& j) {
  RestoreOptions o;
  o.folder = j.value("folder", "");
  o.sent_folder = j.value("sent_folder", "Sent");
  o.into = j.value("into", "");
  o.user_map = j.value("user_map", std::map<std::string, std::string>{});
  o.flags = j.value("flags", std::vector<std::string>{});
  o.workers = j.value("workers", 4);
  o.connections = j.value("connections", size_t{3});
  o.bandwidth = j.value("bandwidth", uint64_t{0});
  o.batch = j.value("batch", size_t{128});
  return o;
}

json CriteriaJson(const RestoreCriteria& c) {
  json j{{"users", c.users}, {"by_date", c.by_date}, {"margin_before", c.margin_before},
         {"margin_after", c.margin_after}, {"query", c.query}};
  if (c.from) j["from"] = *c.from;
  if (c.until) j["until"] = *c.until;
  return j;
}

}  // namespace

// ---- inputs ----

Status ValidateRestoreOptions(const RestoreOptions& options) {
  for (const std::string& f : options.flags) {
    if (Status st = ValidateImapFlag(f); !st.ok()) return st.error().With("--flag");
  }
  return Status::Ok();
}

Result<ImapEndpoint> ParseImapUrl(const std::string& url, bool allow_plain) {
  ImapEndpoint e;
  std::string rest;
  if (url.rfind("imaps://", 0) == 0) {
    e.tls = ImapEndpoint::Tls::kImplicit;
    e.port = 993;
    rest = url.substr(8);
  } else if (url.rfind("imap://", 0) == 0) {
    e.tls = allow_plain ? ImapEndpoint::Tls::kNone : ImapEndpoint::Tls::kStartTls;
    e.port = 143;
    rest = url.substr(7);
  } else {
    return InvalidArgument("--to must be imap://HOST[:PORT] (STARTTLS) or imaps://HOST[:PORT], not \"" + url + "\"");
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos || rest.find('@') != std::string::npos) {
    return InvalidArgument("--to \"" + url + "\": give the host and port only (credentials go in --auth-file)");
  }
  size_t colon = rest.rfind(':');
  if (!rest.empty() && rest.front() == '[') {  // [v6]:port
    size_t close = rest.find(']');
    if (close == std::string::npos) return InvalidArgument("--to \"" + url + "\": unclosed [");
    e.host = rest.substr(1, close - 1);
    colon = rest.size() > close + 1 && rest[close + 1] == ':' ? close + 1 : std::string::npos;
  } else {
    e.host = rest.substr(0, colon);
  }
  if (colon != std::string::npos) {
    const std::string p = rest.substr(colon + 1);
    char* end = nullptr;
    unsigned long v = std::strtoul(p.c_str(), &end, 10);
    if (p.empty() || *end || v == 0 || v > 65535) return InvalidArgument("--to \"" + url + "\": bad port \"" + p + "\"");
    e.port = static_cast<uint16_t>(v);
  }
  if (e.host.empty()) return InvalidArgument("--to \"" + url + "\": no host");
  if (allow_plain && !IsLoopback(e.host)) {
    return InvalidArgument("--no-tls is allowed only to a loopback address (passwords would cross the network in clear)");
  }
  return e;
}

Result<Credentials> ReadCredentials(const std::string& path) {
  // The mode is checked on the open descriptor before a byte is read (ReadPrivateFile).
  Result<std::string> read = ReadPrivateFile(path, 16 << 20);
  if (!read.ok()) {
    if (read.error().code() == ErrorCode::kInvalidArgument) return InvalidArgument("the auth file " + read.error().message());
    return read.error().With("cannot read the auth file");
  }
  const std::string& text = *read;
  Credentials c;
  MV_RETURN_IF_ERROR(ForEachLine(text, [&](int lineno, std::string_view raw) -> Status {
    std::string line = Trim(raw);
    if (line.empty() || line[0] == '#') return Status::Ok();
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    size_t a = line.find_first_of(" \t");
    size_t b = a == std::string::npos ? a : line.find_first_not_of(" \t", a);
    size_t e = b == std::string::npos ? b : line.find_first_of(" \t", b);
    size_t p = e == std::string::npos ? e : line.find_first_not_of(" \t", e);
    if (p == std::string::npos) return InvalidArgument(where + "expected \"ADDRESS LOGIN PASSWORD\" or \"* LOGIN PASSWORD\"");
    std::string who = line.substr(0, a), login = line.substr(b, e - b), password = line.substr(p);
    if (who == "*") {
      if (c.admin) return InvalidArgument(where + "a second \"*\" line: give one administrator identity");
      c.admin = {login, password};
    } else {
      std::string addr = NormalizeAddress(who);
      if (addr.find('@') == std::string::npos && addr.empty()) return InvalidArgument(where + "no address");
      if (!c.per_user.emplace(addr, std::make_pair(login, password)).second) {
        return InvalidArgument(where + addr + " is listed twice");
      }
    }
    return Status::Ok();
  }));
  if (!c.admin && c.per_user.empty()) return InvalidArgument("the auth file " + path + " names no identity");
  return c;
}

Result<ImapCredentials> Credentials::For(const std::string& address) const {
  auto it = per_user.find(NormalizeAddress(address));
  if (it != per_user.end()) return ImapCredentials{it->second.first, it->second.second, ""};
  if (admin) return ImapCredentials{admin->first, admin->second, address};
  return NotFound("the auth file has no line for " + address + " and no \"* LOGIN PASSWORD\" administrator line");
}

// ---- selection ----

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
    if (searcher->Info().applied_change < vault.last_change()) {
      return Error(ErrorCode::kBusy, "the index is behind the vault (" + std::to_string(searcher->Info().applied_change) +
                                         " of " + std::to_string(vault.last_change()) +
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

// ---- the job record ----

Result<std::unique_ptr<RestoreJob>> RestoreJob::Create(control::StateStore* store, const RestoreTarget& target,
                                                       const RestoreCriteria& criteria, const RestoreOptions& options,
                                                       std::vector<PlannedTarget> plan, std::string id) {
  MV_RETURN_IF_ERROR(ValidateRestoreOptions(options));
  if (id.empty()) id = control::NewJobId(control::JobKind::kRestore);
  std::unique_ptr<RestoreJob> job(new RestoreJob(store, std::move(id)));
  job->status_ = "planned";
  job->created_ = Now();
  job->target_ = target;
  job->criteria_json_ = CriteriaJson(criteria).dump();
  job->options_json_ = OptionsJson(options).dump();
  job->options_ = options;
  job->targets_ = std::move(plan);
  control::StateStore::Batch batch;
  for (size_t i = 0; i < job->targets_.size(); ++i) {
    const PlannedTarget& t = job->targets_[i];
    json msgs = json::array(), copies = json::array();
    for (const PlannedMessage& m : t.messages) msgs.push_back(json::array({m.id, m.internal_date, m.size, m.sent}));
    for (const auto& [id, of] : t.copies) copies.push_back(json::array({id, of}));
    batch.emplace_back(TargetKey(job->id_, i), json{{"messages", msgs}, {"copies", copies}}.dump());
  }
  MV_RETURN_IF_ERROR(store->Write(batch));
  MV_RETURN_IF_ERROR(job->SaveHeader());
  return job;
}

Status RestoreJob::SaveHeader() const {
  if (!store_) return Status::Ok();
  json targets = json::array();
  for (const PlannedTarget& t : targets_) {
    targets.push_back(json{{"custodian", t.custodian}, {"mailbox", t.mailbox}, {"folder", t.folder}, {"n", t.messages.size()}});
  }
  json h{{"id", id_},
         {"status", status_},
         {"created", created_},
         {"updated", Now()},
         {"url", target_.url},
         {"host", target_.endpoint.host},
         {"port", target_.endpoint.port},
         {"tls", static_cast<int>(target_.endpoint.tls)},
         {"verify", target_.endpoint.verify_certificate},
         {"ca_file", target_.endpoint.ca_file},
         {"timeout", target_.endpoint.timeout.count()},
         {"auth_file", target_.auth_file},
         {"criteria", json::parse(criteria_json_)},
         {"options", json::parse(options_json_)},
         {"targets", targets}};
  return store_->Write({{HeaderKey(id_), h.dump()}});
}

Status RestoreJob::SetStatus(const std::string& status) {
  status_ = status;
  return SaveHeader();
}

Result<std::unique_ptr<RestoreJob>> RestoreJob::Load(control::StateStore* store, const std::string& id) {
  MV_ASSIGN_OR_RETURN(std::optional<std::string> head, store->Get(HeaderKey(id)));
  if (!head) return NotFound("no restore job " + id + " (see `mailvault job list`)");
  json h = json::parse(*head, nullptr, false);
  if (!h.is_object()) return Error(ErrorCode::kCorruption, "restore job " + id + ": its record is not readable");
  std::unique_ptr<RestoreJob> job(new RestoreJob(store, id));
  job->status_ = h.value("status", "");
  job->created_ = h.value("created", int64_t{0});
  job->target_.url = h.value("url", "");
  job->target_.endpoint.host = h.value("host", "");
  job->target_.endpoint.port = h.value("port", uint16_t{143});
  job->target_.endpoint.tls = static_cast<ImapEndpoint::Tls>(h.value("tls", 1));
  job->target_.endpoint.verify_certificate = h.value("verify", true);
  job->target_.endpoint.ca_file = h.value("ca_file", "");
  job->target_.endpoint.timeout = std::chrono::seconds(h.value("timeout", int64_t{60}));
  job->target_.auth_file = h.value("auth_file", "");
  job->criteria_json_ = h["criteria"].dump();
  job->options_json_ = h["options"].dump();
  job->options_ = OptionsFrom(h["options"]);
  const json& targets = h["targets"];
  for (size_t i = 0; i < targets.size(); ++i) {
    PlannedTarget t;
    t.custodian = targets[i].value("custodian", "");
    t.mailbox = targets[i].value("mailbox", "");
    t.folder = targets[i].value("folder", "");
    MV_ASSIGN_OR_RETURN(std::optional<std::string> rec, store->Get(TargetKey(id, i)));
    if (!rec) return Error(ErrorCode::kCorruption, "restore job " + id + ": target " + std::to_string(i) + " is missing");
    json r = json::parse(*rec, nullptr, false);
    if (!r.is_object()) return Error(ErrorCode::kCorruption, "restore job " + id + ": target " + std::to_string(i) + " is not readable");
    for (const json& m : r["messages"]) {
      t.messages.push_back(PlannedMessage{m[0].get<std::string>(), m[1].get<int64_t>(), m[2].get<uint64_t>(), m[3].get<bool>()});
    }
    for (const json& cp : r["copies"]) t.copies.emplace_back(cp[0].get<std::string>(), cp[1].get<std::string>());
    job->targets_.push_back(std::move(t));
  }
  return job;
}

Result<std::vector<JobReport>> RestoreJob::List(control::StateStore* store) {
  std::vector<std::string> ids;
  MV_RETURN_IF_ERROR(store->Scan(control::kRestoreHeaderPrefix, [&](std::string_view key, std::string_view) {
    ids.emplace_back(key.substr(3));
    return true;
  }));
  std::vector<JobReport> out;
  for (const std::string& id : ids) {
    MV_ASSIGN_OR_RETURN(std::unique_ptr<RestoreJob> job, Load(store, id));
    MV_ASSIGN_OR_RETURN(JobReport r, job->Report());
    out.push_back(std::move(r));
  }
  return out;
}

namespace {

Result<std::map<std::string, Outcome>> LoadOutcomes(control::StateStore* store, const std::string& job, size_t t) {
  std::map<std::string, Outcome> out;
  if (!store) return out;
  const std::string prefix = OutcomePrefix(job, t);
  Status bad = Status::Ok();
  MV_RETURN_IF_ERROR(store->Scan(prefix, [&](std::string_view key, std::string_view value) {
    Result<Outcome> o = DecodeOutcome(value);
    if (!o.ok()) {
      bad = o.error();
      return false;
    }
    out[std::string(key.substr(prefix.size()))] = std::move(o).value();
    return true;
  }));
  MV_RETURN_IF_ERROR(bad);
  return out;
}

void Tally(const PlannedTarget& t, const std::map<std::string, Outcome>& outcomes, TargetReport* r) {
  r->custodian = t.custodian;
  r->mailbox = t.mailbox;
  r->folder = t.folder;
  r->selected = t.messages.size();
  r->present = r->appended = r->failed = r->pending = r->bytes = 0;
  r->failures.clear();
  for (const PlannedMessage& m : t.messages) {
    auto it = outcomes.find(m.id);
    if (it == outcomes.end() || it->second.kind == Outcome::Kind::kIntent) {
      ++r->pending;
      continue;
    }
    switch (it->second.kind) {
      case Outcome::Kind::kPresent: ++r->present; break;
      case Outcome::Kind::kAppended:
        ++r->appended;
        r->bytes += m.size;
        break;
      case Outcome::Kind::kFailed:
        ++r->failed;
        r->failures.emplace_back(m.id, it->second.why);
        break;
      default: break;
    }
  }
}

}  // namespace

Result<JobReport> RestoreJob::Report() const {
  JobReport r;
  r.id = id_;
  r.status = status_;
  r.created = created_;
  r.target = target_.url;
  for (size_t i = 0; i < targets_.size(); ++i) {
    MV_ASSIGN_OR_RETURN(auto outcomes, LoadOutcomes(store_, id_, i));
    TargetReport tr;
    Tally(targets_[i], outcomes, &tr);
    r.targets.push_back(std::move(tr));
  }
  return r;
}

// ---- running ----

namespace {

// One pass over one target: log in, take the inventory, decide, append. Returns an error when
// the pass could not finish (the caller retries a broken connection; wrong credentials are
// Permanent). Outcomes are recorded as they are known.
struct TargetPass {
  Vault& vault;
  control::StateStore* store;
  const std::string& job;
  size_t index;
  const PlannedTarget& target;
  const RestoreOptions& options;
  const ImapEndpoint& endpoint;
  const Credentials& credentials;
  Bandwidth& bandwidth;
  std::atomic<bool>* stop;
  RestoreJob::Progress* progress;
  bool dry_run;
  std::map<std::string, Outcome>& outcomes;
  uint64_t* dry_bytes;

  std::mutex outcomes_mu;  // appenders record from several threads
  std::string folder;      // target.folder in the server's namespace
  ImapCredentials cred;
  ImapMailbox mailbox;     // as selected before this pass appended
  // Matching hands the appenders what the folder lacks.
  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<const PlannedMessage*> queue;
  bool matching_done = false;
  Status failed = Status::Ok();

  // Intents are durable before their APPEND leaves (synced). Outcomes need not wait for the
  // disk: one lost in a crash is recomputed by the next pass, which re-reads the folder.
  Status Record(const std::vector<std::pair<std::string, Outcome>>& batch) {
    control::StateStore::Batch w;
    {
      std::lock_guard<std::mutex> l(outcomes_mu);
      for (const auto& [id, o] : batch) {
        outcomes[id] = o;
        w.emplace_back(OutcomePrefix(job, index) + id, EncodeOutcome(o));
      }
    }
    if (dry_run || !store || w.empty()) return Status::Ok();
    const bool intents = batch.front().second.kind == Outcome::Kind::kIntent;
    return store->Write(w, intents);
  }

  Result<std::unique_ptr<ImapClient>> Open(const ImapCredentials& cred) {
    MV_ASSIGN_OR_RETURN(std::unique_ptr<ImapClient> client, ImapClient::Connect(endpoint));
    if (Status s = client->Login(cred); !s.ok()) {
      return s.error().With("logging in to " + target.mailbox + "'s mailbox as " + cred.login);
    }
    return client;
  }

  // The vault's bytes of these messages, by id, and `list` cut to those that could be read: a
  // message the vault cannot give back is a failure of its own (recorded), not of the folder.
  Result<std::unordered_map<std::string, std::string>> ReadRaw(std::vector<const PlannedMessage*>* list) {
    std::vector<ObjectId> ids;
    for (const PlannedMessage* m : *list) ids.push_back(*ObjectId::FromHex(m->id));
    std::unordered_map<std::string, std::string> raw;
    std::vector<std::pair<std::string, Outcome>> unreadable;
    MV_RETURN_IF_ERROR(vault.ReadMany(ids, [&](const ObjectId& id, Result<StoredMessage> m) {
      if (!m.ok()) {
        Outcome o;
        o.kind = Outcome::Kind::kFailed;
        o.why = "cannot read it from the vault: " + m.error().message() + " (run mailvault verify)";
        o.at = Now();
        unreadable.emplace_back(id.Hex(), o);
        return;
      }
      raw[id.Hex()] = std::move(m->raw);
    }));
    if (!unreadable.empty()) {
      progress->failed += unreadable.size();
      MV_RETURN_IF_ERROR(Record(unreadable));
      std::erase_if(*list, [&](const PlannedMessage* m) { return raw.count(m->id) == 0; });
    }
    return raw;
  }

  Status Run() {
    std::vector<const PlannedMessage*> pending;
    for (const PlannedMessage& m : target.messages) {
      auto it = outcomes.find(m.id);
      if (it == outcomes.end() || it->second.kind == Outcome::Kind::kIntent || it->second.kind == Outcome::Kind::kFailed) {
        pending.push_back(&m);
      }
    }
    if (pending.empty()) return Status::Ok();
    MV_RETURN_IF_ERROR(Settle(pending));
    MV_ASSIGN_OR_RETURN(cred, credentials.For(target.mailbox));
    MV_ASSIGN_OR_RETURN(std::unique_ptr<ImapClient> client, Open(cred));
    // Folders other than INBOX live under the personal namespace ("Sent" is "INBOX/Sent" on
    // Cyrus). A folder given with the prefix already is taken as it is.
    MV_ASSIGN_OR_RETURN(std::string prefix, client->PersonalPrefix());
    folder = InNamespace(target.folder, prefix);
    Result<ImapMailbox> box = client->Select(folder, dry_run);
    bool exists = box.ok();
    if (!exists && !dry_run) {
      MV_RETURN_IF_ERROR(client->Create(folder));
      box = client->Select(folder, false);
      if (!box.ok()) return box.error().With("selecting the folder just created, " + folder);
      exists = true;
    }
    if (box.ok()) mailbox = *box;
    // The inventory: what the folder holds, by key. The body of a candidate is fetched only
    // when a selected message has its key.
    std::unordered_map<std::string, std::vector<uint32_t>> by_key;
    if (exists && box->exists > 0) {
      MV_ASSIGN_OR_RETURN(std::vector<ImapMessageInfo> inv, client->FetchHeaders({"MESSAGE-ID", "DATE", "FROM", "SUBJECT"}));
      for (const ImapMessageInfo& i : inv) {
        // A copy flagged \Deleted goes at the next EXPUNGE: it does not make ours redundant.
        if (!i.deleted) by_key[MatchKey(SummarizeHeaders(i.header + "\r\n"))].push_back(i.uid);
      }
    }
    // Appenders take what matching leaves, while matching goes on (their own connections).
    std::vector<std::thread> appenders;
    if (!dry_run) {
      const size_t n = std::clamp<size_t>((pending.size() + options.batch - 1) / std::max<size_t>(options.batch, 1), 1,
                                          std::max<size_t>(options.connections, 1));
      for (size_t i = 0; i < n; ++i) appenders.emplace_back([this] { Appender(); });
    }
    Status matched = Match(pending, by_key, *client);
    {
      std::lock_guard<std::mutex> l(queue_mu);
      matching_done = true;
      if (!matched.ok() && failed.ok()) failed = matched;
    }
    queue_cv.notify_all();
    for (std::thread& t : appenders) t.join();
    (void)client->Logout();
    if (!failed.ok()) return failed;
    if (stop && stop->load()) return Error(ErrorCode::kBusy, "stopped");
    return Status::Ok();
  }

  // Decides, chunk by chunk, what the folder has already; queues the rest for the appenders.
  Status Match(const std::vector<const PlannedMessage*>& pending,
               const std::unordered_map<std::string, std::vector<uint32_t>>& by_key, ImapClient& client) {
    if (by_key.empty()) return Queue(pending);  // an empty folder has nothing to match
    std::unordered_map<uint32_t, std::optional<Fingerprint>> server_hashes;
    constexpr size_t kChunk = 256;
    for (size_t at = 0, next = 0; at < pending.size(); at = next) {
      if (GivingUp()) return Status::Ok();
      uint64_t bytes = 0;
      for (next = at; next < pending.size() && next - at < kChunk && (next == at || bytes + pending[next]->size <= kChunkBytes); ++next) {
        bytes += pending[next]->size;
      }
      std::vector<const PlannedMessage*> chunk(pending.begin() + at, pending.begin() + next);
      MV_ASSIGN_OR_RETURN(auto raw, ReadRaw(&chunk));
      // Candidates by key; their bodies in one fetch.
      std::vector<const std::vector<uint32_t>*> cands(chunk.size(), nullptr);
      std::vector<uint32_t> need;
      for (size_t i = 0; i < chunk.size(); ++i) {
        auto it = by_key.find(MatchKey(SummarizeHeaders(raw[chunk[i]->id])));
        if (it == by_key.end()) continue;
        cands[i] = &it->second;
        for (uint32_t uid : it->second) {
          if (!server_hashes.count(uid)) need.push_back(uid);
        }
      }
      if (!need.empty()) {
        MV_ASSIGN_OR_RETURN(auto bodies, client.FetchMessages(need));
        for (auto& [uid, body] : bodies) server_hashes[uid] = Fingerprint::Of(body);
        for (uint32_t uid : need) server_hashes.emplace(uid, std::nullopt);  // expunged meanwhile
      }
      std::vector<std::pair<std::string, Outcome>> present;
      std::vector<const PlannedMessage*> absent;
      for (size_t i = 0; i < chunk.size(); ++i) {
        uint32_t match = 0;
        if (cands[i]) {
          // Hashed as IMAP carries it (CRLF, a bare CR made a line end): our own earlier
          // append of this message then hashes the same, whatever odd line ends it had.
          const Fingerprint mine = Fingerprint::Of(ToCrlf(raw[chunk[i]->id]));
          for (uint32_t uid : *cands[i]) {
            const auto& theirs = server_hashes[uid];
            if (theirs && mine.Same(*theirs)) {
              match = uid;
              break;
            }
          }
        }
        if (match) {
          Outcome o;
          o.kind = Outcome::Kind::kPresent;
          o.uid = match;
          o.uid_validity = mailbox.uid_validity;
          o.why = "already in the mailbox as UID " + std::to_string(match) + ": same Message-ID and Date, same decoded content";
          o.at = Now();
          // Sent by an earlier pass of this job whose answer was lost (a kill, a cut
          // connection): found at or after the UIDNEXT its intent recorded, it is ours.
          std::optional<Outcome> before = Previous(chunk[i]->id);
          if (before && before->kind == Outcome::Kind::kIntent && before->uid_validity == mailbox.uid_validity &&
              match >= before->uid) {
            o.kind = Outcome::Kind::kAppended;
            o.why = "appended by an earlier pass (its answer was lost); found as UID " + std::to_string(match);
          }
          present.emplace_back(chunk[i]->id, o);
        } else {
          absent.push_back(chunk[i]);
        }
      }
      for (const auto& [id, o] : present) ++(o.kind == Outcome::Kind::kAppended ? progress->appended : progress->present);
      MV_RETURN_IF_ERROR(Record(present));
      MV_RETURN_IF_ERROR(Queue(absent));
    }
    return Status::Ok();
  }

  Status Queue(const std::vector<const PlannedMessage*>& absent) {
    if (dry_run) {
      for (const PlannedMessage* m : absent) *dry_bytes += m->size;
      return Status::Ok();
    }
    {
      std::lock_guard<std::mutex> l(queue_mu);
      queue.insert(queue.end(), absent.begin(), absent.end());
    }
    queue_cv.notify_all();
    return Status::Ok();
  }

  // An APPEND whose connection timed out or was cut (or whose sender was killed) may still be
  // committing on the server: the command is not over there when it is over here. Reading the
  // folder before it lands would miss it and send it again, so a pass that finds intents waits
  // until the youngest is older than the timeout plus a grace period.
  Status Settle(const std::vector<const PlannedMessage*>& pending) {
    if (dry_run) return Status::Ok();
    int64_t youngest = 0;
    for (const PlannedMessage* m : pending) {
      std::optional<Outcome> o = Previous(m->id);
      if (o && o->kind == Outcome::Kind::kIntent) youngest = std::max(youngest, o->at);
    }
    const int64_t until = youngest + static_cast<int64_t>(endpoint.timeout.count()) + kSettleGraceSeconds;
    while (youngest && Now() < until) {
      if (stop && stop->load()) return Error(ErrorCode::kBusy, "stopped");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return Status::Ok();
  }
  static constexpr int64_t kSettleGraceSeconds = 5;
  static constexpr uint64_t kChunkBytes = 32ull << 20;  // per chunk held in memory, per connection

  std::optional<Outcome> Previous(const std::string& id) {
    std::lock_guard<std::mutex> l(outcomes_mu);
    auto it = outcomes.find(id);
    if (it == outcomes.end()) return std::nullopt;
    return it->second;
  }

  bool GivingUp() {
    std::lock_guard<std::mutex> l(queue_mu);
    return !failed.ok() || (stop && stop->load());
  }

  void Fail(const Error& e) {
    {
      std::lock_guard<std::mutex> l(queue_mu);
      if (failed.ok()) failed = e;
    }
    queue_cv.notify_all();
  }

  // One connection appending chunks from the queue until matching is done and the queue empty.
  // A server syncs each message to disk before it answers, so several connections keep several
  // flushes in flight. Each chunk: its intents in one synced write, the chunk as one
  // MULTIAPPEND (or `batch` pipelined APPENDs), then its outcomes in one write.
  void Appender() {
    const size_t batch = std::max<size_t>(options.batch, 1);
    std::unique_ptr<ImapClient> client;
    for (;;) {
      std::vector<const PlannedMessage*> chunk;
      {
        std::unique_lock<std::mutex> l(queue_mu);
        queue_cv.wait(l, [&] { return !failed.ok() || (stop && stop->load()) || matching_done || queue.size() >= batch; });
        if (!failed.ok() || (stop && stop->load())) break;
        if (queue.empty()) {
          if (matching_done) break;
          continue;
        }
        // Share what is left evenly once matching is over, so no connection idles at the end.
        size_t take = batch;
        if (matching_done) take = std::clamp<size_t>(queue.size() / std::max<size_t>(options.connections, 1), 1, batch);
        take = std::min(take, queue.size());
        // Memory is bounded by bytes too: a chunk of large messages is cut short.
        uint64_t bytes = 0;
        for (size_t k = 0; k < take; ++k) {
          bytes += queue[k]->size;
          if (bytes > kChunkBytes && k > 0) {
            take = k;
            break;
          }
        }
        chunk.assign(queue.begin(), queue.begin() + take);
        queue.erase(queue.begin(), queue.begin() + take);
      }
      if (!client) {
        Result<std::unique_ptr<ImapClient>> c = Open(cred);
        if (!c.ok()) return Fail(c.error());
        client = std::move(*c);
      }
      Result<std::unordered_map<std::string, std::string>> raw = ReadRaw(&chunk);
      if (!raw.ok()) return Fail(raw.error());
      if (chunk.empty()) continue;
      std::vector<std::pair<std::string, Outcome>> intents;
      std::vector<ImapAppend> appends;
      uint64_t bytes = 0;
      for (const PlannedMessage* m : chunk) {
        Outcome o;
        o.kind = Outcome::Kind::kIntent;
        o.uid_validity = mailbox.uid_validity;
        o.uid = mailbox.uid_next;  // the folder's UIDNEXT before this pass appended
        o.at = Now();
        intents.emplace_back(m->id, o);
        ImapAppend a;
        a.message = std::move((*raw)[m->id]);
        a.flags = options.flags;
        if (m->sent && std::find(a.flags.begin(), a.flags.end(), "\\Seen") == a.flags.end()) a.flags.push_back("\\Seen");
        a.internal_date = m->internal_date;
        bytes += a.message.size();
        appends.push_back(std::move(a));
      }
      if (Status s = Record(intents); !s.ok()) return Fail(s.error());
      bandwidth.Take(bytes);
      // One MULTIAPPEND where offered; on a refusal (one message the server will not take, a
      // quota) the chunk goes again one message at a time, so each gets its own answer.
      Result<std::vector<ImapAppendResult>> results = std::vector<ImapAppendResult>{};
      if (client->Has("MULTIAPPEND") && appends.size() > 1) {
        ImapAppendResult refusal;
        results = client->MultiAppend(folder, appends, &refusal);
        if (results.ok() && results->empty()) results = client->Append(folder, appends, batch);
      } else {
        results = client->Append(folder, appends, batch);
      }
      if (!results.ok()) return Fail(results.error());
      std::vector<std::pair<std::string, Outcome>> done;
      for (size_t i = 0; i < chunk.size(); ++i) {
        const ImapAppendResult& r = (*results)[i];
        Outcome o;
        o.at = Now();
        if (r.ok) {
          o.kind = Outcome::Kind::kAppended;
          o.uid = r.uid;
          o.uid_validity = r.uid_validity;
          ++progress->appended;
        } else {
          o.kind = Outcome::Kind::kFailed;
          std::string lower = r.text;
          std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
          const bool quota = r.code == "OVERQUOTA" || lower.find("quota") != std::string::npos;
          o.why = std::string(quota ? "over quota" : "refused") + ": the server said NO" +
                  (r.code.empty() ? "" : " [" + r.code + "]") + " " + r.text;
          ++progress->failed;
        }
        done.emplace_back(chunk[i]->id, o);
      }
      if (Status s = Record(done); !s.ok()) return Fail(s.error());
    }
    if (client) (void)client->Logout();
  }
};

}  // namespace

Result<JobReport> RestoreJob::Run(Vault& vault, const Credentials& credentials, std::atomic<bool>* stop,
                                  Progress* progress, bool dry_run) {
  // A job stored before flags were checked may hold one that injects IMAP commands.
  MV_RETURN_IF_ERROR(ValidateRestoreOptions(options_));
  Progress local;
  if (!progress) progress = &local;
  if (!dry_run) MV_RETURN_IF_ERROR(SetStatus("running"));
  Bandwidth bandwidth(options_.bandwidth);
  std::vector<TargetReport> reports(targets_.size());
  std::vector<std::map<std::string, Outcome>> outcomes(targets_.size());
  for (size_t i = 0; i < targets_.size(); ++i) {
    MV_ASSIGN_OR_RETURN(outcomes[i], LoadOutcomes(dry_run ? nullptr : store_, id_, i));
    progress->selected += targets_[i].messages.size();
    for (const auto& [id, o] : outcomes[i]) {
      if (o.kind == Outcome::Kind::kPresent) ++progress->present;
      if (o.kind == Outcome::Kind::kAppended) ++progress->appended;
    }
  }
  progress->targets_left = targets_.size();
  std::mutex mu;
  size_t next = 0;
  std::vector<uint64_t> dry_bytes(targets_.size(), 0);
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> l(mu);
        if (next >= targets_.size()) return;
        i = next++;
      }
      // A broken connection or a restarted server is retried with growing pauses (about a
      // minute in all); wrong credentials are not (servers slow down repeated failures).
      static constexpr int kPauses[] = {1, 2, 4, 8, 15, 30};
      for (int attempt = 0;; ++attempt) {
        if (stop && stop->load()) {
          reports[i].error = "stopped before it finished";
          break;
        }
        auto settled = [&] {
          return std::count_if(outcomes[i].begin(), outcomes[i].end(),
                               [](const auto& kv) { return kv.second.kind != Outcome::Kind::kIntent; });
        };
        const auto settled_before = settled();
        TargetPass pass{vault, dry_run ? nullptr : store_, id_, i, targets_[i], options_, target_.endpoint, credentials,
                        bandwidth, stop, progress, dry_run, outcomes[i], &dry_bytes[i]};
        Status s = pass.Run();
        // A pass that got somewhere earns a fresh set of retries (a link cut every few minutes
        // must not end a long restore).
        if (!s.ok() && settled() > settled_before) attempt = -1;
        if (s.ok()) {
          reports[i].error.clear();
          break;
        }
        reports[i].error = ToValidUtf8(s.error().message());
        if (Permanent(s.error()) || dry_run || attempt >= static_cast<int>(std::size(kPauses))) break;
        if (stop && stop->load()) break;
        for (int w = 0; w < kPauses[std::max(attempt, 0)] * 10 && !(stop && stop->load()); ++w) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      --progress->targets_left;
    }
  };
  std::vector<std::thread> threads;
  const int n = std::max(1, std::min<int>(options_.workers, static_cast<int>(targets_.size())));
  for (int w = 0; w < n; ++w) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();

  JobReport report;
  report.id = id_;
  report.created = created_;
  report.target = target_.url;
  bool any_failed = false, any_unfinished = false;
  for (size_t i = 0; i < targets_.size(); ++i) {
    TargetReport& tr = reports[i];
    std::string error = tr.error;
    Tally(targets_[i], outcomes[i], &tr);
    tr.error = error;
    if (dry_run) tr.bytes = dry_bytes[i];
    any_failed |= tr.failed > 0;
    any_unfinished |= !tr.error.empty() || (!dry_run && tr.pending > 0);
  }
  report.targets = std::move(reports);
  if (dry_run) {
    report.status = "planned";
    return report;
  }
  const bool stopped = stop && stop->load();
  std::string status = stopped ? "interrupted" : any_unfinished || any_failed ? "failed" : "done";
  if (stopped && status_ == "cancelled") status = "cancelled";
  MV_RETURN_IF_ERROR(SetStatus(status));
  report.status = status;
  report.updated = Now();
  return report;
}

Result<JobReport> DryRun(Vault& vault, const RestoreTarget& target, const Credentials& credentials,
                         const RestoreOptions& options, std::vector<PlannedTarget> plan) {
  MV_RETURN_IF_ERROR(ValidateRestoreOptions(options));
  RestoreJob job(nullptr, "dry-run");
  job.target_ = target;
  job.options_ = options;
  job.targets_ = std::move(plan);
  return job.Run(vault, credentials, nullptr, nullptr, true);
}

// ---- reports as JSON ----

json ReportJson(const JobReport& r) {
  json boxes = json::array();
  uint64_t selected = 0, present = 0, appended = 0, failed = 0, pending = 0;
  for (const TargetReport& t : r.targets) {
    json failures = json::array();
    for (const auto& [id, why] : t.failures) failures.push_back(json{{"id", id}, {"why", why}});
    json b{{"user", t.custodian}, {"mailbox", t.mailbox}, {"folder", t.folder}, {"selected", t.selected},
           {"present", t.present}, {"appended", t.appended}, {"failed", t.failed}, {"pending", t.pending},
           {"bytes", t.bytes}, {"failures", failures}};
    if (!t.error.empty()) b["error"] = t.error;
    boxes.push_back(b);
    selected += t.selected;
    present += t.present;
    appended += t.appended;
    failed += t.failed;
    pending += t.pending;
  }
  return json{{"job", r.id},
              {"status", r.status},
              {"target", r.target},
              {"created", r.created},
              {"mailboxes", boxes},
              {"totals", {{"selected", selected}, {"present", present}, {"appended", appended}, {"failed", failed},
                          {"pending", pending}}}};
}


json PlanJson(const JobReport& r) {
  json plan = json::array();
  for (const TargetReport& t : r.targets) {
    json p{{"user", t.custodian}, {"mailbox", t.mailbox}, {"folder", t.folder}, {"selected", t.selected},
           {"present", t.present}, {"to_append", t.pending}, {"bytes", t.bytes}};
    if (!t.error.empty()) p["error"] = t.error;
    plan.push_back(p);
  }
  return json{{"plan", plan}};
}

}  // namespace mailvault::recovery
