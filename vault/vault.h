// The vault: every message stored once, compressed, encrypted and fingerprinted, in append-only
// packs, with a RocksDB catalog derived from them.
//
// Threading: Ingest and reads are safe from any number of threads. The CPU work of an ingest
// (hashing, compression, encryption) runs on the calling thread; one committer thread appends
// what all callers prepared, fsyncs once for the whole group, updates the catalog, and only
// then lets the callers return (group commit; BLUEPRINT decision 1).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/envelope.h"
#include "core/file_util.h"
#include "core/fingerprint.h"
#include "core/limits.h"
#include "core/result.h"
#include "vault/block_codec.h"
#include "vault/catalog.h"
#include "vault/compressor.h"
#include "vault/crypto.h"

namespace mailvault {

struct VaultOptions {
  uint64_t seal_bytes = 32ull << 20;  // a pack is sealed once it holds this much
  CompressionSettings compression;
  MessageLimits limits;
  // Without a dictionary, the first this-many messages are kept (up to auto_train_bytes) as
  // samples, and a dictionary is trained from them. 0 disables automatic training.
  size_t auto_train_messages = 2000;
  size_t auto_train_bytes = 16 << 20;
  // Ingest is refused (a temporary error) while the vault's file system has less free space:
  // running the disk to zero would leave no room for the catalog and the seal records.
  uint64_t min_free_bytes = 64ull << 20;
};

// Where the master key comes from: a key file, or a passphrase that opens the vault's keyslot.
struct KeySource {
  std::string key_file;
  std::optional<std::string> passphrase;
};

struct IngestResult {
  ObjectId id;
  bool duplicate = false;       // the message was already stored
  bool envelope_added = false;  // (for duplicates) the capture added a new envelope
  std::string warning;          // stored, but MIME analysis stopped short (a named limit)
};

// A stored message with every capture's envelope, first capture first.
struct StoredMessage {
  MessageMeta meta;
  std::string raw;
  std::vector<Envelope> envelopes;
};

struct VerifyReport {
  uint64_t messages_checked = 0;
  uint64_t envelopes_checked = 0;
  uint64_t bytes_checked = 0;
  uint64_t packs_checked = 0;
  std::vector<std::string> problems;  // one line each, naming the message or pack
  bool stopped = false;               // the stop flag ended it between two packs: not all was checked
  bool ok() const { return problems.empty(); }
};

struct OpenReport {
  uint64_t records_replayed = 0;  // pack records the catalog had not yet seen
  uint64_t torn_bytes_dropped = 0;
  std::vector<std::string> warnings;
};

// Purging (crypto-shredding, docs/purge.md). A purge is two steps: Purge() makes the vault
// forget messages, durably (a PURGE record in the open pack); Shred() then rewrites every pack
// that still holds any of their bytes into a new file without them and deletes the old one.
struct PurgeItem {
  ObjectId id;
  // How many captures (envelopes) the message had when the purge was decided: a message with
  // more now was captured again since, and is kept.
  size_t envelopes = 0;
};
struct PurgeOutcome {
  std::vector<ObjectId> purged;
  std::vector<std::pair<ObjectId, std::string>> skipped;  // and why
  // What each compression dictionary is to the purged mail: learnt from some of it (retired:
  // Shred retrains it), or shown to hold none of it (none of its training samples was purged).
  std::vector<std::string> dictionaries;
};
struct ShredReport {
  uint64_t packs_rewritten = 0;
  uint64_t messages_removed = 0;   // message records replaced by tombstones
  uint64_t envelopes_removed = 0;  // envelope records replaced by tombstones
  uint64_t blocks_reencoded = 0;
  uint64_t bytes_before = 0;       // of the packs rewritten
  uint64_t bytes_after = 0;
  std::vector<std::string> dictionaries;  // what became of each dictionary (retrained, or why it holds none)
  uint64_t packs_left = 0;                // still queued (stopped, or a pack could not be rewritten)
  std::vector<std::string> problems;
};

enum class RecordType : uint8_t;  // vault/pack.h

// Whether the vault is taking mail. A failed append, seal, new pack or catalog write puts it
// in the failing state; the committer retries on its own (at most every retry interval) and
// the next group that commits clears it. Serve's /healthz and `status` report it.
struct VaultHealth {
  bool ok = true;
  std::string error;           // the failure that put it in this state
  int64_t since_us = 0;        // when it began failing (0 when ok)
  uint64_t failed_groups = 0;  // commit groups refused since it began failing
  uint64_t recoveries = 0;     // times it came back by itself since open
};

class Vault {
 public:
  ~Vault();
  Vault(const Vault&) = delete;
  Vault& operator=(const Vault&) = delete;

  // Creates an empty vault in dir (which must not hold one). With a key file that does not
  // exist yet, a new master key is written to it (mode 0600); *created_key_file tells.
  static Status Init(const std::string& dir, const KeySource& keys, const VaultOptions& options,
                     bool* created_key_file);
  // Opens the vault, replaying pack bytes the catalog has not seen and discarding a torn tail.
  static Result<std::unique_ptr<Vault>> Open(const std::string& dir, const KeySource& keys,
                                             const VaultOptions& options, OpenReport* report = nullptr);
  // Deletes the catalog and recreates it from the packs and the key.
  static Result<OpenReport> Rebuild(const std::string& dir, const KeySource& keys, const VaultOptions& options);

  // Stores a message (or adds the envelope to the stored copy). Returns once durable.
  Result<IngestResult> Ingest(std::string_view raw, const Envelope& envelope);
  // The same, without waiting: the future resolves once the message is durable. Lets one
  // thread keep many messages in flight (the importer).
  std::future<Result<IngestResult>> IngestAsync(std::string_view raw, const Envelope& envelope);
  // The same, calling done once the message is durable or refused. done runs on the committer
  // thread (or, for a refusal at preparation, on the caller's): it must be quick and must not
  // call back into Ingest. Lets a network server hold thousands of messages in flight.
  void IngestAsync(std::string_view raw, const Envelope& envelope, std::function<void(Result<IngestResult>)> done);
  // Messages prepared and waiting for the committer.
  size_t queued() const;

  // Trains a dictionary from samples (each made by TrainingSample, from the message sample_ids
  // names at the same position) and makes it the one new messages use. The ids are kept with
  // the dictionary, so a purge knows whether it learnt anything from a purged message.
  Status TrainDictionary(const std::vector<std::string_view>& samples, const std::vector<ObjectId>& sample_ids);
  // What the compressor will see for this message: a training sample for TrainDictionary.
  static std::string TrainingSample(const Envelope& envelope, std::string_view raw);
  bool has_dictionary() const;

  // The original bytes, after checking them against the fingerprint.
  Result<std::string> ReadMessage(const ObjectId& id);
  Result<MessageMeta> GetMeta(const ObjectId& id) const;
  // Every capture of the message, first one first.
  Result<std::vector<StoredEnvelope>> GetEnvelopes(const ObjectId& id) const;
  // Why MIME analysis of a stored message stopped short ("" when it did not).
  Result<std::string> Warning(const ObjectId& id);
  // A full id or a unique prefix of at least 6 hex digits.
  Result<ObjectId> Resolve(const std::string& id_or_prefix) const;
  Result<VaultStats> Stats() const;
  Status ForEachMessage(const std::function<bool(const ObjectId&, const MessageMeta&)>& fn) const;
  // Reads many messages, decoding each compression block once. fn is called once per id, in
  // storage order (not the order asked), with the message or the reason it cannot be read.
  Status ReadMany(const std::vector<ObjectId>& ids, const std::function<void(const ObjectId&, Result<StoredMessage>)>& fn) const;

  // The change log (catalog.h): every stored message and every added envelope, numbered.
  // The full-text index follows it, so nothing stored can stay invisible to search.
  Result<std::vector<Change>> ChangesAfter(uint64_t after, size_t limit) const;
  uint64_t last_change() const;
  // Waits until a change numbered above `after` is durable, or the timeout passes; returns
  // the last change number.
  uint64_t WaitForChange(uint64_t after, std::chrono::milliseconds timeout) const;

  // Recomputes fingerprints and authenticates ciphertexts: all of them, or a random sample.
  // *stop, when it becomes true, ends the check before the next pack (report.stopped).
  Result<VerifyReport> Verify(double sample_percent = 100.0,
                              const std::function<void(uint64_t done, uint64_t total)>& progress = {},
                              const std::atomic<bool>* stop = nullptr);

  // Forgets the messages durably (returns once the PURGE record is fsync'd) and queues the packs
  // holding them for Shred. A message is skipped when it is not stored, when it has more
  // captures than the item says, or when a capture of it is in the same commit group.
  Result<PurgeOutcome> Purge(const std::vector<PurgeItem>& items);
  // Rewrites every queued pack without the purged records (old file deleted, never edited),
  // retraining dictionaries that learnt from purged mail. Resumable: an interrupted Shred (a
  // crash, *stop) leaves the queue in the catalog and the next call finishes it.
  Result<ShredReport> Shred(const std::atomic<bool>* stop = nullptr);
  // Packs still queued for Shred.
  Result<size_t> ShredPending() const;

  VaultHealth health() const;

  // Replication (replication/shipper.h) reads the packs as the catalog describes them: each
  // pack's generation (a purge's rewrite makes a new one) and its durable bytes (all of a sealed
  // pack; of the open pack, what the last commit group fsync'd).
  struct PackExtent {
    uint64_t number = 0;
    uint32_t generation = 0;
    uint64_t durable_bytes = 0;
    bool sealed = false;  // no byte will be appended (sealed, or closed after damage)
  };
  Result<std::vector<PackExtent>> PackExtents() const;
  // A read-only descriptor of the pack's file of that generation (the caller closes it); a
  // rewrite swapping the file afterwards does not change what the descriptor reads. NotFound
  // when the pack has moved on to another generation (or is gone).
  Result<int> OpenPackGeneration(uint64_t number, uint32_t generation) const;

  const std::string& dir() const { return dir_; }
  // Commit groups (one append + fsync each) since open: group commit at work.
  uint64_t commit_groups() const { return commit_groups_.load(); }
  const std::string& vault_id() const { return vault_id_; }
  // A key for data kept beside the vault (the API's state store, the audit chain), derived
  // from the master key: HKDF(master, salt = vault id, info = purpose), e.g. "mailvault/v1/state".
  SecretKey DeriveSubkey(std::string_view purpose) const;
  // The same, from a vault directory's VAULT (and keyslot) and the key, without opening the
  // vault: disaster recovery checks the offsite manifests before it writes a pack. Fails with
  // kBadKey when the key does not open that vault. *vault_id receives the id (hex) when asked.
  static Result<SecretKey> SubkeyFromFiles(const std::string& dir, const KeySource& keys, std::string_view purpose,
                                           std::string* vault_id_hex = nullptr);

 private:
  struct Pending;
  struct OpenPack;
  class BlockCursor;
  struct DecodedMessage {
    ObjectId id;
    RecordLocation where;
    uint64_t block_start = 0;
    std::string envelope;  // encoded
    std::string raw;
  };
  using FreshMap = std::unordered_map<ObjectId, MessageMeta, ObjectIdHash>;

  Vault(std::string dir, std::string vault_id, VaultKeys keys, VaultOptions options, FileLock lock);

  Status Recover(OpenReport* report);
  // Finishes or undoes a pack rewrite a crash interrupted (a `.rewrite` file beside a pack).
  Status SettleRewrites(OpenReport* report);
  // Applies a PURGE record's ids: catalog entries, change log, stats, shred queue, taints.
  // touched (optional) receives the packs queued for rewriting.
  Status ApplyPurge(const std::vector<ObjectId>& ids, Catalog::Batch* batch, VaultStats* st, FreshMap* fresh,
                    std::set<uint64_t>* touched);
  // A TOMBSTONE record takes the change number its record took (rebuild's numbering).
  Status ApplyTombstone(const struct TombstoneRecord& t, Catalog::Batch* batch, VaultStats* st, FreshMap* fresh);
  // Notes which dictionaries may hold some of a purged message: they are retired (retrained).
  void TaintDictionaries(const ObjectId& id, Catalog::Batch* batch, std::map<uint32_t, uint32_t>* retiring);
  // Registers a dictionary record's content (replay and open); a replacement retires the one
  // it replaces and queues every pack (each may hold blocks to re-encode).
  Status LoadDictionary(uint32_t id, const struct DictionaryContent& content, Catalog::Batch* batch);
  void PreloadDictionaries(uint64_t pack);
  struct RewriteResult {
    bool changed = false;
    uint64_t messages_removed = 0, envelopes_removed = 0, blocks_reencoded = 0, bytes_before = 0, bytes_after = 0;
  };
  Result<RewriteResult> RewritePack(uint64_t number, const std::map<uint32_t, uint32_t>& retiring, bool drop_retired_records);
  Status TrainReplacement(uint32_t retired, ShredReport* report);
  Status SealPackIfOpen(uint64_t number);
  std::string DictionaryBody(uint32_t id, const DictionaryContent& content) const;
  Status ReplayPack(uint64_t number, PackInfo info, bool last, OpenReport* report);
  Status ApplyMessage(const DecodedMessage& d, uint64_t pack, Catalog::Batch* batch, VaultStats* stats, FreshMap* fresh);
  Status ApplyRecord(const struct RawRecord& rec, uint64_t pack, Catalog::Batch* batch, VaultStats* stats, FreshMap* fresh);
  // Frames a record for the open pack: keyed in a version 2 pack, at sequence `sequence`.
  std::string Frame(RecordType type, std::string_view body, uint64_t sequence) const;
  Status OpenPackForAppend(uint64_t number, bool create);
  Status SealCurrentPack();
  // After a failure dropped the open pack: clears the catalog's error, replays what the pack
  // holds and the catalog lacks (cutting only an unfinished append), and opens a pack for
  // appending again. Runs on the committer thread.
  Status ReopenForAppend();
  // Gives up the open pack after a failure; the next group reopens it (ReopenForAppend).
  void DropPack(const Error& why);
  void SetFailing(const Error& e);
  void SetHealthy();
  Result<std::shared_ptr<Pending>> Prepare(std::string_view raw, const Envelope& envelope);
  void Submit(std::shared_ptr<Pending> p);
  // Submits to the committer and waits for its answer (dictionaries, purges, seals).
  Result<IngestResult> SubmitAndWait(std::shared_ptr<Pending> p);
  void CommitLoop();
  void CommitGroup(std::vector<std::shared_ptr<Pending>>& group);
  struct EncodedBlock {
    Status error;
    std::vector<std::string> bodies;  // message record bodies, in block order
  };
  // Compresses and encrypts one block of new messages (thread-safe).
  EncodedBlock EncodeBlock(const std::vector<std::shared_ptr<Pending>>& group, const std::vector<size_t>& members,
                           const Dictionary* dict) const;
  Result<SecretKey> UnwrapDataKey(const ObjectId& id, const std::string& wrapped) const;
  // The data key of a stored message; `pending` is the committer's unwritten buffer, which
  // starts at pack offset pending_base of the open pack.
  Result<SecretKey> DataKeyOf(const ObjectId& id, const MessageMeta& meta, const std::string* pending,
                              uint64_t pending_base) const;
  Result<DecodedMessage> DecodeStored(const ObjectId& id, const MessageMeta& meta) const;
  Result<std::vector<StoredEnvelope>> EnvelopesOf(const ObjectId& id) const;  // GetEnvelopes without the layout lock
  std::string AnalysisWarning(std::string_view raw) const;
  // Keyed (HMAC with the catalog key), so the catalog does not reveal who received what.
  uint64_t EnvelopeDigest(const Envelope& e) const;
  std::shared_ptr<const Dictionary> CurrentDictionary() const;
  Result<std::shared_ptr<const Dictionary>> DictionaryById(uint32_t id) const;
  void MaybeAutoTrain(const Envelope& envelope, std::string_view raw);
  Result<int> PackFd(uint64_t pack) const;
  std::string PackPath(uint64_t n) const;

  std::string dir_;
  std::string vault_id_;
  VaultKeys keys_;
  SecretKey record_key_;  // the MACs of keyed pack records (pack.h)
  VaultOptions options_;
  FileLock lock_;
  std::unique_ptr<Catalog> catalog_;

  // Shared by everything that reads pack bytes through catalog locations (readers, the
  // committer); exclusive while a purge swaps a rewritten pack and its catalog entries in.
  mutable std::shared_mutex layout_mu_;
  std::mutex shred_mu_;  // one Shred at a time
  // Rebuild's view of purged messages whose tombstone it has replayed (change numbering, ApplyRecord).
  std::unordered_map<ObjectId, bool, ObjectIdHash> tombstoned_;

  mutable std::mutex dict_mu_;
  // A replacement trained when too little mail was left to learn from maps to nullptr: its
  // blocks are compressed without a dictionary.
  std::map<uint32_t, std::shared_ptr<const Dictionary>> dictionaries_;
  // The messages each dictionary was trained from (absent: unknown, a version 1 dictionary).
  std::map<uint32_t, std::unordered_map<ObjectId, bool, ObjectIdHash>> dictionary_samples_;
  uint32_t current_dictionary_ = 0;
  uint32_t reserved_dictionary_ = 0;  // the last id handed to a training (REQUIRES: dict_mu_)
  std::mutex train_mu_;
  std::vector<std::string> training_samples_;
  std::vector<ObjectId> training_ids_;
  size_t training_bytes_ = 0;
  bool training_done_ = false;

  mutable std::mutex fd_mu_;
  mutable std::map<uint64_t, int> read_fds_;

  // Committer state. REQUIRES: queue_mu_ for the queue; the rest is the committer's own.
  mutable std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::vector<std::shared_ptr<Pending>> queue_;
  bool stopping_ = false;
  std::thread committer_;
  std::unique_ptr<OpenPack> pack_;
  VaultStats stats_;
  std::atomic<uint64_t> commit_groups_{0};

  mutable std::mutex health_mu_;
  VaultHealth health_;                              // REQUIRES: health_mu_
  std::chrono::steady_clock::time_point last_reopen_try_{};  // the committer's own
  std::string pack_fault_;  // the committer's own: why pack_ was dropped (the raw cause, unwrapped)

  mutable std::mutex change_mu_;
  mutable std::condition_variable change_cv_;
  uint64_t last_change_ = 0;  // REQUIRES: change_mu_
};

}  // namespace mailvault
