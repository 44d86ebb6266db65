#!/usr/bin/env python3
"""Acknowledgement-logging SMTP load client for crash tests of `mailvault serve`.

    ack_client.py --port P --sessions N --messages M --log FILE [--seconds S] [--host H]

N threads each keep one SMTP connection open and send messages over it, one transaction
after another. Every message is unique: a Subject and a Message-ID holding a UUID, and a
body of 2-5 KB of text. Only after the server answers 250 to the end of DATA is the message
acknowledged: its Message-ID (then the vault id from the reply) is appended to FILE as one
line, and FILE is flushed and fsynced before the next message. So every line of FILE is a
message the server promised to keep.

The server may be killed at any moment and restarted on the same port: on any connection
error, timeout or 4xx the thread reconnects (backoff 20 ms doubling to 250 ms) and sends
the SAME message again (a retry of an unacknowledged message must not create a second copy:
the vault deduplicates identical bytes). A 5xx to the end of DATA counts as rejected (the
message is dropped and logged to stderr).

Stops after M acknowledged messages in all, at the --seconds deadline, or on SIGTERM/SIGINT
(a transaction already sent waits for its reply, up to --timeout). Prints one summary line;
exit status 0, or 1 when a message was rejected (5xx) or nothing was acknowledged.
"""

import argparse
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid

WORDS = ("archive journal capture message vault envelope recipient sender compliance retention "
         "policy index search fingerprint durable commit acknowledge restart crash recover pack "
         "segment ledger audit custody export mailbox quarterly report invoice meeting agenda "
         "budget forecast review contract signature delivery schedule project status update").split()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.claimed = 0       # messages started (a slot reserved for each)
        self.acked = 0
        self.attempts = 0      # transactions whose DATA was sent completely
        self.reconnects = 0
        self.connect_failures = 0
        self.temporary = 0     # 4xx at any step
        self.rejected = 0      # 5xx to the end of DATA
        self.duplicates = 0    # "already archived" replies


def make_message(rng):
    u = str(uuid.uuid4())
    msgid = "<%s@ack.mailvault.test>" % u
    size = rng.randint(2048, 5120)
    words = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        words.append(w)
        n += len(w) + 1
    lines, cur = [], []
    for w in words:
        cur.append(w)
        if sum(len(x) + 1 for x in cur) > 70:
            lines.append(" ".join(cur))
            cur = []
    if cur:
        lines.append(" ".join(cur))
    head = ["From: Load Client <load@client.test>",
            "To: Archive <archive@journal.test>",
            "Subject: ack-test %s" % u,
            "Message-ID: %s" % msgid,
            "Date: %s" % time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=us-ascii",
            ""]
    body = []
    for ln in head + lines:
        body.append("." + ln if ln.startswith(".") else ln)  # dot-stuffing (never needed here)
    data = ("\r\n".join(body) + "\r\n.\r\n").encode()
    return msgid, data


class Session(threading.Thread):
    def __init__(self, idx, args, stats, log, stop, rng_seed):
        super().__init__(daemon=True)
        self.idx, self.args, self.stats, self.log, self.stop = idx, args, stats, log, stop
        self.rng = random.Random(rng_seed)
        self.sock = None
        self.buf = b""
        self.pending = None  # (msgid, data): claimed, not acknowledged yet

    # -- connection --
    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("connection closed by the server")
            self.buf += d
        i = self.buf.index(b"\n")
        ln, self.buf = self.buf[:i].rstrip(b"\r"), self.buf[i + 1:]
        return ln

    def reply(self):
        while True:
            ln = self.line()
            if ln[3:4] != b"-":
                try:
                    return int(ln[:3]), ln.decode("utf-8", "replace")
                except ValueError:
                    raise ConnectionError("malformed reply %r" % ln[:80])

    def connect(self):
        backoff = 0.02
        first = True
        while not self.stop.is_set():
            if not first:
                with self.stats.lock:
                    self.stats.reconnects += 1
            first = False
            try:
                s = socket.create_connection((self.args.host, self.args.port), timeout=self.args.timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock, self.buf = s, b""
                code, text = self.reply()
                if code != 220:
                    raise ConnectionError("greeting %s" % text)
                self.sock.sendall(b"EHLO ackclient%d.test\r\n" % self.idx)
                code, text = self.reply()
                if code != 250:
                    raise ConnectionError("EHLO: %s" % text)
                return True
            except (OSError, ConnectionError):
                self.close()
                with self.stats.lock:
                    self.stats.connect_failures += 1
                self.stop.wait(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, 0.25)
        return False

    # -- acknowledgement --
    def ack(self, msgid, reply):
        vault_id = "-"
        for tok in reply.replace(",", " ").split():
            if len(tok) == 16 and all(c in "0123456789abcdef" for c in tok):
                vault_id = tok
        rec = ("%s %s\n" % (msgid, vault_id)).encode()
        with self.stats.lock:
            os.write(self.log, rec)  # O_APPEND: one write per line
            os.fsync(self.log)
            self.stats.acked += 1
            if "already archived" in reply:
                self.stats.duplicates += 1

    def claim(self):
        with self.stats.lock:
            if self.stats.claimed >= self.args.messages:
                return False
            self.stats.claimed += 1
            return True

    def run(self):
        while True:
            if self.pending is None:
                if self.stop.is_set() or not self.claim():
                    break
                self.pending = make_message(self.rng)
            elif self.stop.is_set():
                break
            if self.sock is None and not self.connect():
                break
            msgid, data = self.pending
            try:
                self.sock.sendall(b"MAIL FROM:<load@client.test>\r\nRCPT TO:<archive@journal.test>\r\nDATA\r\n")
                c1, t1 = self.reply()
                c2, t2 = self.reply()
                c3, t3 = self.reply()
                if (c1, c2, c3) != (250, 250, 354):
                    bad = [t for c, t in ((c1, t1), (c2, t2), (c3, t3)) if c not in (250, 354)]
                    with self.stats.lock:
                        self.stats.temporary += 1
                    if any(c == 354 for c in (c1, c2, c3)):
                        # DATA was accepted although an earlier step failed: end it empty-handed
                        raise ConnectionError("out of step: %r" % bad)
                    if any(t.startswith("421") for t in bad):
                        raise ConnectionError("421")
                    if any(t.startswith("5") for t in bad):
                        sys.stderr.write("ack_client: session %d: refused before DATA: %s\n" % (self.idx, bad))
                    self.sock.sendall(b"RSET\r\n")
                    self.reply()
                    self.stop.wait(0.05)
                    continue
                self.sock.sendall(data)
                with self.stats.lock:
                    self.stats.attempts += 1
                code, text = self.reply()
                if code == 250:
                    self.ack(msgid, text)
                    self.pending = None
                elif 400 <= code < 500:
                    with self.stats.lock:
                        self.stats.temporary += 1
                    if code == 421:
                        raise ConnectionError("421")
                    self.stop.wait(0.05)
                else:
                    with self.stats.lock:
                        self.stats.rejected += 1
                    sys.stderr.write("ack_client: session %d: %s rejected: %s\n" % (self.idx, msgid, text))
                    self.pending = None
            except (OSError, ConnectionError):
                self.close()
        if self.sock:
            try:
                self.sock.sendall(b"QUIT\r\n")
            except OSError:
                pass
            self.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=0, help="stop at this deadline (0: none)")
    ap.add_argument("--log", required=True, help="acknowledged Message-IDs are appended here")
    ap.add_argument("--timeout", type=float, default=10, help="socket timeout per operation")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    stats = Stats()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    t0 = time.monotonic()
    threads = [Session(i, args, stats, log, stop, seed + i) for i in range(args.sessions)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if args.seconds and time.monotonic() - t0 >= args.seconds:
            stop.set()
        for t in threads:
            t.join(0.1)
    os.close(log)
    el = time.monotonic() - t0
    print("ack_client: acknowledged %d in %.1fs (%.0f/s), attempts %d, reconnects %d, connect failures %d, "
          "temporary failures %d, already archived %d, rejected %d"
          % (stats.acked, el, stats.acked / el if el else 0, stats.attempts, stats.reconnects,
             stats.connect_failures, stats.temporary, stats.duplicates, stats.rejected), flush=True)
    return 1 if stats.rejected or stats.acked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
