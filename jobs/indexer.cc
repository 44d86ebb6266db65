#include "jobs/indexer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "indexer/layout.h"
#include "indexer/searcher.h"

namespace mailvault::jobs {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Capture comes first: a burst of mail delays search by seconds instead of slowing every 250.
constexpr int kIndexerNice = 10;

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

index::IndexOptions WithTags(index::IndexOptions options, const control::Records* records) {
  options.tags = [records](const std::string& hex_id) {
    Result<std::vector<std::string>> tags = records->TagsOf(hex_id);
    // A store that cannot be read leaves the document untagged; the API's tag: asks the
    // records themselves, and the next tag change or reindex puts the terms right.
    return tags.ok() ? std::move(*tags) : std::vector<std::string>{};
  };
  return options;
}

Status ApplyTagChanges(index::IndexWriter& writer, const control::Records& records) {
  uint64_t mark = writer.tags_applied();
  Status failed = Status::Ok();
  MV_RETURN_IF_ERROR(records.ForEachTagChange(mark, [&](uint64_t seq, const std::vector<std::string>& ids) {
    for (const std::string& id : ids) {
      Result<std::vector<std::string>> tags = records.TagsOf(id);
      Status s = tags.ok() ? writer.SetTags(id, *tags) : Status(tags.error());
      if (!s.ok()) {
        failed = s;
        return false;
      }
    }
    mark = seq;
    return true;
  }));
  writer.set_tags_applied(mark);
  return failed;
}

Result<RebuildReport> RebuildIndex(const Vault& vault, const std::string& vault_dir, const control::Records* records,
                                   index::IndexOptions options, bool from_scratch, const IndexProgress& progress) {
  const auto t0 = Clock::now();
  // Every document gets its tags as it is built; the tag log is then applied from the mark
  // taken before the first document, so a tag changed meanwhile is right either way.
  uint64_t tag_mark = 0;
  if (records) {
    MV_ASSIGN_OR_RETURN(tag_mark, records->LastTagChange());
    options = WithTags(std::move(options), records);
  }
  MV_ASSIGN_OR_RETURN(std::unique_ptr<index::IndexWriter> w, from_scratch ? index::IndexWriter::Recreate(vault_dir, options)
                                                                         : index::IndexWriter::Open(vault_dir, options));
  if (from_scratch) w->set_tags_applied(tag_mark);
  RebuildReport report;
  MV_ASSIGN_OR_RETURN(report.catch_up, w->CatchUp(vault, nullptr, progress));
  report.finished = !(options.abort && options.abort->load());
  if (records) MV_RETURN_IF_ERROR(ApplyTagChanges(*w, *records));
  MV_RETURN_IF_ERROR(w->Flush());
  // Compacted once, at the end: a rebuild's many commits leave part-full blocks everywhere.
  if (report.finished) MV_RETURN_IF_ERROR(w->Compact());
  report.documents = w->documents();
  report.seconds = Since(t0);
  return report;
}

Result<uint64_t> CopyIndexFiles(const std::string& vault_dir, const std::string& dest) {
  const std::string dir = index::IndexDir(vault_dir);
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return NotFound("no index in " + vault_dir);
  MV_ASSIGN_OR_RETURN(std::unique_ptr<index::Searcher> s, index::Searcher::Open(vault_dir));
  const uint64_t applied = s->Info().applied_change;
  s.reset();
  std::filesystem::create_directories(dest, ec);
  if (!ec) std::filesystem::copy(dir, dest, std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return IoError("copying the index to " + dest + ": " + ec.message());
  return applied;
}

Result<RebuildReport> LevelIndex(const Vault& vault, const std::string& vault_dir, const control::Records* records) {
  const auto t0 = Clock::now();
  index::IndexOptions options;
  if (records) options = WithTags(std::move(options), records);
  MV_ASSIGN_OR_RETURN(std::unique_ptr<index::IndexWriter> w, index::IndexWriter::Open(vault_dir, options));
  RebuildReport report;
  MV_ASSIGN_OR_RETURN(report.catch_up, w->CatchUp(vault, nullptr));
  report.finished = true;
  if (records) MV_RETURN_IF_ERROR(ApplyTagChanges(*w, *records));
  MV_RETURN_IF_ERROR(w->Flush());
  MV_RETURN_IF_ERROR(w->CompactIfWorthIt(report.catch_up));
  report.documents = w->documents();
  report.seconds = Since(t0);
  return report;
}

Result<uint64_t> IndexFollower::CopyTo(const std::string& dest) {
  return WithWriter<uint64_t>("the service is stopping", [&] { return CopyIndexFiles(dir_, dest); });
}

void IndexFollower::Start() {
  follow_ = true;
  thread_ = std::thread([this] { Run(); });
}

void IndexFollower::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t IndexFollower::applied() const {
  std::lock_guard<std::mutex> l(mu_);
  return writer_ ? writer_->applied_change() : applied_.load();
}

std::string IndexFollower::last_error() const {
  std::lock_guard<std::mutex> l(mu_);
  return error_;
}

void IndexFollower::SetError(std::string e) {
  std::lock_guard<std::mutex> l(mu_);
  error_ = std::move(e);
}

void IndexFollower::Run() {
  // Threads this one starts (the shards' writers) inherit the priority.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kIndexerNice);
  while (!stop_) {
    if (yield_) {
      // A task has the writer: wait until it is done with it.
      std::unique_lock<std::mutex> l(mu_);
      parked_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return !yield_ || stop_; });
      parked_ = false;
      continue;
    }
    // Commits (each a few fsyncs per shard, on the disk the vault fsyncs to) happen once a
    // second while mail flows, not per thousand documents: at thousands of messages a second
    // that keeps the indexer out of the way of acknowledgements.
    index::IndexOptions options;
    options.commit_every = SIZE_MAX;
    options.max_commit_delay = std::chrono::milliseconds(1000);
    options.abort = &yield_;
    if (records_) {
      options = WithTags(options, records_);
      const control::Records* records = records_;
      options.when_idle = [records](index::IndexWriter& w) { return ApplyTagChanges(w, *records); };
    }
    Status failed = Status::Ok();
    {
      Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(dir_, options);
      if (w.ok()) {
        {
          std::lock_guard<std::mutex> l(mu_);
          writer_ = w->get();
          error_.clear();
        }
        Result<index::CatchUpReport> r = (*w)->CatchUp(*vault_, &stop_);
        {
          std::lock_guard<std::mutex> l(mu_);
          applied_ = (*w)->applied_change();
          writer_ = nullptr;
        }
        if (!r.ok()) failed = r.error();
      } else {
        failed = w.error();
      }
    }  // the writer (and Xapian's lock) is let go here, before a task takes it
    if (failed.ok()) continue;  // stopped, or yielding
    SetError(failed.error().ToString());
    std::fprintf(stderr, "mailvault serve: indexer: %s; retrying in 5 s\n", last_error().c_str());
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(5), [&] { return stop_.load() || yield_.load(); });
  }
}

Result<json> IndexFollower::Maintain(IndexTask task, const std::atomic<bool>* abort, const IndexProgress& progress) {
  return WithWriter<json>("the service is stopping; the job runs again at its next start",
                          [&] { return RunTask(task, abort, progress); });
}

Result<json> IndexFollower::RunTask(IndexTask task, const std::atomic<bool>* abort, const IndexProgress& progress) {
  const auto t0 = Clock::now();
  index::IndexOptions options;
  options.abort = abort;
  if (task == IndexTask::kCompact || task == IndexTask::kLevelCompact) {
    MV_ASSIGN_OR_RETURN(std::unique_ptr<index::IndexWriter> w, index::IndexWriter::Open(dir_, WithTags(options, records_)));
    if (task == IndexTask::kLevelCompact) {
      std::atomic<bool> drain{true};  // everything logged so far, then return
      MV_ASSIGN_OR_RETURN(index::CatchUpReport caught, w->CatchUp(*vault_, &drain));
      (void)caught;
    }
    MV_RETURN_IF_ERROR(w->Compact());
    applied_ = w->applied_change();
    return json{{"documents", w->documents()}, {"seconds", Since(t0)}};
  }
  const bool from_scratch = task == IndexTask::kRebuild;
  if (from_scratch) applied_ = 0;  // searches see the index refill from here
  MV_ASSIGN_OR_RETURN(RebuildReport r, RebuildIndex(*vault_, dir_, records_, options, from_scratch,
                                                    [&](uint64_t indexed, uint64_t total) {
                                                      applied_ = indexed;
                                                      if (progress) progress(indexed, total);
                                                    }));
  applied_ = r.catch_up.last_change;
  return json{{"documents", r.documents},            {"written", r.catch_up.documents},
              {"changes", r.catch_up.applied},
              {"unreadable", r.catch_up.unreadable}, {"last_change", r.catch_up.last_change},
              {"finished", r.finished},              {"seconds", r.seconds}};
}

}  // namespace mailvault::jobs
