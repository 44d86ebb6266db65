#!/usr/bin/env python3
"""Make a large Maildir for the index scale benchmark from a real one.

usage: bench/make_scale_corpus.py [--batches B] [--seed S] SRC_MAILDIR DEST_MAILDIR N

Writes N messages. Message i is a copy of source message i mod len(sources) (sources in
byte-sorted path order: every file in any cur/ or new/ below SRC_MAILDIR), byte for byte,
except for three header fields:

  Message-ID  <scale.<i>.<8 hex>@mailvault-bench.example>, unique
  Date        a random instant between 2019-01-01 and 2023-12-31 (five years), in one of a few
              time zones, RFC 5322 format
  To          1 to 3 random users of a few example domains (RFC 2606 names), sometimes with a
              display name

The header is edited at the byte level: the first occurrence of each of these fields (with its
continuation lines) is replaced in place, later occurrences are dropped, a missing field is
added at the end of the header. Nothing is decoded or re-serialised, so broken mail stays as
broken as it was; the body (everything from the first empty line on) is untouched. Line
endings follow the message (CRLF if its header has any, else LF).

--batches B (default 1): with 1, DEST_MAILDIR is the Maildir. With B > 1, DEST_MAILDIR gets
B Maildirs batch-01 .. batch-B (zero-padded) of N/B messages each (the first N mod B get one
more), in message order, for importing in B steps.

--seed S (default 1): the output is a function of the sources, N, B and S.

DEST_MAILDIR must not exist or be empty. Progress and a summary go to stderr.
"""

import argparse
import datetime as dt
import email.utils
import os
import random
import re
import sys

DOMAINS = [b"example.com", b"example.org", b"example.net", b"lists.example.org",
           b"mail.example.com"]
N_USERS = 5000
FIRST = [b"Alice", b"Bob", b"Carol", b"Dave", b"Erin", b"Frank", b"Grace", b"Heidi",
         b"Ivan", b"Judy", b"Mallory", b"Niaj", b"Olivia", b"Peggy", b"Rupert", b"Sybil",
         b"Trent", b"Victor", b"Walter", b"Yolanda"]
LAST = [b"Smith", b"Jones", b"Murphy", b"Kelly", b"Novak", b"Garcia", b"Schmidt", b"Rossi",
        b"Dubois", b"Tanaka", b"Silva", b"Nowak", b"Larsen", b"Walsh", b"Byrne", b"Moreau"]
ZONES = [0, 0, 60, 120, -240, -300, -420, 330, 540]  # minutes east of UTC
DATE_FROM = dt.datetime(2019, 1, 1, tzinfo=dt.timezone.utc)
DATE_SPAN = int((dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) - DATE_FROM).total_seconds())

REPLACED = (b"message-id", b"date", b"to")
HEADER_END = re.compile(rb"\r?\n\r?\n")
LINE = re.compile(rb"[^\n]*\n|[^\n]+$")


def die(msg, status=2):
    print(f"make_scale_corpus: error: {msg}", file=sys.stderr)
    sys.exit(status)


def list_sources(src):
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != ".notmuch")
        if os.path.basename(root) in ("cur", "new"):
            found.extend(os.path.join(root, f) for f in files
                         if os.path.isfile(os.path.join(root, f)))
    return sorted(found, key=os.fsencode)


def template(data):
    """Split a message into pieces: literal bytes, and the int k (index into REPLACED) where
    the new field REPLACED[k] goes. Returns (pieces, eol)."""
    m = HEADER_END.search(data)
    if m:
        first_nl = 2 if data[m.start():m.start() + 1] == b"\r" else 1
        cut = m.start() + first_nl
        header, rest = data[:cut], data[cut:]
    else:  # no body: all header
        header, rest = data, b""
    eol = b"\r\n" if b"\r\n" in header else b"\n"
    if header and not header.endswith(b"\n"):
        header += eol
    # group lines into fields: a field is a line not starting with blank, plus continuations
    fields = []
    for line in LINE.findall(header):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    pieces, seen, literal = [], set(), []
    for f in fields:
        name = f[0].split(b":", 1)[0].strip().lower() if b":" in f[0] else None
        if name in REPLACED:
            if name not in seen:
                seen.add(name)
                pieces.append(b"".join(literal))
                literal = []
                pieces.append(REPLACED.index(name))
            continue
        literal.extend(f)
    for name in REPLACED:
        if name not in seen:
            pieces.append(b"".join(literal))
            literal = []
            pieces.append(REPLACED.index(name))
    literal.append(rest)
    pieces.append(b"".join(literal))
    return pieces, eol


def main():
    ap = argparse.ArgumentParser(
        description="Make a large Maildir for the scale benchmark from a real one.")
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("n", type=int)
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.n < 1:
        die("N must be at least 1")
    if a.batches < 1 or a.batches > a.n:
        die("--batches must be between 1 and N")
    if os.path.exists(a.dest) and (not os.path.isdir(a.dest) or os.listdir(a.dest)):
        die(f"destination exists and is not an empty directory: {a.dest}")

    sources = list_sources(a.src)
    if not sources:
        die(f"no messages (files in cur/ or new/) below {a.src}")
    templates = []
    for p in sources:
        with open(p, "rb") as f:
            templates.append(template(f.read()))

    rnd = random.Random(a.seed)
    users = []
    for u in range(N_USERS):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        local = b"%s.%s%d" % (first.lower(), last.lower(), u)
        addr = local + b"@" + rnd.choice(DOMAINS)
        users.append((first + b" " + last, addr))

    def new_to():
        out = []
        for _ in range(rnd.choice((1, 1, 1, 2, 3))):
            name, addr = rnd.choice(users)
            out.append(b"%s <%s>" % (name, addr) if rnd.random() < 0.5 else addr)
        return b", ".join(out)

    def new_date():
        t = DATE_FROM + dt.timedelta(seconds=rnd.randrange(DATE_SPAN))
        tz = dt.timezone(dt.timedelta(minutes=rnd.choice(ZONES)))
        return email.utils.format_datetime(t.astimezone(tz)).encode()

    per, extra = divmod(a.n, a.batches)
    os.makedirs(a.dest, exist_ok=True)
    total_bytes = 0
    i = 0
    for b in range(a.batches):
        if a.batches == 1:
            md = a.dest
        else:
            md = os.path.join(a.dest, "batch-%0*d" % (max(2, len(str(a.batches))), b + 1))
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        cur = os.path.join(md, "cur")
        for _ in range(per + (1 if b < extra else 0)):
            pieces, eol = templates[i % len(templates)]
            values = (  # in REPLACED order
                b"Message-ID: <scale.%d.%08x@mailvault-bench.example>" % (
                    i, rnd.getrandbits(32)),
                b"Date: " + new_date(),
                b"To: " + new_to(),
            )
            data = b"".join(values[p] + eol if isinstance(p, int) else p for p in pieces)
            with open(os.path.join(cur, "%08d.scale:2,S" % i), "wb") as f:
                f.write(data)
            total_bytes += len(data)
            i += 1
            if i % 20000 == 0:
                print(f"make_scale_corpus: {i}/{a.n}", file=sys.stderr)
    print(f"make_scale_corpus: wrote {i} messages, {total_bytes} bytes, from {len(sources)} "
          f"sources, in {a.batches} Maildir(s) under {a.dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
