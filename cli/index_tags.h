// The index follows the control plane's tags: each document carries its message's tags as
// terms (the tag field's prefix), so `tag:` works in every search — the command line's, which
// reads the index alone, included. The records are the truth (control/records.h); the index
// catches up from their change log, as it does from the vault's.
#pragma once

#include "control/records.h"
#include "core/result.h"
#include "indexer/index.h"

namespace mailvault::cli {

// options with its tag source set to the records (a message's tags when its document is built).
index::IndexOptions WithTags(index::IndexOptions options, const control::Records* records);

// Applies every tag change logged after the index's mark and moves the mark (committed by the
// writer's next commit, or Flush).
Status ApplyTagChanges(index::IndexWriter& writer, const control::Records& records);

}  // namespace mailvault::cli
