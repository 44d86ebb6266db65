// Export jobs: a query's messages written to a zip of .eml files or an mboxrd file, with
// manifest.csv (id, Message-ID, date, from, to, size, SHA-256, custodian). One job runs at a
// time, on its own thread at a lower priority; progress is saved every few seconds, the
// artefact is written to a temporary name, synced and renamed, and its SHA-256 and the
// manifest's go into the job record. Artefacts expire (deleted; the record stays and a later
// download gets 410). docs/api.md ("exports") has the formats.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "api/control.h"
#include "vault/vault.h"

namespace mailvault::api {

struct ExportSettings {
  std::string dir;              // <vault>/exports by default
  int64_t ttl_seconds = 7 * 86400;
  size_t max_messages = 1000000;
};

class ExportRunner {
 public:
  ExportRunner(Vault* vault, std::string vault_dir, Records* records, AuditLog* audit, ExportSettings settings);
  ~ExportRunner();
  // Starts the thread; jobs left queued or running by an earlier process are started again.
  Status Start();
  void Stop();
  void Enqueue(const std::string& id);
  // Stops the job if it runs; its files are deleted. before_write sees the job as it is at
  // that moment, with no expiry or state change able to come in between (the audit entry:
  // when it fails, nothing is cancelled).
  Status Cancel(const std::string& id, const std::function<Status(const ExportJob&)>& before_write);
  std::string ArtefactPath(const ExportJob& j) const;
  std::string ManifestPath(const ExportJob& j) const;
  // Deletes artefacts past their expiry; returns how many. Safe to call from any thread, as
  // often as wanted: each export expires once (one export.expire entry), and one deleted or
  // cancelled meanwhile stays so.
  size_t ExpireOld();

  // Writes one export (exposed for tests): the messages of ids, in order, to out_path.
  // Returns the job's totals and hashes filled in.
  static Status Write(const Vault& vault, const Records& records, const std::vector<std::string>& ids,
                      const std::string& format, const std::string& out_path, const std::string& manifest_path,
                      ExportJob* job, const std::function<bool(const ExportJob&)>& progress);

 private:
  void Loop();
  void RunJob(const std::string& id);
  // Writes the runner's view of a job unless it was cancelled meanwhile; false if it was.
  bool SaveUnlessCancelled(const ExportJob& job);

  Vault* vault_;
  std::string vault_dir_;
  Records* records_;
  AuditLog* audit_;
  ExportSettings settings_;
  // Held across every change of a job's state (saves, cancellation, expiry) together with the
  // entry that records it, so that two of them cannot interleave.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  std::set<std::string> cancelled_;
  bool stop_ = false;
  std::thread thread_;
};

// One manifest.csv field: RFC 4180 quoting, and a leading ' before = + - @ TAB CR so that a
// spreadsheet does not run a subject as a formula (CSV injection).
std::string CsvField(std::string_view s);

}  // namespace mailvault::api
