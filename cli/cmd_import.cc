// import: Maildir folders, mbox files, .eml files and trees of them, into the vault.
//
// Pipeline: a reader thread splits files into messages; workers hash, compress and encrypt
// them and hand them to the vault's committer without waiting; this thread collects the
// outcomes in order as each group of messages becomes durable, reports and shows progress.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include "capture/mail_source.h"
#include "cli/commands.h"
#include "indexer/searcher.h"
#include "jobs/indexer.h"
#include "policy/store.h"
#include "policy/tagger.h"
#include "cli/shell_state.h"
#include "control/jobs.h"
#include "control/records.h"
#include "jobs/runner.h"
#include "indexer/index.h"

namespace mailvault::cli {
namespace {

// A bounded queue closed by the producer.
template <typename T>
class Channel {
 public:
  explicit Channel(size_t capacity) : capacity_(capacity) {}
  void Push(T v) {
    std::unique_lock<std::mutex> l(mu_);
    not_full_.wait(l, [&] { return q_.size() < capacity_; });
    q_.push_back(std::move(v));
    not_empty_.notify_one();
  }
  bool Pop(T* v) {
    std::unique_lock<std::mutex> l(mu_);
    not_empty_.wait(l, [&] { return !q_.empty() || closed_; });
    if (q_.empty()) return false;
    *v = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  std::deque<T> q_;
  size_t capacity_;
  bool closed_ = false;
};

struct Outcome {
  std::string label;
  uint64_t bytes = 0;
  std::optional<Error> early_error;  // rejected before reaching the vault
  std::future<Result<IngestResult>> result;
};

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Absolute(const std::string& p) {
  std::error_code ec;
  auto a = std::filesystem::absolute(p, ec);
  return ec ? p : a.lexically_normal().string();
}

Envelope ImportEnvelope(const std::string& label, const std::string& custodian) {
  Envelope env;
  env.capture_time_us = NowMicros();
  env.source = "import:" + Absolute(label);
  env.custodian = custodian;
  return env;
}

// A dictionary trained on mail spread across the whole import compresses far better than none.
void TrainFromSample(Vault& vault, const std::vector<SourceFile>& files, uint64_t max_bytes, const std::string& custodian) {
  constexpr size_t kSampleMessages = 2000;
  constexpr uint64_t kSampleBytes = 16 << 20;
  size_t step = std::max<size_t>(1, files.size() / kSampleMessages);
  std::vector<std::string> samples;
  std::vector<ObjectId> ids;
  uint64_t total = 0;
  for (size_t i = 0; i < files.size() && samples.size() < kSampleMessages && total < kSampleBytes; i += step) {
    (void)ReadSourceFile(files[i], max_bytes, [&](SourceMessage m) {
      if (samples.size() >= kSampleMessages || CheckLooksLikeMail(m.bytes).ok() == false) return;
      Envelope env = ImportEnvelope(m.label, custodian);
      samples.push_back(Vault::TrainingSample(env, m.bytes));
      ids.push_back(ObjectId::Of(m.bytes));
      total += samples.back().size();
    });
  }
  if (samples.size() < 100) return;  // too little to learn from; the vault trains later by itself
  std::vector<std::string_view> views(samples.begin(), samples.end());
  Status s = vault.TrainDictionary(views, ids);
  if (!s.ok()) Err() << "mailvault: note: no compression dictionary trained (" << s.error().message() << ")\n";
}

// Applies the tag policies in force to what the index holds, and puts the new tags into the
// index at once (this command holds its writer). The number of messages tagged.
Result<uint64_t> ApplyTagPoliciesNow(const GlobalOptions& g, ShellState& s, index::IndexWriter& writer) {
  policy::PolicyStore store(s.store.get(), s.audit.get());
  MV_ASSIGN_OR_RETURN(policy::PolicySet set, store.Current());
  bool any = false;
  for (const policy::Policy& p : set.policies) any |= p.kind == policy::Kind::kTag;
  if (!any) return uint64_t{0};
  // The catch-up committed every document it wrote: the searcher below sees them.
  MV_ASSIGN_OR_RETURN(std::unique_ptr<index::Searcher> searcher, index::Searcher::Open(g.vault_dir));
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  MV_ASSIGN_OR_RETURN(policy::TagReport r, policy::ApplyTagPolicies(*searcher, *s.records, set.policies, now));
  MV_RETURN_IF_ERROR(jobs::ApplyTagChanges(writer, *s.records));
  MV_RETURN_IF_ERROR(writer.Flush());
  return r.tagged;
}

}  // namespace

void AddImportCommand(CLI::App& app, GlobalOptions& g, int* exit_code) {
  auto* cmd = app.add_subcommand("import", "import Maildir folders, mbox files, .eml files and directory trees of them");
  thread_local std::vector<std::string> paths;
  paths = {};
  thread_local std::string custodian;
  custodian = {};
  thread_local bool quiet = false, no_index = false;
  quiet = false; no_index = false;
  cmd->add_option("PATH", paths, "Maildir, mbox, .eml or directory")->required();
  cmd->add_flag("--no-index", no_index, "store only; `mailvault index run` indexes later");
  cmd->add_option("--custodian", custodian, "the address whose mailbox this mail is from");
  cmd->add_flag("--quiet,-q", quiet, "print only problems and the summary");
  cmd->callback([&g, exit_code] {
    if (Status s = ResolveGlobalOptions(&g); !s.ok()) {
      *exit_code = Fail(s.error());
      return;
    }
    for (std::string& p : paths) p = UserPath(p);  // the client's directory, when the service runs this
    // Inside a service its indexer follows the vault; the import only waits for it at the end.
    const ServiceResources* svc = Service();
    if (svc) no_index = true;
    // The records too, when this process indexes: documents carry their messages' tags.
    std::optional<ShellState> state;
    Result<Handle<Vault>> opened = Borrowed<Vault>(nullptr);
    if (!no_index && !svc) {
      Result<ShellState> s = OpenShellState(g, "another mailvault command holds the vault; wait for it to finish");
      if (!s.ok()) {
        *exit_code = Fail(s.error());
        return;
      }
      state = std::move(*s);
      opened = Borrowed(state->vault.get());
    } else {
      opened = OpenVault(g);
    }
    if (!opened.ok()) {
      *exit_code = Fail(opened.error());
      return;
    }
    Vault& vault = **opened;
    // Inside a service the import is one of its jobs: recorded (GET /api/v1/jobs, kind import)
    // and run below capture's CPU priority (the reader and workers it starts inherit it; this
    // thread is the client's own and ends with the command).
    std::optional<control::JobRecord> job;
    if (svc && svc->runner) {
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
      // The paths as given, the first 100 of them (a shell glob can name a hundred thousand).
      const std::vector<std::string> shown(paths.begin(), paths.begin() + static_cast<long>(std::min<size_t>(paths.size(), 100)));
      Result<control::JobRecord> created = svc->runner->store().Create(
          control::JobKind::kImport, ShellActor(),
          nlohmann::json{{"paths", shown}, {"path_count", paths.size()}, {"custodian", custodian}});
      if (created.ok()) {
        Result<control::JobRecord> running = svc->runner->store().Update(created->id, [](control::JobRecord& r) {
          r.state = control::JobState::kRunning;
          r.started = control::NowSeconds();
          r.runs = 1;
          return Status::Ok();
        });
        job = running.ok() ? *running : *created;
      }
    }
    auto job_progress = [&](control::JobState state, const nlohmann::json& progress, const std::string& error) {
      if (!job) return;
      (void)svc->runner->store().Update(job->id, [&](control::JobRecord& r) {
        r.progress = progress;
        r.state = state;
        r.error = error;
        if (control::IsFinal(state)) {
          r.finished = control::NowSeconds();
          r.report = progress;
        }
        return Status::Ok();
      }, control::IsFinal(state));
    };
    uint64_t rejected = 0, imported = 0, duplicates = 0, warnings = 0, done_bytes = 0;
    auto report = [&](const std::string& label, const std::string& what, const Error& e) {
      if (StderrIsTerminal()) Err() << "\r\033[K";
      Err() << what << " " << label << ": " << e.message() << "\n";
    };
    std::vector<SourceFile> files = FindSourceFiles(paths, [&](const std::string& p, const Error& e) {
      ++rejected;
      report(p, "rejected", e);
    });
    uint64_t total_bytes = 0;
    for (const SourceFile& f : files) total_bytes += f.size;
    const uint64_t max_bytes = g.vault_options.limits.max_message_bytes;
    if (!vault.has_dictionary()) {
      auto t0 = std::chrono::steady_clock::now();
      TrainFromSample(vault, files, max_bytes, custodian);
      if (!quiet && vault.has_dictionary()) {
        Out() << "trained a compression dictionary from a sample of this import in "
                  << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
      }
    }

    // The indexer follows the vault's change log beside the ingest, on what the vault has made
    // durable; it drains the log after the last message (BLUEPRINT decision 2).
    std::unique_ptr<index::IndexWriter> indexer;
    if (!no_index) {
      Result<std::unique_ptr<index::IndexWriter>> w = index::IndexWriter::Open(g.vault_dir, jobs::WithTags({}, state->records.get()));
      if (!w.ok()) {
        *exit_code = Fail(w.error().With("the full-text index (use --no-index to store without indexing)"));
        return;
      }
      indexer = std::move(*w);
    }
    std::atomic<bool> ingest_done{false};
    std::optional<Result<index::CatchUpReport>> index_result;
    std::thread index_thread;
    if (indexer) {
      index_thread = std::thread([&] {
        index_result = indexer->CatchUp(vault, &ingest_done);
        if (index_result->ok()) {
          if (Status c = indexer->CompactIfWorthIt(**index_result); !c.ok()) index_result = c.error();
        }
      });
    }

    std::string custodian_norm = custodian;
    Channel<SourceMessage> work(256);
    Channel<Outcome> outcomes(4096);
    std::thread reader([&] {
      for (const SourceFile& f : files) {
        Status s = ReadSourceFile(f, max_bytes, [&](SourceMessage m) { work.Push(std::move(m)); });
        if (!s.ok()) {
          Outcome o;
          o.label = f.path;
          o.bytes = f.size;
          o.early_error = s.error();
          outcomes.Push(std::move(o));
        }
      }
      work.Close();
    });
    // Workers keep submission order per worker only; outcomes are reported as they resolve.
    unsigned n_workers = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> workers;
    std::atomic<unsigned> live{n_workers};
    for (unsigned i = 0; i < n_workers; ++i) {
      workers.emplace_back([&] {
        SourceMessage m;
        while (work.Pop(&m)) {
          Outcome o;
          o.label = m.label;
          o.bytes = m.bytes.size();
          if (Status s = CheckLooksLikeMail(m.bytes); !s.ok()) {
            o.early_error = s.error();
          } else {
            o.result = vault.IngestAsync(m.bytes, ImportEnvelope(m.label, custodian_norm));
          }
          outcomes.Push(std::move(o));
        }
        if (--live == 0) outcomes.Close();
      });
    }

    auto start = std::chrono::steady_clock::now();
    auto last_draw = start, last_job_update = start;
    bool tty = StderrIsTerminal() && !quiet;
    Outcome o;
    while (outcomes.Pop(&o)) {
      done_bytes += o.bytes;
      if (o.early_error) {
        ++rejected;
        report(o.label, "rejected", *o.early_error);
      } else {
        Result<IngestResult> r = o.result.get();
        if (!r.ok()) {
          ++rejected;
          report(o.label, "rejected", r.error());
        } else if (r->duplicate) {
          ++duplicates;
        } else {
          ++imported;
          if (!r->warning.empty()) {
            ++warnings;
            report(o.label, "warning", Error(ErrorCode::kLimitExceeded, r->warning));
          }
        }
      }
      auto now = std::chrono::steady_clock::now();
      if (job && now - last_job_update > std::chrono::seconds(1)) {
        last_job_update = now;
        job_progress(control::JobState::kRunning,
                     nlohmann::json{{"imported", imported}, {"duplicates", duplicates}, {"rejected", rejected},
                                    {"bytes", done_bytes}, {"total_bytes", total_bytes}},
                     "");
      }
      if (tty && now - last_draw > std::chrono::milliseconds(200)) {
        last_draw = now;
        double secs = std::chrono::duration<double>(now - start).count();
        uint64_t count = imported + duplicates + rejected;
        double rate = count / std::max(secs, 1e-6);
        double eta = done_bytes ? secs * (static_cast<double>(total_bytes) / done_bytes - 1.0) : 0.0;
        ErrPrintf("\r\033[K%llu messages  %.0f msg/s  %.0f%%  ETA %d:%02d",
                     static_cast<unsigned long long>(count), rate,
                     total_bytes ? 100.0 * done_bytes / total_bytes : 100.0, static_cast<int>(eta) / 60,
                     static_cast<int>(eta) % 60);
      }
    }
    reader.join();
    for (auto& w : workers) w.join();
    ingest_done = true;
    if (index_thread.joinable()) {
      if (tty) ErrPrintf("\r\033[Kindexing the last messages");
      index_thread.join();
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (tty) Err() << "\r\033[K";
    Out() << "imported " << imported << " new messages, " << duplicates << " duplicates, " << rejected
              << " rejected" << (warnings ? ", " + std::to_string(warnings) + " stored with warnings" : "") << " in "
              << secs << " s (" << static_cast<uint64_t>((imported + duplicates) / std::max(secs, 1e-6)) << " msg/s)\n";
    *exit_code = rejected ? kExitPartly : kExitOk;
    job_progress(control::JobState::kDone,
                 nlohmann::json{{"imported", imported}, {"duplicates", duplicates}, {"rejected", rejected}, {"warnings", warnings},
                                {"bytes", done_bytes}, {"total_bytes", total_bytes}, {"seconds", secs}},
                 rejected ? std::to_string(rejected) + " file(s) or message(s) rejected (each reported to the command line)" : "");
    if (index_result && !index_result->ok()) {
      Err() << "mailvault: the messages are stored, but indexing failed: " << index_result->error().message()
                << "\n  fix the cause, then run `mailvault index run` (nothing stored is lost)\n";
      *exit_code = 1;
    } else if (index_result) {
      Out() << "indexed " << (*index_result)->documents << " messages; the index is level with the vault\n";
      // Tag policies (policy/tagger.h): what serve does behind its indexer, done once here.
      Result<uint64_t> tagged = ApplyTagPoliciesNow(g, *state, *indexer);
      if (!tagged.ok()) {
        Err() << "mailvault: the messages are stored and indexed, but the tag policies failed: " << tagged.error().message() << "\n";
        *exit_code = 1;
      } else if (*tagged) {
        Out() << "tag policies tagged " << *tagged << " messages\n";
      }
    } else if (svc && svc->indexed_change) {
      // The service's indexer takes what was imported; wait for it (a minute at most) so that
      // a search right after the import finds it, as after an import without a service.
      const uint64_t want = vault.last_change();
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (svc->indexed_change() < want && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (svc->indexed_change() >= want) Out() << "the service's indexer is level with the vault\n";
      else Out() << "the service's indexer is still catching up (`mailvault index status`)\n";
    }
  });
}

}  // namespace mailvault::cli
