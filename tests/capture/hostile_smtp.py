#!/usr/bin/env python3
"""Hostile-client test of `mailvault serve` (SMTP and LMTP capture), over raw sockets.

Two phases:

  1. While serve runs (started by the caller with the config below):
       hostile_smtp.py --port P --lmtp-port Q --vault V --state STATE [--pid PID] [--mailvault BIN]
     Every case asserts the exact reply codes. Messages the server stored are written to
     STATE (JSON) with the exact bytes they must have in the vault.
  2. After the caller stopped serve (SIGTERM):
       hostile_smtp.py --verify-stored STATE --vault V --key-file K [--mailvault BIN]
     Finds each message by its unique Subject (`mailvault list --json`), compares the
     bytes of `mailvault cat ID` exactly, the envelope recipients (`show --json`), checks
     that no smuggled or refused message was stored, and that `mailvault verify` is clean.

Output: one line per case, "ok CASE [detail]" or "FAIL CASE: why" (and "note CASE: ..." for
observations that do not fail); exit status 1 when any case failed, 2 for usage errors.

serve must run with the limits in CONFIG_TEXT below (print them with --print-config).

allow = 127.0.0.0/25 lets the test connect from 127.0.0.200 to see a refused client (554).

A whole run, by hand:

    T=$(mktemp -d); MV=build/release/cli/mailvault; H=tests/capture/hostile_smtp.py
    $MV --vault $T/v --key-file $T/key init
    $H --print-config > $T/conf
    $MV --vault $T/v --key-file $T/key --config $T/conf serve \
        --smtp 127.0.0.1:2525 --lmtp 127.0.0.1:2424 2> $T/serve.log &  PID=$!
    sleep 1   # serve writes its status (used for the pid and the message counts) each second
    $H --port 2525 --lmtp-port 2424 --vault $T/v --pid $PID --state $T/state.json
    kill -TERM $PID; wait $PID
    $H --verify-stored $T/state.json --vault $T/v --key-file $T/key

The message size limit is read from the server's EHLO reply (SIZE); the other limits are
taken from the options --max-command-line, --max-errors, --max-recipients, --idle-timeout,
--session-timeout, --max-connections, --max-connections-per-ip (defaults: the config above).
serve's RSS (VmRSS from /proc/PID/status) is watched for the DATA, long-line and 1,000
connection cases; PID is --pid, or read from `mailvault --vault V status --json`.
serve needs an open-file limit above ~1,300 (ulimit -n) for the connection-limit cases.
"""

import argparse
import base64
import errno
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.normpath(os.path.join(HERE, "..", "..", "build", "release", "cli", "mailvault"))

CONFIG_TEXT = """\
# config for tests/capture/hostile_smtp.py
max-message-bytes = 1048576
[capture]
allow = 127.0.0.0/25
max-command-line = 2048
max-errors = 20
max-recipients = 50
idle-timeout = 3s
session-timeout = 15s
max-connections = 1200
max-connections-per-ip = 1100
"""

# Source addresses (all on lo). 127.0.0.1 is kept for the connection-count case so that its
# per-IP count is exact; background (timeout) cases use 127.0.0.3.
SRC_MAIN = "127.0.0.1"
SRC_OTHER = "127.0.0.2"
SRC_BG = "127.0.0.3"
SRC_REFUSED = "127.0.0.200"

_print_lock = threading.Lock()
_failures = 0


def emit(line):
    with _print_lock:
        print(line, flush=True)


class CaseFail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise CaseFail(why)


def run_case(name, fn, *args):
    """Runs one case; prints ok/FAIL. Returns True when it passed."""
    global _failures
    try:
        detail = fn(*args)
        emit("ok %s%s" % (name, (" (" + detail + ")") if detail else ""))
        return True
    except CaseFail as e:
        with _print_lock:
            _failures += 1
        emit("FAIL %s: %s" % (name, e))
    except (OSError, socket.timeout) as e:
        with _print_lock:
            _failures += 1
        emit("FAIL %s: %s: %s" % (name, type(e).__name__, e))
    except Exception as e:  # a bug in the test itself still counts as a failure
        with _print_lock:
            _failures += 1
        emit("FAIL %s: unexpected %s: %s" % (name, type(e).__name__, e))
    return False


def note(name, text):
    emit("note %s: %s" % (name, text))


# ---------------------------------------------------------------------------------------
# A raw SMTP connection
# ---------------------------------------------------------------------------------------


class Closed(Exception):
    pass


class Conn:
    def __init__(self, port, src=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if src:
            self.sock.bind((src, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.timeout = timeout
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise Closed()
        self.buf += chunk

    def line(self, timeout=None):
        """One reply line (without CRLF)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no reply line within %.1fs (have %r)" % (timeout or self.timeout, self.buf[:100]))
            self._fill(left)
        i = self.buf.index(b"\n")
        ln, self.buf = self.buf[:i], self.buf[i + 1:]
        return ln.rstrip(b"\r")

    def reply(self, timeout=None):
        """A whole (possibly multi-line) reply: (code, [lines as str])."""
        lines = []
        while True:
            try:
                ln = self.line(timeout)
            except Closed:
                if lines:
                    raise CaseFail("connection closed inside a multi-line reply %r" % lines)
                raise
            lines.append(ln.decode("utf-8", "replace"))
            if len(ln) < 4 or ln[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise CaseFail("malformed reply %r" % lines)
        return code, lines

    def expect(self, code, what, timeout=None):
        try:
            got, lines = self.reply(timeout)
        except Closed:
            raise CaseFail("%s: expected %d, the server closed the connection" % (what, code))
        except socket.timeout:
            raise CaseFail("%s: expected %d, no reply within %ss" % (what, code, timeout or self.timeout))
        if got != code:
            raise CaseFail("%s: expected %d, got %r" % (what, code, " | ".join(lines)))
        return lines

    def cmd(self, line, code, what=None, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.expect(code, what or line[:60].decode("utf-8", "replace"), timeout)

    def nothing_pending(self, wait=0.3):
        """True when the server sent nothing more within `wait` seconds."""
        if self.buf:
            return False
        try:
            self._fill(wait)
        except socket.timeout:
            return True
        except Closed:
            return True
        return False

    def expect_close(self, what, timeout=3.0):
        """The server closes the connection (EOF or reset) within timeout, sending nothing else."""
        extra = self.buf
        self.buf = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaseFail("%s: the server did not close the connection within %.1fs" % (what, timeout))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                continue
            if not chunk:
                break
            extra += chunk
        if extra:
            raise CaseFail("%s: unexpected bytes before the close: %r" % (what, extra[:200]))


def greet(port, src=None, helo="EHLO client.test", timeout=10.0):
    c = Conn(port, src=src, timeout=timeout)
    c.expect(220, "greeting")
    lines = c.cmd(helo, 250)
    return c, lines


# ---------------------------------------------------------------------------------------
# Server-side observations: RSS and status --json
# ---------------------------------------------------------------------------------------


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    except OSError:
        return None
    return None


class RssWatch:
    """Samples VmRSS every 20 ms between start and stop; peak and baseline in kB."""

    def __init__(self, pid):
        self.pid = pid
        self.base = self.peak = rss_kb(pid) if pid else None
        self._stop = threading.Event()
        self._t = None

    def __enter__(self):
        if self.pid:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            r = rss_kb(self.pid)
            if r is not None and (self.peak is None or r > self.peak):
                self.peak = r
            self._stop.wait(0.02)

    def __exit__(self, *a):
        self._stop.set()
        if self._t:
            self._t.join()
        r = rss_kb(self.pid) if self.pid else None
        if r is not None and (self.peak is None or r > self.peak):
            self.peak = r

    def growth_kb(self):
        if self.base is None or self.peak is None:
            return None
        return self.peak - self.base


def status_json(args, fresh_after=None, timeout=8.0):
    """`mailvault status --json`; with fresh_after, waits for a status written after that time."""
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run([args.mailvault, "--vault", args.vault, "status", "--json"], capture_output=True, text=True)
        try:
            j = json.loads(p.stdout)
        except ValueError:
            j = None
        if j and j.get("running"):
            if fresh_after is None or j.get("updated", 0) > fresh_after:
                return j
        if time.monotonic() > deadline:
            raise CaseFail("no fresh `mailvault status --json` (rc %d): %s %s" % (p.returncode, p.stdout[:200], p.stderr[:200]))
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# Messages and what must be stored
# ---------------------------------------------------------------------------------------


class Expectations:
    def __init__(self):
        self.lock = threading.Lock()
        self.stored = []  # {case, subject, bytes, recipients?}
        self.absent = []  # subjects that must not be in the vault

    def expect_stored(self, case, subject, data, recipients=None):
        with self.lock:
            e = {"case": case, "subject": subject, "bytes": base64.b64encode(data).decode()}
            if recipients is not None:
                e["recipients"] = sorted(r.lower() for r in recipients)
            self.stored.append(e)

    def expect_absent(self, case, subject):
        with self.lock:
            self.absent.append({"case": case, "subject": subject})

    def save(self, path):
        with open(path, "w") as f:
            json.dump({"version": 1, "stored": self.stored, "absent": self.absent}, f, indent=1)
            f.write("\n")


def uniq(case):
    return "hostile-%s-%s" % (case, uuid.uuid4().hex)


def transaction(c, rcpts=("archive@journal.test",), sender="sender@client.test", lmtp=False):
    c.cmd("MAIL FROM:<%s>" % sender, 250)
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, 250)
    c.cmd("DATA", 354)


# ---------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------


class Ctx:
    def __init__(self, args):
        self.args = args
        self.port = args.port
        self.lmtp = args.lmtp_port
        self.exp = Expectations()
        self.limit = None  # max message bytes, from EHLO SIZE
        self.pid = args.pid


def case_ehlo_and_limits(ctx):
    c = Conn(ctx.port)
    greeting = c.expect(220, "greeting")
    lines = c.cmd("EHLO client.test", 250)
    size = [l for l in lines if l[4:].upper().startswith("SIZE")]
    check(size, "EHLO does not announce SIZE: %r" % lines)
    ctx.limit = int(size[0][4:].split()[1])
    for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"):
        check(any(l[4:].upper() == ext for l in lines), "EHLO does not announce %s: %r" % (ext, lines))
    c.cmd("HELO client.test", 250)
    c.cmd("QUIT", 221)
    c.expect_close("after QUIT")
    c.close()
    return "SIZE %d, %s" % (ctx.limit, greeting[0][:40])


def case_command_order(ctx):
    c = Conn(ctx.port)
    c.expect(220, "greeting")
    c.cmd("MAIL FROM:<a@client.test>", 503, "MAIL before EHLO")
    c.cmd("RCPT TO:<b@journal.test>", 503, "RCPT before EHLO")
    c.cmd("DATA", 503, "DATA before EHLO")
    c.cmd("EHLO", 501, "EHLO without a domain")
    c.cmd("EHLO client.test", 250)
    c.cmd("RCPT TO:<b@journal.test>", 503, "RCPT before MAIL")
    c.cmd("DATA", 503, "DATA before MAIL")
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.cmd("DATA", 554, "DATA after MAIL with no RCPT")
    c.cmd("MAIL FROM:<a@client.test>", 503, "nested MAIL (no RCPT yet)")
    c.cmd("RCPT TO:<b@journal.test>", 250)
    c.cmd("MAIL FROM:<c@client.test>", 503, "nested MAIL (after RCPT)")
    c.cmd("XYZZY", 500, "unknown command")
    c.cmd("LHLO client.test", 500, "LHLO on the SMTP port")
    c.cmd("RSET", 250)
    c.cmd("DATA", 503, "DATA after RSET")
    c.cmd("BDAT 10 LAST", 502, "BDAT")
    c.cmd("VRFY someone", 252, "VRFY")
    c.cmd("NOOP", 250)
    c.cmd("QUIT", 221)
    c.expect_close("after QUIT")
    c.close()


def case_parameters(ctx):
    lim = ctx.limit
    c, _ = greet(ctx.port)
    c.cmd("MAIL FROM:<a@client.test> SIZE=%d" % (lim + 1), 552, "SIZE= over the limit")
    c.cmd("MAIL FROM:<a@client.test> XFOO=1", 555, "unknown MAIL parameter")
    c.cmd("MAIL FROM:<a@client.test> SIZE=%d BODY=8BITMIME" % lim, 250, "SIZE= at the limit")
    c.cmd("RCPT TO:<b@journal.test> NOTIFY=NEVER", 555, "RCPT with a parameter")
    c.cmd("RCPT TO:<b@journal.test> ORCPT=rfc822;b@journal.test", 555, "RCPT with ORCPT")
    c.cmd("RCPT TO:<nodomain>", 501, "RCPT without a domain")
    c.cmd("RCPT TO:<b@journal.test>", 250)
    c.cmd("RSET", 250)
    c.cmd("QUIT", 221)
    c.close()


def case_pipelining(ctx):
    subject = uniq("pipelining")
    body = ("Subject: %s\r\n\r\npipelined body\r\n" % subject).encode()
    c, _ = greet(ctx.port)
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@journal.test>\r\nRCPT TO:<c@journal.test>\r\nDATA\r\n")
    for code in (250, 250, 250, 354):
        c.expect(code, "pipelined command")
    c.send(body + b".\r\nNOOP\r\nRSET\r\nQUIT\r\n")
    c.expect(250, "end of pipelined DATA")
    c.expect(250, "NOOP after DATA")
    c.expect(250, "RSET after DATA")
    c.expect(221, "QUIT")
    c.close()
    ctx.exp.expect_stored("pipelining", subject, body.replace(b"\r\n", b"\n"), ["b@journal.test", "c@journal.test"])


def case_line_limit_boundary(ctx):
    m = ctx.args.max_command_line
    c, _ = greet(ctx.port)
    ok_line = b"NOOP " + b"x" * (m - len(b"NOOP ") - 2)  # m bytes with CRLF
    check(len(ok_line) + 2 == m, "test bug")
    c.cmd(ok_line, 250, "a command line of exactly max-command-line (%d) bytes" % m)
    long_line = ok_line + b"x"
    lines = c.cmd(long_line, 500, "a command line of max-command-line + 1 bytes")
    check("5.5.6" in lines[0], "expected 5.5.6 in %r" % lines)
    c.cmd("NOOP", 250, "NOOP after the long line")
    c.cmd("QUIT", 221)
    c.close()


def case_long_line_10mb(ctx):
    c, _ = greet(ctx.port)
    with RssWatch(ctx.pid) as w:
        c.send(b"NOOP " + b"A" * (10 << 20))
        # nothing is answered before the line ends
        check(c.nothing_pending(0.5), "the server answered before the over-long line ended: %r" % c.buf[:100])
        c.send(b"\r\n")
        lines = c.expect(500, "a 10 MB command line", timeout=30)
        check("5.5.6" in lines[0], "expected 5.5.6 in %r" % lines)
        check(c.nothing_pending(0.3), "more than one reply to the 10 MB line: %r" % c.buf[:200])
        c.cmd("NOOP", 250, "NOOP after the 10 MB line")
        # the same, with the next command in the same write
        c.send(b"MAIL FROM:<" + b"B" * (10 << 20) + b">\r\nNOOP\r\n")
        c.expect(500, "a 10 MB MAIL line (pipelined)", timeout=30)
        c.expect(250, "NOOP pipelined after the 10 MB line")
        c.cmd("MAIL FROM:<a@client.test>", 250, "MAIL after the long lines")
        c.cmd("RSET", 250)
        # over-long line made of NULs and invalid UTF-8
        c.send(b"\x00\xff" * (2 << 20) + b"\r\n")
        c.expect(500, "a 4 MB line of NUL/0xFF", timeout=30)
        c.cmd("QUIT", 221)
    c.close()
    g = w.growth_kb()
    if g is not None:
        check(g < 8 * 1024, "serve's RSS grew by %d kB while discarding 24 MB of command lines" % g)
        return "RSS growth %d kB" % g
    return "RSS not watched (no --pid)"


def case_nul_utf8_commands(ctx):
    c, _ = greet(ctx.port)
    c.cmd(b"NO\x00OP", 500, "NUL inside a command")
    c.cmd(b"NOOP \x00", 500, "NUL in a command argument")
    c.cmd(b"NOOP \xff\xfe", 500, "invalid UTF-8 (0xFF 0xFE)")
    c.cmd(b"NOOP \xc0\xaf", 500, "overlong UTF-8 (C0 AF)")
    c.cmd(b"NOOP \xed\xa0\x80", 500, "UTF-8 surrogate (ED A0 80)")
    c.cmd(b"NOOP \xf4\x90\x80\x80", 500, "UTF-8 past U+10FFFF")
    c.cmd(b"NOOP \xe2\x82", 500, "truncated UTF-8 sequence")
    c.cmd(b"MAIL FROM:<caf\xe9@client.test>", 500, "Latin-1 in MAIL FROM")
    c.cmd("NOOP Grüße ✓ 𝄞".encode(), 250, "valid UTF-8 in a command")
    c.cmd("MAIL FROM:<grüße@client.test> SMTPUTF8".encode(), 250, "UTF-8 MAIL FROM with SMTPUTF8")
    c.cmd(b"RCPT TO:<\xff@journal.test>", 500, "invalid UTF-8 in RCPT TO")
    c.cmd("RCPT TO:<名前@journal.test>".encode(), 250, "UTF-8 RCPT TO")
    c.cmd("RSET", 250)
    c.cmd("QUIT", 221)
    c.close()


def case_max_errors(ctx):
    n = ctx.args.max_errors
    c, _ = greet(ctx.port)
    c.cmd("NOOP", 250)
    kinds = [b"XYZZY", b"NO\x00OP", b"NOOP \xff", b"RCPT TO:<x@y.test>"]
    for i in range(n - 1):
        c.cmd(kinds[i % len(kinds)], 503 if kinds[i % len(kinds)].startswith(b"RCPT") else 500, "error %d of %d" % (i + 1, n))
    c.send(b"XYZZY\r\n")
    c.expect(500, "error %d of %d" % (n, n))
    lines = c.expect(421, "after error %d (max-errors)" % n)
    c.expect_close("after the max-errors 421")
    c.close()
    return lines[0][:60]


def filler_message(subject, stored_size):
    """(bytes to send after DATA without the final dot, bytes stored): exactly stored_size stored bytes."""
    head = ("Subject: %s\n\n" % subject).encode()
    stored = bytearray(head)
    line = b"y" * 997 + b"\n"
    while len(stored) + len(line) <= stored_size - 2:
        stored += line
    rest = stored_size - len(stored)  # >= 1: a last line of rest-1 chars + LF
    check(rest >= 1, "test bug")
    stored += b"z" * (rest - 1) + b"\n"
    assert len(stored) == stored_size
    return bytes(stored).replace(b"\n", b"\r\n"), bytes(stored)


def case_size_boundary(ctx):
    lim = ctx.limit
    c, _ = greet(ctx.port)
    s1 = uniq("at-limit")
    wire, stored = filler_message(s1, lim)
    transaction(c)
    c.send(wire + b".\r\n")
    c.expect(250, "a message of exactly max-message-bytes (%d) stored bytes" % lim, timeout=30)
    ctx.exp.expect_stored("size-boundary", s1, stored, ["archive@journal.test"])
    s2 = uniq("over-limit")
    wire, stored = filler_message(s2, lim + 1)
    transaction(c)
    c.send(wire + b".\r\n")
    c.expect(552, "a message of max-message-bytes + 1 stored bytes", timeout=30)
    ctx.exp.expect_absent("size-boundary", s2)
    c.cmd("NOOP", 250)
    c.cmd("QUIT", 221)
    c.close()


def case_endless_data(ctx):
    """More than the size limit in DATA (many lines, then one endless line): read to the end,
    552, nothing buffered past the limit; the session stays usable."""
    lim = ctx.limit
    total = 16 * lim
    c, _ = greet(ctx.port)
    growth = []
    # many lines
    subject = uniq("endless-lines")
    transaction(c)
    line = b"E" * 998 + b"\r\n"
    chunk = line * 256
    with RssWatch(ctx.pid) as w:
        c.send(("Subject: %s\r\n\r\n" % subject).encode())
        sent = 0
        while sent < total:
            c.send(chunk)
            sent += len(chunk)
        check(c.nothing_pending(0.2), "a reply before the end of DATA: %r" % c.buf[:200])
        c.send(b".\r\n")
        lines = c.expect(552, "end of %d MB of DATA lines (limit %d)" % (total >> 20, lim), timeout=60)
    growth.append(("lines", w.growth_kb()))
    ctx.exp.expect_absent("endless-data", subject)
    check("5.3.4" in lines[0], "expected 5.3.4 in %r" % lines)
    c.cmd("NOOP", 250, "NOOP after 552")
    c.cmd("DATA", 503, "DATA right after 552 (the transaction is gone)")
    # one endless line, no line end at all until the terminator
    subject3 = uniq("endless-line")
    transaction(c)
    with RssWatch(ctx.pid) as w2:
        c.send(("Subject: %s\r\n\r\n" % subject3).encode())
        big = b"L" * (1 << 20)
        for _ in range(total >> 20):
            c.send(big)
        c.send(b"\r\n.\r\n")
        c.expect(552, "end of a %d MB single DATA line" % (total >> 20), timeout=60)
    growth.append(("one line", w2.growth_kb()))
    ctx.exp.expect_absent("endless-data", subject3)
    # the connection stays usable
    subject2 = uniq("after-552")
    body = ("Subject: %s\r\n\r\nafter the refused messages\r\n" % subject2).encode()
    transaction(c)
    c.send(body + b".\r\n")
    c.expect(250, "a message after the 552s")
    ctx.exp.expect_stored("endless-data", subject2, body.replace(b"\r\n", b"\n"))
    c.cmd("QUIT", 221)
    c.close()
    if any(g is None for _, g in growth):
        return "RSS not watched (no --pid)"
    # The session holds the message up to the limit in a growing buffer (capacity doubling:
    # up to 2x while it is copied); the slack covers the allocator's and threads' overhead.
    allowed = 2 * lim // 1024 + ctx.args.rss_slack_kb
    text = ", ".join("%s +%d kB" % (n, g) for n, g in growth)
    check(all(g <= allowed for _, g in growth),
          "serve's RSS grew by more than 2x the %d-byte limit + %d kB (%d kB) while reading %d MB of DATA: %s"
          % (lim, ctx.args.rss_slack_kb, allowed, total >> 20, text))
    return "%d MB of DATA twice; RSS growth %s (at most %d kB allowed)" % (total >> 20, text, allowed)


def case_data_binary(ctx):
    subject = uniq("binary")
    body = (("Subject: %s\r\nX-Utf8: Grüße ✓\r\n\r\n" % subject).encode() +
            b"nul:\x00:end\r\n"
            b"nuls:\x00\x00\x00\r\n"
            b"bad-utf8:\xff\xfe\xc0\xaf\xed\xa0\x80\xe2\x82:end\r\n"
            b"latin1:caf\xe9\r\n"
            b"lone-cr:a\rb\r\n"
            b"cr-before-crlf:\r\r\n"
            b"\x7f\x01\x1b[0m\r\n"
            b"\r\n")
    expected = body.replace(b"\r\n", b"\n")
    c, _ = greet(ctx.port)
    transaction(c)
    c.send(body + b".\r\n")
    c.expect(250, "DATA with NUL bytes, invalid UTF-8 and lone CRs")
    c.cmd("QUIT", 221)
    c.close()
    ctx.exp.expect_stored("data-binary", subject, expected)


def case_smuggling(ctx):
    before = status_json(ctx.args, fresh_after=time.time())
    c, _ = greet(ctx.port)
    variants = [
        ("lf-dot-lf", b"\n.\n"),
        ("lf-dot-crlf", b"\n.\r\n"),
        ("crlf-dot-lf", b"\r\n.\n"),
        ("cr-dot-crlf", b"\r.\r\n"),
        ("cr-dot-cr", b"\r.\r"),
    ]
    stored_n = 0
    for name, sep in variants:
        subject = uniq("smuggle-" + name)
        fake = uniq("smuggled-" + name)
        head = ("Subject: %s\r\n\r\nbefore the fake end" % subject).encode()
        tail = ("MAIL FROM:<evil@smuggle.test>\r\nRCPT TO:<victim@smuggle.test>\r\nDATA\r\n"
                "Subject: %s\r\n\r\nsmuggled message\r\n" % fake).encode()
        payload = head + sep + tail
        transaction(c)
        c.send(payload + b".\r\n")
        c.expect(250, "%s: the end of the real message" % name)
        stored_n += 1
        # nothing else: no reply to a smuggled MAIL/RCPT/DATA
        c.send(b"NOOP\r\n")
        c.expect(250, "%s: NOOP after the message" % name)
        check(c.nothing_pending(0.3), "%s: extra replies after the message (a smuggled command ran?): %r"
              % (name, c.buf[:200]))
        ctx.exp.expect_stored("smuggling", subject, payload.replace(b"\r\n", b"\n"))
        ctx.exp.expect_absent("smuggling", fake)
    c.cmd("QUIT", 221)
    c.close()
    after = status_json(ctx.args, fresh_after=time.time())
    delta = after["messages"] - before["messages"]
    check(delta == stored_n, "status --json messages went from %d to %d (+%d); %d messages were sent"
          % (before["messages"], after["messages"], delta, stored_n))
    return "%d variants, messages +%d" % (len(variants), delta)


def case_dot_stuffing(ctx):
    subject = uniq("dots")
    lines = [b"..leading dot", b"...", b"..", b"....four", b". space", b".unstuffed",
             b"middle . dot", b"end.", b"..\t.tab"]
    expected_lines = [b".leading dot", b"..", b".", b"...four", b" space", b"unstuffed",
                      b"middle . dot", b"end.", b".\t.tab"]
    head = ("Subject: %s\r\n\r\n" % subject).encode()
    body = head + b"\r\n".join(lines) + b"\r\n"
    expected = head.replace(b"\r\n", b"\n") + b"\n".join(expected_lines) + b"\n"
    c, _ = greet(ctx.port)
    transaction(c)
    c.send(body + b".\r\n")
    c.expect(250, "dot-stuffed message")
    # The same line ".\rX" (a stuffed dot before a lone CR) split over TCP writes. The line is
    # not the terminator, so its first dot is a stuffing dot wherever the writes are cut.
    for name, parts in (("whole", [b".\rX-dot-cr\r\n"]),
                        ("split", [b".\rX-dot", b"-cr\r\n"]),
                        ("split3", [b".", b"\rX-dot-cr", b"\r\n"])):
        s = uniq("dot-cr-" + name)
        h = ("Subject: %s\r\n\r\n" % s).encode()
        transaction(c)
        c.send(h)
        time.sleep(0.15)
        for p in parts:
            c.send(p)
            time.sleep(0.15)
        c.send(b".\r\n")
        c.expect(250, "dot-cr-%s" % name)
        ctx.exp.expect_stored("dot-stuffing-" + name, s, h.replace(b"\r\n", b"\n") + b"\rX-dot-cr\n")
    # the terminator itself split over writes
    s = uniq("split-terminator")
    h = ("Subject: %s\r\n\r\nbody\r\n" % s).encode()
    transaction(c)
    c.send(h)
    for p in (b"\r", b"\n", b".", b"\r", b"\n"):
        time.sleep(0.1)
        c.send(p)
    c.expect(250, "terminator split into single bytes")
    ctx.exp.expect_stored("dot-stuffing-split-terminator", s, h.replace(b"\r\n", b"\n") + b"\n")
    c.cmd("QUIT", 221)
    c.close()
    ctx.exp.expect_stored("dot-stuffing", subject, expected)


def case_bare_lf(ctx):
    subject = uniq("bare-lf")
    body = (("Subject: %s\nX-Bare: header ended by LF\r\n\r\n" % subject).encode() +
            b"line1\nline2\n\nline4 after empty\r\nmixed\n..dotted after LF\r\n.\n"
            b"cr only\r\r\nend\r\n")
    expected = (("Subject: %s\nX-Bare: header ended by LF\n\n" % subject).encode() +
                b"line1\nline2\n\nline4 after empty\nmixed\n.dotted after LF\n.\ncr only\r\nend\n")
    c, _ = greet(ctx.port)
    transaction(c)
    c.send(body + b".\r\n")
    c.expect(250, "message with bare-LF lines")
    c.cmd("QUIT", 221)
    c.close()
    ctx.exp.expect_stored("bare-lf", subject, expected)


def case_too_many_recipients(ctx):
    n = ctx.args.max_recipients
    subject = uniq("recipients")
    c, _ = greet(ctx.port)
    c.cmd("MAIL FROM:<a@client.test>", 250)
    rcpts = ["r%03d@journal.test" % i for i in range(n)]
    c.send(b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts))
    for i in range(n):
        c.expect(250, "RCPT %d of %d" % (i + 1, n))
    c.cmd("RCPT TO:<extra1@journal.test>", 452, "RCPT %d (over max-recipients)" % (n + 1))
    c.cmd("RCPT TO:<extra2@journal.test>", 452, "RCPT %d (over max-recipients)" % (n + 2))
    c.cmd("DATA", 354)
    body = ("Subject: %s\r\n\r\nto %d recipients\r\n" % (subject, n)).encode()
    c.send(body + b".\r\n")
    c.expect(250, "DATA after 452s")
    # 452 is not a protocol error: many more do not close the session
    c.cmd("MAIL FROM:<a@client.test>", 250)
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r.replace("@", "b@"), 250)
    for i in range(ctx.args.max_errors + 5):
        c.cmd("RCPT TO:<more%d@journal.test>" % i, 452, "452 number %d" % (i + 1))
    c.cmd("RSET", 250)
    c.cmd("QUIT", 221)
    c.close()
    ctx.exp.expect_stored("too-many-recipients", subject, body.replace(b"\r\n", b"\n"), rcpts)


def case_lmtp(ctx):
    c = Conn(ctx.lmtp)
    g = c.expect(220, "LMTP greeting")
    c.cmd("EHLO client.test", 500, "EHLO on the LMTP port")
    c.cmd("HELO client.test", 500, "HELO on the LMTP port")
    c.cmd("MAIL FROM:<a@client.test>", 503, "MAIL before LHLO")
    c.cmd("LHLO client.test", 250)
    subject = uniq("lmtp")
    rcpts = ["alice@example.test", "bob@example.test", "carol@example.test"]
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.cmd("RCPT TO:<%s>" % rcpts[0], 250)
    c.cmd("RCPT TO:<nodomain>", 501, "a refused recipient")
    c.cmd("RCPT TO:<%s>" % rcpts[1], 250)
    c.cmd("RCPT TO:<%s> NOTIFY=NEVER" % "dave@example.test", 555, "a refused recipient (parameter)")
    c.cmd("RCPT TO:<%s>" % rcpts[2], 250)
    c.cmd("DATA", 354)
    body = ("Subject: %s\r\n\r\nLMTP, three recipients\r\n" % subject).encode()
    c.send(body + b".\r\nNOOP\r\n")
    for i in range(3):
        c.expect(250, "LMTP reply %d of 3 (one per accepted recipient)" % (i + 1))
    c.expect(250, "NOOP after the 3 LMTP replies")
    check(c.nothing_pending(0.3), "more LMTP replies than accepted recipients: %r" % c.buf[:200])
    ctx.exp.expect_stored("lmtp", subject, body.replace(b"\r\n", b"\n"), rcpts)
    # one recipient, pipelined
    s2 = uniq("lmtp-one")
    b2 = ("Subject: %s\r\n\r\none\r\n" % s2).encode()
    c.send(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<one@example.test>\r\nDATA\r\n")
    c.expect(250, "MAIL")
    c.expect(250, "RCPT")
    c.expect(354, "DATA")
    c.send(b2 + b".\r\nNOOP\r\n")
    c.expect(250, "LMTP reply for the single recipient")
    c.expect(250, "NOOP")
    ctx.exp.expect_stored("lmtp", s2, b2.replace(b"\r\n", b"\n"), ["one@example.test"])
    # DATA with no accepted recipient
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.send(b"DATA\r\n")
    code, lines = c.reply()
    if code != 503:
        note("lmtp", "DATA with no accepted recipient answered %r; RFC 2033 4.2 asks for 503" % lines[0])
    check(code in (503, 554), "DATA with no recipient: expected 503 or 554, got %r" % lines)
    c.cmd("RSET", 250)
    c.cmd("QUIT", 221)
    c.close()
    return g[0][:40]


def case_lmtp_oversize(ctx):
    """An LMTP message over the limit: RFC 2033 4.2 wants one reply per accepted recipient."""
    lim = ctx.limit
    c = Conn(ctx.lmtp)
    c.expect(220, "LMTP greeting")
    c.cmd("LHLO client.test", 250)
    subject = uniq("lmtp-oversize")
    c.cmd("MAIL FROM:<a@client.test>", 250)
    for r in ("alice@example.test", "bob@example.test", "carol@example.test"):
        c.cmd("RCPT TO:<%s>" % r, 250)
    c.cmd("DATA", 354)
    wire, _ = filler_message(subject, lim + 1000)
    c.send(wire + b".\r\n")
    got = []
    t0 = time.monotonic()
    try:
        for i in range(3):
            code, lines = c.reply(timeout=5)
            got.append("%s (after %.1fs)" % (lines[0][:60], time.monotonic() - t0))
    except socket.timeout:
        got.append("(nothing more within 5 s)")
    except Closed:
        got.append("(connection closed after %.1fs)" % (time.monotonic() - t0))
    ctx.exp.expect_absent("lmtp-oversize", subject)
    check(len(got) == 3 and all(g.startswith("552") for g in got),
          "3 recipients, message over the limit: expected three 552 replies (one per accepted recipient, "
          "RFC 2033 4.2), got %r" % got)
    c.cmd("NOOP", 250)
    c.close()


def case_not_allowed(ctx):
    try:
        c = Conn(ctx.port, src=SRC_REFUSED)
    except OSError as e:
        raise CaseFail("cannot connect from %s: %s" % (SRC_REFUSED, e))
    try:
        code, lines = c.reply()
    except Closed:
        raise CaseFail("closed without a reply (expected 554)")
    check(code == 554, "connection from %s (outside allow = 127.0.0.0/25): expected 554, got %r "
          "(is serve running with this test's config? see --print-config)" % (SRC_REFUSED, lines))
    c.expect_close("after the 554")
    c.close()
    return lines[0][:70]


def _open_many(port, n, src, deadline):
    """Opens n connections from src; returns them once each has its first reply line (or EOF)."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((src, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    return socks


def _read_until(socks, done_fn, deadline, bufs=None):
    """Reads from every socket until done_fn(buf, eof) is true for each; returns (bufs, eofs)."""
    sel = selectors.DefaultSelector()
    bufs = bufs if bufs is not None else {s: b"" for s in socks}
    eofs = {s: False for s in socks}
    pending = set()
    for s in socks:
        if not done_fn(bufs[s], False):
            sel.register(s, selectors.EVENT_READ)
            pending.add(s)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(min(left, 1.0)):
            s = key.fileobj
            try:
                d = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                d = b""
            except BlockingIOError:
                continue
            if d:
                bufs[s] += d
            else:
                eofs[s] = True
            if eofs[s] or done_fn(bufs[s], False):
                sel.unregister(s)
                pending.discard(s)
    sel.close()
    return bufs, eofs, pending


def _has_line(b, eof=False):
    return b"\n" in b


def _ehlo_done(b, eof=False):
    # greeting line + a final "250 " line of the EHLO reply
    lines = b.split(b"\r\n")
    return any(l.startswith(b"250 ") for l in lines[1:])


def case_concurrent(ctx):
    a = ctx.args
    n = a.connections
    per_ip, max_conn = a.max_connections_per_ip, a.max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 2 * 150 + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    if ctx.pid:
        try:
            with open("/proc/%d/limits" % ctx.pid) as f:
                nofile = [int(l.split()[3]) for l in f if l.startswith("Max open files")][0]
            if nofile < max_conn + 64:
                note("concurrent", "serve's open-file limit is %d, below max-connections %d + its own files: "
                     "connections may wait unanswered (raise ulimit -n for serve)" % (nofile, max_conn))
        except (OSError, IndexError, ValueError):
            pass
    deadline = time.monotonic() + 60
    all_socks = []
    t0 = time.monotonic()
    try:
        with RssWatch(ctx.pid) as w:
            socks = _open_many(ctx.port, n, SRC_MAIN, deadline)
            all_socks += socks
            bufs, eofs, pending = _read_until(socks, _has_line, deadline)
            bad = [bufs[s][:60] for s in socks if not bufs[s].startswith(b"220 ")]
            check(not pending, "%d of %d connections got no greeting within 60 s" % (len(pending), n))
            check(not bad, "%d of %d connections were not greeted 220: %r" % (len(bad), n, bad[:3]))
            for s in socks:
                s.sendall(b"EHLO c%d.client.test\r\n" % s.fileno())
            bufs, eofs, pending = _read_until(socks, _ehlo_done, deadline, bufs)
            bad = [bufs[s][-80:] for s in socks if not _ehlo_done(bufs[s])]
            check(not bad, "%d of %d connections did not complete EHLO: %r" % (len(bad), n, bad[:3]))
            t_ready = time.monotonic() - t0
            rss_all = rss_kb(ctx.pid) if ctx.pid else None
            st = status_json(a, fresh_after=time.time())
            sessions = st.get("sessions")
            check(sessions is None or sessions >= n, "status --json says %s sessions with %d open" % (sessions, n))

            # Per-IP limit: more from the same address than max-connections-per-ip.
            extra1 = _open_many(ctx.port, per_ip - n + 50, SRC_MAIN, deadline)
            all_socks += extra1
            b1, e1, p1 = _read_until(extra1, _has_line, deadline)
            acc1 = [s for s in extra1 if b1[s].startswith(b"220 ")]
            ref1 = [s for s in extra1 if b1[s].startswith(b"421 ")]
            other1 = [b1[s][:60] for s in extra1 if s not in acc1 and s not in ref1]
            check(not other1, "beyond the per-IP limit: replies other than 220/421: %r" % other1[:3])
            check(n + len(acc1) <= per_ip, "%d connections from %s were admitted; max-connections-per-ip is %d"
                  % (n + len(acc1), SRC_MAIN, per_ip))
            check(ref1, "none of %d connections beyond max-connections-per-ip %d was refused" % (len(extra1), per_ip))
            check(all(b"from " + SRC_MAIN.encode() in b1[s] for s in ref1),
                  "the per-IP refusal does not name the address: %r" % b1[ref1[0]][:80])
            # refused connections are closed by the server
            _, e1c, p1c = _read_until(ref1, lambda b, e=False: False, time.monotonic() + 3, {s: b1[s] for s in ref1})
            not_closed = [s for s in ref1 if not e1c[s]]
            check(not not_closed, "%d connections refused with 421 were not closed" % len(not_closed))

            # Total limit: more from another address than max-connections allows in all.
            live = n + len(acc1)
            extra2 = _open_many(ctx.port, max_conn - live + 50, SRC_OTHER, deadline)
            all_socks += extra2
            b2, e2, p2 = _read_until(extra2, _has_line, deadline)
            acc2 = [s for s in extra2 if b2[s].startswith(b"220 ")]
            ref2 = [s for s in extra2 if b2[s].startswith(b"421 ")]
            other2 = [b2[s][:60] for s in extra2 if s not in acc2 and s not in ref2]
            check(not other2, "beyond max-connections: replies other than 220/421: %r" % other2[:3])
            check(live + len(acc2) <= max_conn, "%d connections admitted in all; max-connections is %d"
                  % (live + len(acc2), max_conn))
            check(ref2, "none of %d connections beyond max-connections %d was refused" % (len(extra2), max_conn))
            rss_peak = rss_kb(ctx.pid) if ctx.pid else None
            # every admitted connection still works
            admitted = socks + acc1 + acc2
            for s in admitted:
                s.sendall(b"NOOP\r\n")
            bufs2 = {s: b"" for s in admitted}
            bq, eq, pq = _read_until(admitted, lambda b, e=False: b"250 " in b, time.monotonic() + 30, bufs2)
            bad = [bq[s][:60] for s in admitted if b"250 " not in bq[s]]
            check(not bad, "%d of %d admitted connections did not answer NOOP: %r" % (len(bad), len(admitted), bad[:3]))
            for s in admitted:
                s.sendall(b"QUIT\r\n")
            _read_until(admitted, lambda b, e=False: False, time.monotonic() + 10, {s: b"" for s in admitted})
    finally:
        for s in all_socks:
            s.close()
    detail = "%d sessions ready in %.1fs" % (n, t_ready)
    if ctx.pid:
        limit_kb = a.rss_limit_mb * 1024
        check(w.peak <= limit_kb, "serve's VmRSS reached %.1f MB with %d connections (limit %d MB)"
              % (w.peak / 1024, n, a.rss_limit_mb))
        detail += "; VmRSS %.1f MB before, %.1f MB with %d sessions, peak %.1f MB with %d (limit %d MB)" % (
            w.base / 1024, rss_all / 1024, n, w.peak / 1024, n + len(acc1) + len(acc2), a.rss_limit_mb)
    detail += "; per-IP: %d admitted, %d refused 421; total: %d admitted, %d refused 421" % (
        len(acc1), len(ref1), len(acc2), len(ref2))
    return detail


def case_no_read_flood(ctx):
    """A client that pipelines commands and never reads the replies: once both directions are
    full the server cannot write, and must drop the client at the idle timeout (no 421 can
    be sent), keeping no more than its buffers."""
    idle = ctx.args.idle_timeout
    c, _ = greet(ctx.port)
    s = c.sock
    s.setblocking(False)
    blob = b"NOOP\r\n" * 10000
    sent = 0
    t0 = time.monotonic()
    last_progress = t0
    with RssWatch(ctx.pid) as w:
        while time.monotonic() - last_progress < 0.5:
            check(time.monotonic() - t0 < 60, "the server kept reading NOOPs for 60 s without its replies being read")
            try:
                sent += s.send(blob)
                last_progress = time.monotonic()
            except BlockingIOError:
                time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                break
        stalled = time.monotonic()
        # read nothing for longer than the idle timeout, then see whether the server is gone
        time.sleep(idle + 2.5)
        s.setblocking(True)
        got, closed_after, tail = 0, None, b""
        t1 = time.monotonic()
        while time.monotonic() - t1 < idle + 5:
            s.settimeout(1.0)
            try:
                d = s.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                d = b""
            if not d:
                closed_after = time.monotonic() - t1
                break
            got += len(d)
            tail = (tail + d)[-200:]
    c.close()
    check(closed_after is not None, "the connection was still open %.0f s after the client stopped reading"
          % (time.monotonic() - stalled))
    check(closed_after < 1.0 and b"421" not in tail,
          "the server had not dropped the non-reading client %.1f s after it stalled (idle-timeout %d s): "
          "it closed only %.1f s after the client began reading again (last bytes %r)"
          % (idle + 2.5, idle, closed_after, tail[-60:]))
    g = w.growth_kb()
    if g is not None:
        check(g < 16 * 1024, "serve's RSS grew by %d kB for a client that does not read" % g)
    return "sent %d kB of NOOPs before both directions were full; dropped while stalled (read back %d kB)%s" % (
        sent >> 10, got >> 10, "" if g is None else ", RSS growth %d kB" % g)


# --- background cases (timeouts), each on its own connection from SRC_BG ---


def case_idle_timeout(ctx, in_data):
    idle = ctx.args.idle_timeout
    c, _ = greet(ctx.port, src=SRC_BG)
    if in_data:
        transaction(c)
        c.send(b"Subject: idle in DATA\r\n\r\npartial line without end")
    else:
        c.send(b"NO")  # half a command
    t0 = time.monotonic()
    lines = c.expect(421, "idle timeout", timeout=idle + 5)
    t = time.monotonic() - t0
    check("4.4.2" in lines[0], "expected 4.4.2 in %r" % lines)
    check(idle - 0.3 <= t <= idle + 2.0, "421 came after %.1fs; idle-timeout is %ds" % (t, idle))
    c.expect_close("after the idle 421")
    c.close()
    return "421 after %.1fs" % t


def case_slow_client(ctx):
    """One byte every 0.5 s keeps the session alive past the idle timeout; then silence cuts it."""
    idle = ctx.args.idle_timeout
    c, _ = greet(ctx.port, src=SRC_BG)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 2 * idle + 0.5:
        for b in b"NOOP\r\n":
            c.send(bytes([b]))
            time.sleep(0.5)
        c.expect(250, "NOOP sent one byte per 0.5 s", timeout=1)
        n += 1
    alive = time.monotonic() - t0
    c.send(b"N")
    t1 = time.monotonic()
    c.expect(421, "silence after the slow commands", timeout=idle + 5)
    t = time.monotonic() - t1
    check(idle - 0.3 <= t <= idle + 2.0, "421 came %.1fs after the last byte; idle-timeout is %ds" % (t, idle))
    c.expect_close("after the idle 421")
    c.close()
    return "%d slow NOOPs over %.1fs answered; cut %.1fs after the last byte" % (n, alive, t)


def case_session_timeout(ctx):
    """Slowloris in DATA: a byte every 0.5 s is cut at session-timeout."""
    st = ctx.args.session_timeout
    t0 = time.monotonic()
    c, _ = greet(ctx.port, src=SRC_BG)
    transaction(c)
    c.sock.settimeout(0.5)
    reply = None
    while time.monotonic() - t0 < st + 10:
        try:
            c.send(b"x")
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            reply = c.line(timeout=0.5)
            break
        except socket.timeout:
            continue
        except Closed:
            break
    t = time.monotonic() - t0
    c.close()
    check(reply is not None, "no reply to a slowloris DATA after %.1fs (session-timeout %ds)" % (t, st))
    check(reply.startswith(b"421"), "slowloris: expected 421, got %r" % reply)
    check(st - 0.5 <= t <= st + 2.5, "421 came after %.1fs; session-timeout is %ds" % (t, st))
    return "%s after %.1fs" % (reply[:45].decode(errors="replace"), t)


# ---------------------------------------------------------------------------------------
# Phase 2: what is stored
# ---------------------------------------------------------------------------------------


def mv(args, *cmd, binary=False):
    argv = [args.mailvault, "--vault", args.vault]
    if args.key_file:
        argv += ["--key-file", args.key_file]
    p = subprocess.run(argv + list(cmd), capture_output=True)
    return p.returncode, (p.stdout if binary else p.stdout.decode("utf-8", "replace")), p.stderr.decode("utf-8", "replace")


def verify_stored(args):
    with open(args.verify_stored) as f:
        state = json.load(f)
    rc, out, err = mv(args, "list", "--json")
    if rc != 0:
        emit("FAIL list: mailvault list --json exit %d: %s" % (rc, err.strip()[:300]))
        return 1
    listing = json.loads(out)
    by_subject = {}
    for m in listing:
        by_subject.setdefault(m.get("subject", ""), []).append(m)
    failures = 0
    for e in state["stored"]:
        name = "stored:%s %s" % (e["case"], e["subject"][:40])
        want = base64.b64decode(e["bytes"])
        found = by_subject.get(e["subject"], [])
        if len(found) != 1:
            emit("FAIL %s: %d messages with this subject in the vault (expected 1)" % (name, len(found)))
            failures += 1
            continue
        mid = found[0]["id"]
        rc, got, err = mv(args, "cat", mid, binary=True)
        if rc != 0:
            emit("FAIL %s: mailvault cat %s exit %d: %s" % (name, mid[:16], rc, err.strip()[:200]))
            failures += 1
            continue
        if got != want:
            i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
            emit("FAIL %s: stored bytes differ (id %s; %d bytes stored, %d expected; first difference at byte %d: "
                 "stored %r, expected %r)" % (name, mid[:16], len(got), len(want), i, got[max(0, i - 20):i + 20],
                                               want[max(0, i - 20):i + 20]))
            failures += 1
            continue
        if "recipients" in e:
            rc, out, err = mv(args, "show", mid, "--json")
            if rc != 0:
                emit("FAIL %s: mailvault show exit %d: %s" % (name, rc, err.strip()[:200]))
                failures += 1
                continue
            envs = json.loads(out).get("envelopes", [])
            recips = sorted({r for env in envs for r in env.get("recipients", [])})
            if recips != e["recipients"]:
                emit("FAIL %s: envelope recipients %r, expected %r" % (name, recips[:10], e["recipients"][:10]))
                failures += 1
                continue
        emit("ok %s (%d bytes%s)" % (name, len(want), ", %d recipients" % len(e["recipients"]) if "recipients" in e else ""))
    subjects = list(by_subject)
    for e in state["absent"]:
        name = "absent:%s %s" % (e["case"], e["subject"][:40])
        hits = [s for s in subjects if e["subject"] in s]
        if hits:
            emit("FAIL %s: stored although it must not be (%d messages)" % (name, len(hits)))
            failures += 1
        else:
            emit("ok %s" % name)
    rc, out, err = mv(args, "verify")
    if rc != 0:
        emit("FAIL verify: mailvault verify exit %d: %s %s" % (rc, out.strip()[-300:], err.strip()[-300:]))
        failures += 1
    else:
        emit("ok verify (%s)" % (out.strip().splitlines() or [""])[-1][:100])
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--port", type=int, help="serve's SMTP port on 127.0.0.1")
    ap.add_argument("--lmtp-port", type=int, help="serve's LMTP port on 127.0.0.1 (LMTP cases skipped without it)")
    ap.add_argument("--vault", help="the vault serve runs on (for status --json; phase 2: to read)")
    ap.add_argument("--key-file", help="the key file (phase 2)")
    ap.add_argument("--mailvault", default=os.environ.get("MAILVAULT", DEFAULT_BIN), help="the mailvault binary")
    ap.add_argument("--pid", type=int, help="serve's pid (default: from status --json)")
    ap.add_argument("--state", help="phase 1: write what must be stored to this file")
    ap.add_argument("--verify-stored", metavar="STATE", help="phase 2 (serve stopped): check the vault against STATE")
    ap.add_argument("--print-config", action="store_true", help="print the config serve must run with, and exit")
    ap.add_argument("--only", help="comma-separated case names to run (phase 1)")
    ap.add_argument("--skip", help="comma-separated case names to skip (phase 1)")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--rss-limit-mb", type=int, default=500, help="serve's VmRSS limit with 1,000+ connections")
    ap.add_argument("--rss-slack-kb", type=int, default=1024,
                    help="RSS growth allowed beyond 2x the size limit while an oversized message is read")
    ap.add_argument("--max-command-line", type=int, default=2048)
    ap.add_argument("--max-errors", type=int, default=20)
    ap.add_argument("--max-recipients", type=int, default=50)
    ap.add_argument("--idle-timeout", type=int, default=3)
    ap.add_argument("--session-timeout", type=int, default=15)
    ap.add_argument("--max-connections", type=int, default=1200)
    ap.add_argument("--max-connections-per-ip", type=int, default=1100)
    args = ap.parse_args()

    if args.print_config:
        sys.stdout.write(CONFIG_TEXT)
        return 0
    if args.verify_stored:
        if not args.vault or not args.key_file:
            ap.error("--verify-stored needs --vault and --key-file")
        return verify_stored(args)
    if not args.port or not args.vault or not args.state:
        ap.error("phase 1 needs --port, --vault and --state (phase 2: --verify-stored STATE)")

    ctx = Ctx(args)
    if not ctx.pid:
        try:
            ctx.pid = status_json(args)["pid"]
        except CaseFail as e:
            emit("note rss: %s; RSS is not watched" % e)
    if ctx.pid and rss_kb(ctx.pid) is None:
        emit("note rss: cannot read /proc/%d/status; RSS is not watched" % ctx.pid)
        ctx.pid = None

    if not run_case("ehlo", case_ehlo_and_limits, ctx):
        emit("FAIL setup: cannot read the size limit from EHLO; stopping")
        return 1

    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()

    def wanted(name):
        return (only is None or name in only) and name not in skip

    background = [
        ("session-timeout", case_session_timeout, ()),
        ("idle-timeout", case_idle_timeout, (False,)),
        ("idle-timeout-data", case_idle_timeout, (True,)),
        ("slow-client", case_slow_client, ()),
    ]
    threads = []
    for name, fn, extra in background:
        if wanted(name):
            t = threading.Thread(target=run_case, args=(name, fn, ctx) + extra, daemon=True)
            t.start()
            threads.append(t)

    cases = [
        ("command-order", case_command_order),
        ("parameters", case_parameters),
        ("pipelining", case_pipelining),
        ("line-limit-boundary", case_line_limit_boundary),
        ("long-line-10mb", case_long_line_10mb),
        ("nul-utf8-commands", case_nul_utf8_commands),
        ("max-errors", case_max_errors),
        ("size-boundary", case_size_boundary),
        ("endless-data", case_endless_data),
        ("data-binary", case_data_binary),
        ("smuggling", case_smuggling),
        ("dot-stuffing", case_dot_stuffing),
        ("bare-lf", case_bare_lf),
        ("too-many-recipients", case_too_many_recipients),
        ("not-allowed", case_not_allowed),
        ("no-read-flood", case_no_read_flood),
        ("concurrent", case_concurrent),
    ]
    if args.lmtp_port:
        cases += [("lmtp", case_lmtp), ("lmtp-oversize", case_lmtp_oversize)]
    elif only is None:
        emit("note lmtp: no --lmtp-port; LMTP cases skipped")
    for name, fn in cases:
        if wanted(name):
            run_case(name, fn, ctx)
    for t in threads:
        t.join()
    ctx.exp.save(args.state)
    emit("%s: %d failure(s); %d messages to check with --verify-stored %s" % (
        "FAILED" if _failures else "passed", _failures, len(ctx.exp.stored), args.state))
    return 1 if _failures else 0


if __name__ == "__main__":
    sys.exit(main())
