#include "replication/object_store.h"

namespace mailvault::replication {

bool ValidObjectName(std::string_view name) {
  if (name.empty() || name.size() > 512 || name.front() == '/' || name.back() == '/') return false;
  size_t seg_start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '/') {
      std::string_view seg = name.substr(seg_start, i - seg_start);
      if (seg.empty() || seg == "." || seg == "..") return false;
      seg_start = i + 1;
      continue;
    }
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace mailvault::replication
