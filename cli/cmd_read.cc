// list, show, cat, export: reading the vault.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <optional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "capture/mail_source.h"
#include "cli/commands.h"
#include "cli/shell_state.h"
#include "core/bytes.h"
#include "core/file_util.h"
#include "core/message.h"
#include "vault/pack.h"

namespace mailvault::cli {
namespace {

using nlohmann::json;

// JSON must be valid UTF-8; mail text was made valid when parsed, but be safe.
std::string Dump(const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace); }

json SummaryJson(const ObjectId& id, const MessageMeta& m, const MessageSummary& s) {
  return json{{"id", id.Hex()},
              {"message_id", s.message_id},
              {"message_id_synthetic", s.message_id_synthetic},
              {"date", s.date ? json(FormatDate(s.date, s.date_utc_offset_minutes)) : json(nullptr)},
              {"from", s.from},
              {"subject", s.subject},
              {"size", m.raw_size}};
}

json EnvelopeJson(const StoredEnvelope& se) {
  const Envelope& e = se.envelope;
  json j{{"capture_time", FormatDate(e.capture_time_us / 1000000)},
         {"source", e.source},
         {"recipients", e.recipients},
         {"stored_in", json{{"pack", PackFileName(se.where.pack)}, {"offset", se.where.offset}, {"length", se.where.length}}}};
  if (!e.custodian.empty()) j["custodian"] = e.custodian;
  if (!e.sender.empty()) j["sender"] = e.sender;
  if (!e.journal_report.empty()) j["journal_report"] = e.journal_report;
  if (!e.note.empty()) j["note"] = e.note;
  return j;
}

std::string AddressList(const std::vector<Address>& list) {
  std::string s;
  for (const Address& a : list) {
    if (!s.empty()) s += ", ";
    s += a.name.empty() ? a.address : a.name + " <" + a.address + ">";
  }
  return s;
}

json Addresses(const std::vector<Address>& list) {
  json j = json::array();
  for (const Address& a : list) j.push_back(json{{"name", a.name}, {"address", a.address}});
  return j;
}

// Opens the vault named by the global options, or reports why not.
Handle<Vault> OpenOrFail(GlobalOptions& g, int* exit_code) {
  if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
    *exit_code = Fail(s.error());
    return nullptr;
  }
  Result<Handle<Vault>> v = OpenVault(g);
  if (!v.ok()) {
    *exit_code = Fail(v.error());
    return nullptr;
  }
  return std::move(*v);
}

// Opens the vault with its audit trail, for commands that show or write out mail: like the REST
// API, the shell records who read what, and the entry is durable before the content goes out.
std::optional<ShellState> OpenAuditedOrFail(GlobalOptions& g, int* exit_code) {
  if (!ResolveOrFail(g, exit_code)) return std::nullopt;
  Result<ShellState> s = OpenShellState(g, "while `mailvault serve` runs, read mail through the REST API");
  if (!s.ok()) {
    *exit_code = Fail(s.error().With("reading mail is audited, and the audit trail cannot be opened"));
    return std::nullopt;
  }
  return std::move(*s);
}

// Records the audit entry for showing or writing out mail; false (and a failure reported) when it
// could not be made durable: then nothing may be shown.
bool AuditOrFail(ShellState& s, const std::string& action, const std::string& target, json details, int* exit_code) {
  if (Status st = AuditShell(s, action, target, std::move(details)); !st.ok()) {
    *exit_code = Fail(st.error().With("cannot record the audit entry, so nothing is shown"));
    return false;
  }
  return true;
}

}  // namespace

void AddListCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("list", "list stored messages in capture order");
  thread_local bool as_json = false;
  as_json = false;
  cmd->add_flag("--json", as_json, "print a JSON array");
  cmd->callback([&g, exit_code] {
    auto vault = OpenOrFail(g, exit_code);
    if (!vault) return;
    bool first = true;
    if (as_json) Out() << "[";
    uint64_t unreadable = 0;
    Status s = vault->ForEachMessage([&](const ObjectId& id, const MessageMeta& m) {
      // Headers are read from the message itself: the catalog holds no mail content.
      Result<std::string> raw = vault->ReadMessage(id);
      if (!raw.ok()) {
        ++unreadable;
        Err() << "mailvault: " << raw.error().ToString() << "\n";
        return true;
      }
      MessageSummary sum = SummarizeHeaders(*raw);
      if (as_json) {
        Out() << (first ? "\n" : ",\n") << SummaryJson(id, m, sum).dump(-1, ' ', false, json::error_handler_t::replace);
      } else {
        Out() << id.ShortHex() << "  " << FormatDate(sum.date, sum.date_utc_offset_minutes) << "  "
                  << (sum.from.empty() ? "-" : sum.from) << "  " << sum.subject.substr(0, 60) << "  " << m.raw_size << "\n";
      }
      first = false;
      return true;
    });
    if (s.ok() && unreadable) {
      s = Corruption(std::to_string(unreadable) + " messages could not be read; run `mailvault verify`");
    }
    if (as_json) Out() << (first ? "]\n" : "\n]\n");
    if (!s.ok()) *exit_code = Fail(s.error());
  });
}

void AddShowCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("show", "show a message's metadata, envelopes, fingerprints and where it is stored");
  thread_local std::string id_arg;
  id_arg = {};
  thread_local bool as_json = false;
  as_json = false;
  cmd->add_option("ID", id_arg, "message id (or a unique prefix of at least 6 hex digits)")->required();
  cmd->add_flag("--json", as_json, "print as JSON");
  cmd->callback([&g, exit_code] {
    std::optional<ShellState> state = OpenAuditedOrFail(g, exit_code);
    if (!state) return;
    Vault* vault = state->vault.get();
    Result<ObjectId> id = vault->Resolve(id_arg);
    if (!id.ok()) {
      *exit_code = Fail(id.error());
      return;
    }
    Result<MessageMeta> meta = vault->GetMeta(*id);
    Result<std::vector<StoredEnvelope>> envs = meta.ok() ? vault->GetEnvelopes(*id) : Result<std::vector<StoredEnvelope>>(meta.error());
    Result<std::string> raw = envs.ok() ? vault->ReadMessage(*id) : Result<std::string>(envs.error());
    if (!raw.ok()) {
      *exit_code = Fail(raw.error());
      return;
    }
    Result<ParsedMessage> parsed = ParseMessage(*raw, g.vault_options.limits);
    MessageSummary sum = SummarizeHeaders(*raw);
    std::string warning = meta->has_warning ? vault->Warning(*id).value() : "";
    json j = SummaryJson(*id, *meta, sum);
    j["sha256"] = id->Hex();
    j["stored_in"] = json{{"pack", PackFileName(meta->where.pack)}, {"offset", meta->where.offset}, {"length", meta->where.length}};
    j["envelopes"] = json::array();
    for (const StoredEnvelope& e : *envs) j["envelopes"].push_back(EnvelopeJson(e));
    if (!warning.empty()) j["warning"] = warning;
    if (parsed.ok()) {
      const ParsedMessage& p = *parsed;
      j["to"] = Addresses(p.to);
      j["cc"] = Addresses(p.cc);
      j["bcc"] = Addresses(p.bcc);
      j["in_reply_to"] = p.in_reply_to;
      j["references"] = p.references;
      j["header_key"] = p.HeaderKey();
      j["content_hashes"] = p.ContentHashes();
      json parts = json::array();
      for (const MimePart& mp : p.parts) {
        json pj{{"depth", mp.depth}, {"content_type", mp.content_type}, {"size", mp.decoded_size}};
        if (!mp.filename.empty()) pj["filename"] = mp.filename;
        if (!mp.charset.empty()) pj["charset"] = mp.charset;
        if (mp.is_attachment) pj["attachment"] = true;
        if (!mp.content_hash.empty()) pj["sha256"] = mp.content_hash;
        parts.push_back(pj);
      }
      j["parts"] = parts;
    } else {
      j["parse_error"] = parsed.error().message();
    }
    if (!AuditOrFail(*state, "message.view", id->Hex(), json::object(), exit_code)) return;
    if (as_json) {
      Out() << Dump(j) << "\n";
      return;
    }
    Out() << "id:          " << id->Hex() << "\n"
              << "message-id:  " << sum.message_id << (sum.message_id_synthetic ? " (synthetic)" : "") << "\n"
              << "date:        " << FormatDate(sum.date, sum.date_utc_offset_minutes) << "\n"
              << "from:        " << (sum.from_name.empty() ? sum.from : sum.from_name + " <" + sum.from + ">") << "\n"
              << "subject:     " << sum.subject << "\n"
              << "size:        " << meta->raw_size << " bytes\n"
              << "stored in:   " << PackFileName(meta->where.pack) << " at offset " << meta->where.offset << " (" << meta->where.length << " bytes)\n";
    if (parsed.ok()) {
      if (!parsed->to.empty()) Out() << "to:          " << AddressList(parsed->to) << "\n";
      if (!parsed->cc.empty()) Out() << "cc:          " << AddressList(parsed->cc) << "\n";
      Out() << "header key:  " << parsed->HeaderKey() << "\n";
      Out() << "parts:\n";
      for (const MimePart& mp : parsed->parts) {
        Out() << "  " << std::string(2 * mp.depth, ' ') << mp.content_type << "  " << mp.decoded_size << " bytes"
                  << (mp.filename.empty() ? "" : "  \"" + mp.filename + "\"")
                  << (mp.content_hash.empty() ? "" : "  sha256:" + mp.content_hash.substr(0, 16)) << "\n";
      }
    } else {
      Out() << "parse:       " << parsed.error().message() << "\n";
    }
    if (!warning.empty()) Out() << "warning:     " << warning << "\n";
    Out() << "envelopes:\n";
    for (const StoredEnvelope& e : *envs) {
      Out() << "  " << FormatDate(e.envelope.capture_time_us / 1000000) << "  " << e.envelope.source;
      if (!e.envelope.custodian.empty()) Out() << "  custodian " << e.envelope.custodian;
      for (const std::string& r : e.envelope.recipients) Out() << "  rcpt " << r;
      Out() << "\n";
      if (!e.envelope.journal_report.empty()) {
        Out() << "    journal report kept (" << e.envelope.journal_report.size() << " bytes; show --json prints it)\n";
      }
      if (!e.envelope.note.empty()) Out() << "    note: " << e.envelope.note << "\n";
    }
  });
}

void AddCatCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("cat", "write a message's original bytes to stdout");
  thread_local std::string id_arg;
  id_arg = {};
  cmd->add_option("ID", id_arg, "message id (or a unique prefix)")->required();
  cmd->callback([&g, exit_code] {
    std::optional<ShellState> state = OpenAuditedOrFail(g, exit_code);
    if (!state) return;
    Vault* vault = state->vault.get();
    Result<ObjectId> id = vault->Resolve(id_arg);
    Result<std::string> raw = id.ok() ? vault->ReadMessage(*id) : Result<std::string>(id.error());
    if (!raw.ok()) {
      *exit_code = Fail(raw.error());
      return;
    }
    if (!AuditOrFail(*state, "message.raw", id->Hex(), json{{"bytes", raw->size()}}, exit_code)) return;
    if (Client()) {  // run by the service: the bytes go to the client's stdout
      Out().write(raw->data(), static_cast<std::streamsize>(raw->size()));
      Out().flush();
      return;
    }
    Status s = WriteAll(1, *raw, "stdout");
    if (!s.ok()) *exit_code = Fail(s.error());
  });
}

void AddExportCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("export", "export messages (all, or the given ids) to an mbox file or a Maildir");
  thread_local std::string format, target;
  format = {}; target = {};
  thread_local std::vector<std::string> ids;
  ids = {};
  cmd->add_option("--to", format, "mbox or maildir")->required()->check(CLI::IsMember({"mbox", "maildir"}));
  cmd->add_option("TARGET", target, "the mbox file or Maildir directory to create")->required();
  cmd->add_option("ID", ids, "message ids (default: every message)");
  cmd->callback([&g, exit_code] {
    // The file is made where the client is when the service runs this; the messages name it
    // as the user gave it.
    const std::string shown = target;
    target = UserPath(target);
    std::optional<ShellState> state = OpenAuditedOrFail(g, exit_code);
    if (!state) return;
    Vault* vault = state->vault.get();
    std::vector<ObjectId> chosen;
    for (const std::string& s : ids) {
      Result<ObjectId> id = vault->Resolve(s);
      if (!id.ok()) {
        *exit_code = Fail(id.error());
        return;
      }
      chosen.push_back(*id);
    }
    if (ids.empty()) {
      Status s = vault->ForEachMessage([&](const ObjectId& id, const MessageMeta&) {
        chosen.push_back(id);
        return true;
      });
      if (!s.ok()) {
        *exit_code = Fail(s.error());
        return;
      }
    }
    json details{{"format", format}, {"messages", chosen.size()}};
    if (ids.empty()) {
      details["all"] = true;
    } else {
      details["ids"] = json::array();
      for (const ObjectId& id : chosen) details["ids"].push_back(id.Hex());
    }
    std::error_code ec;
    const std::filesystem::path where = std::filesystem::absolute(target, ec);
    if (!AuditOrFail(*state, "export.create", ec ? target : where.string(), details, exit_code)) return;
    uint64_t n = 0;
    Status s;
    if (format == "mbox") {
      int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd < 0) {
        *exit_code = Fail(ErrnoError("cannot create", target, errno).message() + " (export never overwrites a file)");
        return;
      }
      for (const ObjectId& id : chosen) {
        Result<std::string> raw = vault->ReadMessage(id);
        if (!raw.ok()) {
          s = raw.status();
          break;
        }
        std::string out;
        AppendMboxMessage(*raw, SummarizeHeaders(*raw).date.value_or(0), &out);
        s = WriteAll(fd, out, target);
        if (!s.ok()) break;
        ++n;
      }
      if (s.ok() && ::fsync(fd) != 0) s = ErrnoError("cannot fsync", target, errno);
      ::close(fd);
    } else {
      for (const char* sub : {"", "/cur", "/new", "/tmp"}) {
        std::string d = target + sub;
        if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
          s = ErrnoError("cannot create directory", d, errno);
          break;
        }
      }
      for (const ObjectId& id : chosen) {
        if (!s.ok()) break;
        Result<std::string> raw = vault->ReadMessage(id);
        if (!raw.ok()) {
          s = raw.status();
          break;
        }
        // Maildir names must be unique; the content id is, and re-exporting is idempotent.
        std::string name = target + "/cur/" + id.Hex() + ".mailvault:2,S";
        s = ReplaceFileDurably(name, *raw, 0600);
        ++n;
      }
    }
    if (!s.ok()) {
      *exit_code = Fail(s.error().With("export stopped after " + std::to_string(n) + " messages"));
      return;
    }
    Out() << "exported " << n << " messages to " << shown << " (" << format << ")\n";
  });
}

}  // namespace mailvault::cli
