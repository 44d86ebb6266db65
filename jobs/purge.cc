// The purge job: decide again under the freeze, forget with disposition records, drop what
// derives from the messages, level and compact the index, shred the packs (jobs/purge.h).
#include "jobs/purge.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include "jobs/indexer.h"
#include "policy/evaluate.h"
#include "recovery/restore.h"
#include "vault/vault.h"

namespace mailvault::jobs {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr size_t kBatch = 4096;         // messages per PURGE record and per disposition write
constexpr size_t kSkippedSample = 100;  // skipped messages named in the report

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Ids (first column) of an export's manifest.csv.
std::vector<std::string> ManifestIds(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    out.push_back(line.substr(0, line.find(',')));
  }
  return out;
}

}  // namespace

Result<json> RunPurge(const PurgeEnv& env, const std::string& id, const std::atomic<bool>* stop,
                      const std::function<void(const std::string&, uint64_t, uint64_t)>& progress) {
  const auto t0 = Clock::now();
  policy::PurgeStore purges(env.store, env.audit);
  MV_ASSIGN_OR_RETURN(std::optional<policy::PurgeRecord> found, purges.Get(id));
  if (!found) return NotFound("no purge " + id);
  policy::PurgeRecord rec = *found;
  // Approved, or resumed: running (interrupted) or failed (`mailvault purge resume`, `job resume`).
  if (rec.state != policy::kPurgeApproved && rec.state != policy::kPurgeRunning && rec.state != policy::kPurgeFailed) {
    return Error(ErrorCode::kConflict, "purge " + id + " is " + rec.state + "; only an approved purge runs");
  }
  MV_ASSIGN_OR_RETURN(rec, purges.Update(id, [](policy::PurgeRecord& r) {
                        r.state = policy::kPurgeRunning;
                        r.error.clear();
                        return Status::Ok();
                      }));
  const std::string approver = rec.approver ? rec.approver->user : "";
  json timings = json::object();
  auto lap_start = Clock::now();
  auto say = [&](const std::string& step, uint64_t done, uint64_t total) {
    if (progress) progress(step, done, total);
  };
  // Seconds spent in each step, for the report (where a slow purge spends its time).
  auto lap = [&](const char* step) {
    timings[step] = std::chrono::duration<double>(Clock::now() - lap_start).count();
    lap_start = Clock::now();
  };

  // The index must hold every message the vault does before the set is evaluated again.
  say("waiting for the index", 0, 0);
  std::unique_ptr<IndexFollower> own_index;
  IndexFollower* index = env.index;
  if (!index) {
    own_index = std::make_unique<IndexFollower>(env.vault, env.vault_dir);
    own_index->SetRecords(env.records);
    index = own_index.get();
    MV_RETURN_IF_ERROR(index->Maintain(IndexTask::kLevelCompact, stop, {}).status());
  }
  for (auto deadline = Clock::now() + std::chrono::minutes(10); index->following() && index->applied() < env.vault->last_change();) {
    if (Clock::now() > deadline) return Error(ErrorCode::kBusy, "the index did not catch up with the vault within 10 minutes");
    if (stop && stop->load()) return Error(ErrorCode::kBusy, "stopped while waiting for the index");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  lap("index_level");
  // Candidates, and dispositions an interrupted run left "intended".
  std::vector<policy::Candidate> candidates;
  MV_RETURN_IF_ERROR(purges.ForEachCandidate(id, [&](const policy::Candidate& c) {
    candidates.push_back(c);
    return true;
  }));
  std::unordered_map<std::string, policy::Disposition> earlier;
  MV_RETURN_IF_ERROR(purges.ForEachDisposition(id, [&](const policy::Disposition& d) {
    earlier[d.id] = d;
    return true;
  }));

  uint64_t purged = 0, skipped = 0;
  json skipped_sample = json::array();
  std::vector<std::string> dictionary_notes;
  auto skip = [&](const std::string& mid, const std::string& why) {
    ++skipped;
    if (skipped_sample.size() < kSkippedSample) skipped_sample.push_back(json{{"id", mid}, {"why", why}});
  };
  std::vector<std::string> purged_ids;
  {
    // No hold placed, no retention changed, until this purge has committed.
    std::unique_lock<std::mutex> frozen = env.policies->Freeze();
    MV_ASSIGN_OR_RETURN(policy::PolicySet set, env.policies->Current());
    MV_ASSIGN_OR_RETURN(std::unique_ptr<index::Searcher> searcher, index::Searcher::Open(env.vault_dir));
    std::unordered_map<std::string, policy::Decision> now_purgeable;
    std::unordered_map<std::string, std::string> why_kept;
    const int64_t now = Now();
    say("deciding again", 0, candidates.size());
    MV_RETURN_IF_ERROR(policy::Evaluate(*searcher, set.policies, now, [&](const policy::MessageFacts& m, const policy::Decision& d) {
                         if (d.verdict == policy::Verdict::kPurgeable) now_purgeable[m.id] = d;
                         else why_kept[m.id] = std::string(policy::VerdictName(d.verdict)) + ": " + d.reason;
                       }).status());
    for (size_t at = 0; at < candidates.size(); at += kBatch) {
      if (stop && stop->load()) return Error(ErrorCode::kBusy, "stopped; the purge goes on when resumed");
      std::vector<PurgeItem> items;
      std::vector<policy::Disposition> intents;
      for (size_t k = at; k < std::min(candidates.size(), at + kBatch); ++k) {
        const policy::Candidate& c = candidates[k];
        std::optional<ObjectId> oid = ObjectId::FromHex(c.id);
        auto e = earlier.find(c.id);
        if (e != earlier.end() && e->second.state == "purged") {
          ++purged;
          purged_ids.push_back(c.id);
          continue;
        }
        Result<MessageMeta> meta = oid ? env.vault->GetMeta(*oid) : Result<MessageMeta>(NotFound("bad id"));
        if (!meta.ok()) {
          if (e != earlier.end()) {
            // Intended, and gone: the vault forgot it before the interruption.
            policy::Disposition d = e->second;
            d.state = "purged";
            MV_RETURN_IF_ERROR(purges.PutDispositions({d}));
            ++purged;
            purged_ids.push_back(c.id);
          } else {
            skip(c.id, "not in the vault any more");
          }
          continue;
        }
        auto p = now_purgeable.find(c.id);
        if (p == now_purgeable.end()) {
          auto w = why_kept.find(c.id);
          skip(c.id, "no longer purgeable (" + (w == why_kept.end() ? std::string("not in the index") : w->second) + ")");
          continue;
        }
        items.push_back(PurgeItem{*oid, c.envelopes});
        policy::Disposition d;
        d.id = c.id;
        d.fingerprint = "sha256:" + c.id;
        d.size = meta->raw_size;
        std::string pol;
        for (const std::string& n : p->second.deciding) pol += (pol.empty() ? "" : ",") + n;
        d.policy = pol;
        d.proposer = rec.proposer.user;
        d.approver = approver;
        d.time = now;
        d.purge = id;
        d.state = "intended";
        intents.push_back(std::move(d));
      }
      if (items.empty()) continue;
      // Intended first (synced): the vault never forgets a message without its record.
      MV_RETURN_IF_ERROR(purges.PutDispositions(intents));
      MV_ASSIGN_OR_RETURN(PurgeOutcome out, env.vault->Purge(items));
      for (const std::string& n : out.dictionaries) {
        if (std::find(dictionary_notes.begin(), dictionary_notes.end(), n) == dictionary_notes.end()) dictionary_notes.push_back(n);
      }
      std::unordered_set<std::string> done_now;
      for (const ObjectId& oid : out.purged) done_now.insert(oid.Hex());
      std::vector<policy::Disposition> final;
      std::vector<std::string> drop;
      for (policy::Disposition& d : intents) {
        if (done_now.count(d.id)) {
          d.state = "purged";
          d.time = Now();
          final.push_back(d);
          purged_ids.push_back(d.id);
          ++purged;
        } else {
          drop.push_back(d.id);
        }
      }
      for (const auto& [oid, why] : out.skipped) skip(oid.Hex(), why);
      MV_RETURN_IF_ERROR(purges.PutDispositions(final));
      MV_RETURN_IF_ERROR(purges.DeleteDispositions(id, drop));
      say("forgetting", std::min(candidates.size(), at + kBatch), candidates.size());
      (void)purges.Update(id, [&](policy::PurgeRecord& r) {
        r.purged = purged;
        r.skipped = skipped;
        r.dispositions = purged;
        return Status::Ok();
      });
    }
  }

  lap("decide_and_forget");
  // What derives from the messages.
  say("dropping tags, restore plans and exports", 0, 0);
  MV_RETURN_IF_ERROR(env.records->ForgetMessages(purged_ids));
  MV_RETURN_IF_ERROR(recovery::ForgetPurged(env.store, purged_ids));
  uint64_t exports_deleted = 0;
  {
    std::unordered_set<std::string> gone(purged_ids.begin(), purged_ids.end());
    MV_ASSIGN_OR_RETURN(std::vector<control::ExportJob> exports, env.records->Jobs());
    for (control::ExportJob& j : exports) {
      if (j.state != "done" || gone.empty()) continue;
      const std::string manifest = env.exports_dir + "/" + j.id + ".manifest.csv";
      std::vector<std::string> ids = ManifestIds(manifest);
      if (std::none_of(ids.begin(), ids.end(), [&](const std::string& m) { return gone.count(m) > 0; })) continue;
      ::unlink((env.exports_dir + "/" + j.id + (j.format == "zip" ? ".zip" : ".mbox")).c_str());
      ::unlink(manifest.c_str());
      j.state = "purged";
      j.error = "deleted by purge " + id + ": it held purged messages";
      MV_RETURN_IF_ERROR(env.records->PutJob(j));
      ++exports_deleted;
    }
  }

  lap("tags_plans_exports");
  // The index: their documents deleted, then compacted (freed pages keep words otherwise).
  // When most of the vault went, building the survivors' index afresh is much faster than
  // deleting (Xapian reads each deleted document's terms), and leaves fresh files just the same.
  MV_ASSIGN_OR_RETURN(VaultStats left, env.vault->Stats());
  const bool rebuild = purged > left.messages;
  say(rebuild ? "rebuilding the index" : "compacting the index", 0, 0);
  MV_ASSIGN_OR_RETURN(json index_report, index->Maintain(rebuild ? IndexTask::kRebuild : IndexTask::kLevelCompact, stop, {}));
  index_report["rebuilt"] = rebuild;
  lap("index");

  // The packs.
  say("shredding", 0, 0);
  MV_ASSIGN_OR_RETURN(ShredReport shred, env.vault->Shred(stop));
  lap("shred");
  if (shred.packs_left) {
    return Error(ErrorCode::kBusy, std::to_string(shred.packs_left) + " packs still hold purged records" +
                                       (shred.problems.empty() ? std::string("; resume the purge") : ": " + shred.problems.front()));
  }
  json report{{"purged", purged},
              {"skipped", skipped},
              {"skipped_sample", skipped_sample},
              {"exports_deleted", exports_deleted},
              {"index", index_report},
              {"shred", json{{"packs_rewritten", shred.packs_rewritten},
                             {"messages_removed", shred.messages_removed},
                             {"envelopes_removed", shred.envelopes_removed},
                             {"blocks_reencoded", shred.blocks_reencoded},
                             {"bytes_before", shred.bytes_before},
                             {"bytes_after", shred.bytes_after}}},
              {"dictionaries", shred.dictionaries},
              {"dictionaries_at_purge", dictionary_notes},
              {"timings", timings},
              {"seconds", std::chrono::duration<double>(Clock::now() - t0).count()}};
  MV_RETURN_IF_ERROR(purges.Update(id, [&](policy::PurgeRecord& r) {
                       r.state = policy::kPurgeDone;
                       r.purged = purged;
                       r.skipped = skipped;
                       r.dispositions = purged;
                       r.finished = Now();
                       r.report = report;
                       r.error.clear();
                       return Status::Ok();
                     }).status());
  return report;
}

}  // namespace mailvault::jobs
