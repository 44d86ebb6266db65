#include "cli/index_tags.h"

namespace mailvault::cli {

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

}  // namespace mailvault::cli
