// What replication reads back from a target it does not control: S3's XML answers (listings,
// parts, versions, errors, object lock), manifests (parsed without and with the key), state
// objects and index snapshot archives (unpacked into a scratch directory: no file may land
// outside it). The first byte picks the parser; none may crash, hang or read out of bounds, and a
// manifest that decodes must encode and decode again to the same content.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "replication/formats.h"
#include "replication/s3_xml.h"

using namespace mailvault;
using namespace mailvault::replication;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  static const SecretKey key(std::string(32, 'k'));
  switch (data[0] % 7) {
    case 0:
      (void)ParseListObjects(in);
      break;
    case 1:
      (void)ParseListVersions(in);
      break;
    case 2:
      (void)ParseListParts(in);
      (void)ParseObjectLockSeconds(in);
      break;
    case 3:
      (void)ParseS3Error(in);
      (void)XmlUnescape(in);
      break;
    case 4: {
      Result<Manifest> m = DecodeManifestUnauthenticated(in);
      if (m.ok()) {
        Result<Manifest> again = DecodeManifest(EncodeManifest(*m, key), key);
        if (!again.ok() || again->seq != m->seq || again->packs.size() != m->packs.size()) __builtin_trap();
      }
      (void)DecodeManifest(in, key);
      break;
    }
    case 5:
      (void)DecodeStateObject(in, key, "state/0000000000000001.snap");
      break;
    default: {
      static const std::string root = "/tmp/fuzz_offsite." + std::to_string(::getpid());
      const std::string dir = root + "/a/index";
      (void)ReadIndexArchive(in, dir);
      std::error_code ec;
      // Anything written beside the index directory escaped it.
      for (const auto& e : std::filesystem::directory_iterator(root + "/a", ec)) {
        if (e.path().filename() != "index") __builtin_trap();
      }
      std::filesystem::remove_all(root, ec);
      break;
    }
  }
  return 0;
}
