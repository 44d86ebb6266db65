// Restore: the pass over each target (inventory, matching, appends), RestoreJob::Run and DryRun.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "control/state.h"
#include "core/text.h"
#include "recovery/restore_internal.h"
#include "vault/vault.h"

namespace mailvault::recovery {

using restore_internal::EncodeOutcome;
using restore_internal::Fingerprint;
using restore_internal::LoadOutcomes;
using restore_internal::MatchKey;
using restore_internal::Now;
using restore_internal::OutcomePrefix;
using restore_internal::Tally;
using restore_internal::UpperAscii;

namespace {

// The folder's name on a server whose personal namespace has this prefix. INBOX is INBOX
// everywhere (any case, RFC 3501); a name that has the prefix already is left alone.
std::string InNamespace(const std::string& folder, const std::string& prefix) {
  if (prefix.empty() || UpperAscii(folder) == "INBOX") return folder;
  if (UpperAscii(folder.substr(0, prefix.size())) == UpperAscii(prefix)) return folder;
  return prefix + folder;
}

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

}  // namespace mailvault::recovery
