// The offsite copy in a directory on an SSH server, reached over SFTP (libssh 0.10).
//
// Objects are files under SftpConfig::path: "packs/00000001-0.pack" is
// PATH/packs/00000001-0.pack, its directories created as needed (mode 0700; PATH itself only by
// Prepare(true), since a missing PATH is more often an unmounted disk or a wrong URL than a new
// target). A put writes NAME.part-<16 hex digits> in the same directory, fsyncs it
// (fsync@openssh.com, where the server offers it), and renames it over NAME
// (posix-rename@openssh.com, so an existing object is replaced atomically). List never shows those
// temporaries, and object names of that shape are refused, as are segments longer than 233 bytes
// (255, a file name's limit, less the temporary's suffix). A put that fails removes its temporary
// when the link still allows it; one cut off by a dropped link leaves it behind (List ignores it;
// it is harmless but takes space).
//
// Trust: key authentication only, and the server's host key must already be in
// SftpConfig::known_hosts: no trust on first use. ~/.ssh/config, ~/.ssh/known_hosts and
// /etc/ssh/ssh_known_hosts are never read, so what the store trusts is exactly what its
// configuration says.
//
// Links: the store connects on the first operation and reconnects on the first operation after
// a link failure (a connection that died while idle is noticed and replaced before the operation
// starts); it never retries a failed transfer by itself (the caller's retry policy decides). One
// request (at most 255 KiB) left unanswered for TransferOptions::stall_timeout_seconds ends the
// operation with kIoError, however libssh itself waits.
//
// Not thread-safe in the sense that matters: one user at a time. Calls are serialised by a
// mutex, so two threads cannot corrupt it, but a second caller waits for the first's transfer.
#pragma once

#include <memory>
#include <string>

#include "core/result.h"
#include "replication/object_store.h"

namespace mailvault::replication {

struct SftpConfig {
  std::string user, host;  // from sftp://USER@HOST:PORT/PATH; host without brackets ("::1")
  int port = 22;
  std::string path;           // absolute remote directory that holds the objects, no trailing '/'
  std::string identity_file;  // private key (OpenSSH or PEM format, no passphrase)
  // known_hosts format ("[host]:port ssh-ed25519 AAAA..." for a port other than 22), as
  // `ssh-keyscan -p PORT HOST` prints it. An unknown or changed host key is refused (kBadKey).
  std::string known_hosts;
  TransferOptions transfer;
};

// Parses "sftp://USER@HOST[:PORT]/PATH": PATH is absolute (what follows the host, from its
// '/'), HOST may be a name, an IPv4 address or a bracketed IPv6 address ("[::1]"). Leaves
// identity_file, known_hosts and transfer at their defaults. Errors (kInvalidArgument) name
// what is wrong and show the expected form.
Result<SftpConfig> ParseSftpUrl(const std::string& url);

// Does not connect yet: the first operation connects, and an operation after a link failure
// reconnects. A configuration that cannot work (no identity file, ...) is reported by the
// first operation.
std::unique_ptr<ObjectStore> MakeSftpStore(SftpConfig config);

}  // namespace mailvault::replication
