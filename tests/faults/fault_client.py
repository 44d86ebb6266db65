#!/usr/bin/env python3
"""SMTP load for tests/faults/fault_test.sh: tests/capture/ack_client.py's sessions (same
retry rules: a 4xx or a dropped connection sends the SAME message again; only a 250 counts),
with two additions:

  - messages are mostly random (base64 of random bytes), so the compressed packs grow fast
    and roll at a small seal size;
  - each acknowledged message is recorded with the SHA-256 of the form the vault stores
    (dot-unstuffed, CRLF -> LF), which is its vault id, and the time of the 250; its exact
    bytes are kept in --keep DIR/<sha256> for the byte-for-byte check;
  - every 4xx/5xx reply is appended to --refusals (time, code, text) so the test can count
    refusals per fault phase.

    fault_client.py --port P --log ACKS --keep DIR --refusals FILE [--sessions N] [--seconds S]

ACKS lines: "<message-id> <vault-id-from-reply> <sha256> <unix-time>" (check_acked.py reads
the first field). Stops on SIGTERM (a transaction in flight waits for its reply).
"""

import hashlib
import os
import random
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "capture"))
import ack_client  # noqa: E402

KEEP = None
REFUSALS = None
REF_LOCK = threading.Lock()


def make_message(rng):
    u = str(uuid.uuid4())
    msgid = "<%s@ack.mailvault.test>" % u
    raw = rng.randbytes(rng.randint(1024, 3072))
    import base64
    b64 = base64.b64encode(raw).decode()
    lines = [b64[i:i + 76] for i in range(0, len(b64), 76)]
    head = ["From: Fault Client <load@client.test>",
            "To: Archive <archive@journal.test>",
            "Subject: fault-test %s" % u,
            "Message-ID: %s" % msgid,
            "Date: %s" % time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            "",
            "fault injection probe %s" % u]
    data = ("\r\n".join(head + lines) + "\r\n.\r\n").encode()  # base64 never starts a line with "."
    return msgid, data


class FaultSession(ack_client.Session):
    def reply(self):
        code, text = super().reply()
        if code >= 400:
            with REF_LOCK:
                os.write(REFUSALS, ("%.3f %d %s\n" % (time.time(), code, text[:120])).encode())
        return code, text

    def ack(self, msgid, reply):
        data = self.pending[1]
        stored = data[:-3].replace(b"\r\n", b"\n")  # without ".\r\n", in local form
        sha = hashlib.sha256(stored).hexdigest()
        with open(os.path.join(KEEP, sha), "wb") as f:
            f.write(stored)
        vault_id = "-"
        for tok in reply.replace(",", " ").split():
            if len(tok) >= 16 and all(c in "0123456789abcdef" for c in tok):
                vault_id = tok
        rec = ("%s %s %s %.3f\n" % (msgid, vault_id, sha, time.time())).encode()
        with self.stats.lock:
            os.write(self.log, rec)
            os.fsync(self.log)
            self.stats.acked += 1
            if "already archived" in reply:
                self.stats.duplicates += 1


def main():
    global KEEP, REFUSALS
    args = list(sys.argv[1:])

    def take(flag):
        i = args.index(flag)
        v = args[i + 1]
        del args[i:i + 2]
        return v

    KEEP = take("--keep")
    REFUSALS = os.open(take("--refusals"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.makedirs(KEEP, exist_ok=True)
    ack_client.make_message = make_message
    ack_client.Session = FaultSession
    sys.argv = [sys.argv[0]] + args
    return ack_client.main()


if __name__ == "__main__":
    random.seed()
    sys.exit(main())
