// Vault: Verify, every pack record checked against the catalog and the key.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

#include "vault/vault_internal.h"

namespace mailvault {

Result<VerifyReport> Vault::Verify(double sample_percent, const std::function<void(uint64_t, uint64_t)>& progress,
                                   const std::atomic<bool>* stop) {
  std::shared_lock<std::shared_mutex> layout(layout_mu_);  // no pack is swapped under a verify
  VerifyReport report;
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> coin(0.0, 100.0);

  // What the catalog says is stored, by pack and offset: each message and each later envelope.
  struct Expected {
    ObjectId id;
    bool envelope;
  };
  std::map<uint64_t, std::map<uint64_t, Expected>> expected;
  uint64_t total = 0;
  Status s = catalog_->ForEachMessage([&](const ObjectId& id, const MessageMeta& m) {
    expected[m.where.pack][m.where.offset] = {id, false};
    ++total;
    if (m.envelope_digests.size() > 1) {
      Result<std::vector<StoredEnvelope>> envs = catalog_->GetEnvelopes(id);
      if (!envs.ok()) {
        report.problems.push_back("message " + id.Hex() + ": " + envs.error().message());
        return true;
      }
      for (const StoredEnvelope& e : *envs) expected[e.where.pack][e.where.offset] = {id, true};
    }
    return true;
  });
  MV_RETURN_IF_ERROR(s);
  MV_ASSIGN_OR_RETURN(auto infos, catalog_->Packs());

  std::atomic<uint64_t> done{0};
  std::mutex mu;  // guards report
  auto problem = [&](const std::string& p) {
    std::lock_guard<std::mutex> l(mu);
    report.problems.push_back(p);
  };
  for (const auto& [n, info] : infos) expected[n];  // every pack, even one with no message left
  for (auto& entry : expected) {
    if (stop && stop->load()) {
      report.stopped = true;
      break;
    }
    // Named, not a structured binding: the lambdas below capture them (clang 14 cannot).
    const uint64_t pack = entry.first;
    std::map<uint64_t, Expected>& want = entry.second;
    std::string path = PackPath(pack);
    std::string bytes;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st;
    Status rs = fd < 0 ? ErrnoError("cannot open", path, errno)
                : ::fstat(fd, &st) != 0 ? ErrnoError("cannot stat", path, errno)
                                        : PreadAll(fd, 0, static_cast<size_t>(st.st_size), &bytes, path);
    if (fd >= 0) ::close(fd);
    if (!rs.ok()) {
      if (want.empty()) problem("pack " + path + ": " + rs.error().message());
      for (auto& [off, e] : want) problem("message " + e.id.Hex() + ": " + rs.error().message());
      continue;
    }
    ++report.packs_checked;
    report.bytes_checked += bytes.size();
    uint32_t version = 0;
    if (!DecodePackHeader(bytes, &version).ok()) problem("pack " + path + ": its header is damaged");
    const bool keyed_pack = version >= kPackFormatVersion;
    if (infos[pack].applied_bytes > bytes.size()) {
      problem("pack " + path + ": " + std::to_string(bytes.size()) + " bytes, shorter than the " +
              std::to_string(infos[pack].applied_bytes) + " bytes the catalog recorded (cut off)");
    }
    if (sample_percent >= 100.0 && infos[pack].sealed) {
      size_t seal_len = (keyed_pack ? kKeyedRecordOverhead : kRecordOverhead) + 40;
      if (bytes.size() < kPackHeaderSize + seal_len ||
          Sha256Of(std::string_view(bytes).substr(0, bytes.size() - seal_len)) != infos[pack].sha256) {
        problem("pack " + path + ": contents differ from the checksum recorded when it was sealed");
      }
    }
    // Split the pack into units that decode independently: each compression block, and each
    // envelope record. Damaged bytes are stepped over to the next valid frame.
    struct Unit {
      std::vector<RawRecord> records;
    };
    std::vector<Unit> units;
    std::vector<RecordScanner::Damage> damage;
    RecordScanner scanner(bytes, std::min<uint64_t>(kPackHeaderSize, bytes.size()));
    uint64_t next_seq = 0;
    bool sealed_seen = false;
    bool after_damage = false;  // a sequence gap right after damage is that damage, reported already
    for (;;) {
      RawRecord rec;
      while (scanner.Next(&rec)) {
        if (keyed_pack) {
          // Removal, reordering and replay leave marks only the key can erase (pack.h).
          std::string who;
          if ((rec.type == RecordType::kMessage || rec.type == RecordType::kEnvelope) && rec.body.size() >= ObjectId::kSize) {
            who = (rec.type == RecordType::kMessage ? "message " : "an envelope of message ") +
                  ObjectId::FromBytes(rec.body.substr(0, ObjectId::kSize)).Hex() + ": ";
          }
          std::string why = CheckRecordMac(rec, record_key_, vault_id_, pack);
          if (!why.empty()) {
            problem("pack " + path + " offset " + std::to_string(rec.offset) + ": " + who + why);
          } else {
            if (rec.sequence > next_seq && !after_damage) {
              problem("pack " + path + ": records " + std::to_string(next_seq) + ".." + std::to_string(rec.sequence - 1) +
                      " are missing before offset " + std::to_string(rec.offset) + " (removed, or damaged)");
            } else if (rec.sequence < next_seq) {
              problem("pack " + path + " offset " + std::to_string(rec.offset) + ": " + who + "sequence number " +
                      std::to_string(rec.sequence) + " goes back (a record replayed)");
            }
            next_seq = static_cast<uint64_t>(rec.sequence) + 1;
            after_damage = false;
            if (rec.type == RecordType::kSeal) {
              sealed_seen = true;
              Result<SealRecord> seal = DecodeSealBody(rec.body);
              if (seal.ok() && seal->record_count != rec.sequence) {
                problem("pack " + path + ": its seal counts " + std::to_string(seal->record_count) + " records, but it is record " +
                        std::to_string(rec.sequence));
              }
            } else if (sealed_seen) {
              problem("pack " + path + " offset " + std::to_string(rec.offset) + ": a record after the seal (appended)");
            }
          }
        }
        if (rec.type == RecordType::kMessage) {
          bool starts = rec.body.size() >= kMessageRecordFixed && DecodeU32(rec.body.data() + kMessageRecordFixed - 4) == 0;
          if (starts || units.empty() || units.back().records.empty() || units.back().records.back().type != RecordType::kMessage) {
            units.push_back({});
          }
          units.back().records.push_back(rec);
        } else if (rec.type == RecordType::kEnvelope) {
          units.push_back({{rec}});
          units.push_back({});  // a message after an envelope record starts a new unit
        }
      }
      if (scanner.at_end()) break;
      damage.push_back(scanner.Skip());
      after_damage = true;
      units.push_back({});  // nothing decodes across damage
    }
    auto damage_at = [&](uint64_t off) -> const RecordScanner::Damage* {
      for (const auto& d : damage) {
        if (off >= d.begin && off < d.end) return &d;
      }
      return nullptr;
    };
    for (const auto& d : damage) {
      bool named = false;
      for (auto it = want.lower_bound(d.begin); it != want.end() && it->first < d.end; ++it) named = true;
      if (named) continue;  // reported below, by message
      std::string what = "pack " + path + ": bytes " + std::to_string(d.begin) + ".." + std::to_string(d.end) +
                         " are damaged (" + d.why + ")";
      // The id field of a damaged message or envelope record, when its header still reads: a
      // hint for the administrator, not proof (the id bytes may be what was damaged).
      std::string_view at = std::string_view(bytes).substr(d.begin);
      if (at.size() >= kRecordHeaderSize + ObjectId::kSize) {
        what += "; if it held a message or an envelope, its id field reads " +
                ObjectId::FromBytes(at.substr(kRecordHeaderSize, ObjectId::kSize)).Hex();
      }
      problem(what);
    }
    if (sample_percent < 100.0) {
      std::vector<Unit> kept;
      for (Unit& u : units) {
        if (coin(rng) < sample_percent) kept.push_back(std::move(u));
      }
      units.swap(kept);
    }
    // Which expected records decoded correctly.
    std::map<uint64_t, std::string> outcome;  // offset -> "" when good, else the reason
    std::mutex outcome_mu;
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < units.size();) {
        BlockCursor cursor(this);  // a unit after damage may start mid-block: no stale history
        for (const RawRecord& rec : units[i].records) {
          std::string why;
          if (rec.type == RecordType::kMessage) {
            Result<DecodedMessage> d = cursor.Next(rec);
            if (!d.ok()) why = d.error().message();
          } else {
            Result<EnvelopeRecord> er = DecodeEnvelopeBody(rec.body);
            auto w = want.find(rec.offset);
            if (!er.ok()) {
              why = er.error().message();
            } else if (w == want.end()) {
              why = "an envelope record the catalog does not know";
            } else {
              Result<MessageMeta> meta = GetMeta(er->id);
              Result<SecretKey> dk = meta.ok() ? DataKeyOf(er->id, *meta, nullptr, 0) : Result<SecretKey>(meta.error());
              if (!dk.ok()) why = dk.error().message();
              else if (!mailvault::Open(*dk, EnvelopeAad(er->id), er->box).ok()) why = "envelope fails authentication";
            }
          }
          std::lock_guard<std::mutex> l(outcome_mu);
          outcome[rec.offset] = why;
        }
        uint64_t d = done.fetch_add(units[i].records.size()) + units[i].records.size();
        if (progress && i % 64 == 0) progress(std::min(d, total), total);
      }
    };
    unsigned workers = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
    std::vector<std::thread> threads;
    for (unsigned t = 1; t < workers; ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();

    for (auto& [off, e] : want) {
      auto o = outcome.find(off);
      std::string why;
      if (o != outcome.end()) {
        why = o->second;
      } else if (sample_percent < 100.0) {
        continue;  // not in the sample
      } else if (const RecordScanner::Damage* d = damage_at(off)) {
        why = (d->begin == off ? "" : "its record is unreadable: ") + d->why;
      } else {
        why = off >= bytes.size() ? "its record is missing from the pack (the pack was cut off)"
                                  : "its record is missing from the pack";
      }
      if (why.empty()) {
        (e.envelope ? report.envelopes_checked : report.messages_checked)++;
      } else {
        problem("message " + e.id.Hex() + (e.envelope ? " (a later envelope)" : "") + " in " + PackFileName(pack) +
                " at offset " + std::to_string(off) + ": " + why);
      }
    }
    for (auto& [off, why] : outcome) {
      if (!why.empty() && !want.count(off)) problem("pack " + path + " offset " + std::to_string(off) + ": " + why);
    }
  }
  if (progress) progress(total, total);
  return report;
}

}  // namespace mailvault
