// The Vault's internals shared by its source files: the nested types and the packs directory.
#pragma once

#include <unistd.h>

#include "core/bytes.h"
#include "vault/pack.h"
#include "vault/vault.h"

namespace mailvault {
namespace vault_internal {

std::string PacksPath(const std::string& dir);
Result<std::vector<uint64_t>> ListPackNumbers(const std::string& dir);

}  // namespace vault_internal

// One message (or dictionary) on its way to the committer. Prepared on the caller's thread;
// compressed, encrypted and appended by the committer, which alone knows where blocks start.
struct Vault::Pending {
  enum Kind { kMessage, kDictionary, kPurge, kSeal } kind = kMessage;
  ObjectId id;
  Envelope envelope;
  std::string raw;      // the message; empty when it was already stored at preparation
  std::string warning;  // why MIME analysis stopped short, if it did
  uint32_t dictionary_id = 0;
  std::string dictionary_body;                   // kDictionary: the encoded record body
  std::shared_ptr<const Dictionary> dictionary;  // kDictionary: activated once durable
  std::vector<PurgeItem> purge;                // kPurge: what to forget
  std::shared_ptr<PurgeOutcome> purge_outcome;  // kPurge: filled in by the committer
  uint64_t seal_pack = 0;                       // kSeal: seal this pack if it is the open one
  uint32_t replaces = 0;                        // kDictionary: the retired dictionary it replaces
  std::vector<ObjectId> dictionary_samples;     // kDictionary: what it was trained from
  // Called once, by the committer, when the message is durable (or could not be stored).
  std::function<void(Result<IngestResult>)> done;
};

// Decodes a pack's message records in order, block by block. Damage inside a block makes the
// rest of that block unreadable too: later members use the earlier ones as history.
class Vault::BlockCursor {
 public:
  explicit BlockCursor(const Vault* vault) : vault_(vault) {}

  // REQUIRES: rec is a MESSAGE record, and the member before it in its block was passed last.
  Result<DecodedMessage> Next(const RawRecord& rec) {
    MV_ASSIGN_OR_RETURN(MessageRecord mr, DecodeMessageBody(rec.body));
    if (mr.block_index == 0) {
      dict_.reset();
      if (mr.dictionary_id) {
        MV_ASSIGN_OR_RETURN(dict_, vault_->DictionaryById(mr.dictionary_id));
      }
      decoder_.Begin(dict_.get());
      block_start_ = rec.offset;
      next_index_ = 0;
      healthy_ = true;
    } else if (mr.block_index != next_index_) {
      return Corruption("message " + mr.id.Hex() + " is out of place: position " + std::to_string(mr.block_index) +
                        " of its compression block, found where position " + std::to_string(next_index_) + " belongs");
    } else if (!healthy_) {
      return Corruption("message " + mr.id.Hex() + ": an earlier message of its compression block is damaged");
    }
    ++next_index_;
    healthy_ = false;
    MV_ASSIGN_OR_RETURN(SecretKey dk, vault_->UnwrapDataKey(mr.id, mr.wrapped_key));
    Result<std::string> plain = mailvault::Open(dk, MessageAad(mr), mr.box);
    if (!plain.ok()) return Corruption("message " + mr.id.Hex() + ": ciphertext fails authentication (altered on disk)");
    ByteReader r(*plain);
    uint64_t env_len;
    if (!r.GetVarint(&env_len) || env_len > (1u << 26)) {
      return Corruption("message " + mr.id.Hex() + ": envelope length is damaged");
    }
    std::string out;
    Status s = decoder_.Next(r.rest(), env_len + mr.raw_size, &out);
    if (!s.ok()) return s.error().With("message " + mr.id.Hex());
    DecodedMessage d;
    d.id = mr.id;
    d.where = RecordLocation{0, rec.offset, rec.length};
    d.block_start = block_start_;
    d.envelope = out.substr(0, env_len);
    d.raw = out.substr(env_len);
    if (ObjectId::Of(d.raw) != mr.id) return Corruption("message " + mr.id.Hex() + ": content does not match its fingerprint");
    healthy_ = true;
    return d;
  }

 private:
  const Vault* vault_;
  BlockDecoder decoder_;
  std::shared_ptr<const Dictionary> dict_;
  uint64_t block_start_ = UINT64_MAX;
  uint32_t next_index_ = 0;
  bool healthy_ = false;
};

// The pack that receives appends.
struct Vault::OpenPack {
  uint64_t number = 0;
  int fd = -1;
  uint64_t size = 0;
  uint64_t records = 0;          // records in the pack: the next record's sequence number
  bool keyed = true;             // a version 2 pack: records carry sequence and MAC
  std::unique_ptr<Sha256> sha;  // of every byte written so far
  ~OpenPack() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace mailvault
