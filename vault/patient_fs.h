// A RocksDB file system whose writable files wait out a full or failing disk instead of
// reporting the error to RocksDB.
//
// Why: Debian's librocksdb 7.8.3 is built with assertions, and once a write or sync of one of
// its files has failed, the next use of that file aborts the process
// (WritableFileWriter::AssertFalseAndGetStatusForPrevError); it cannot resume a failed log
// either. The catalog flushes its memtables from RocksDB's own threads, so a full disk during a
// flush killed `mailvault serve` (tests/faults). With these files a failed write() or
// fdatasync() is retried, from exactly where it stopped, with a growing pause (up to 1 s), until
// the cause goes away (space freed, a transient EIO); meanwhile Stalled() says what failed, so
// the vault's health turns "failing" and /healthz answers 503, and RocksDB's writers wait (its
// write stall), which holds the committer and every sender waits or times out: no 250 without
// durable data. Nothing is acknowledged on the strength of a retried fsync alone: a group is
// answered only after the pack's own fdatasync, and the catalog is derived from the packs.
#pragma once

#include <memory>
#include <string>

namespace rocksdb {
class Env;
}

namespace mailvault {

// The Env to give RocksDB (options.env): the default one, with patient writable files. One
// per process, never destroyed (RocksDB's background threads may outlive any owner).
rocksdb::Env* PatientEnv();

// "" while every write goes through; else what is being retried ("write catalog/000012.sst: No
// space left on device", since when is in *since_us).
std::string PatientFsStall(long long* since_us = nullptr);

}  // namespace mailvault
