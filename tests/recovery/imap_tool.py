#!/usr/bin/env python3
"""Server-side oracle for mailvault's recovery tests: talks IMAP (stdlib imaplib only) to a
test server on 127.0.0.1 and reports what a mailbox really holds.

usage: imap_tool.py [CONNECTION] COMMAND [ARGS]

CONNECTION (before the command):
  --host H (127.0.0.1)  --port P (required by every IMAP command)  --user U  --password P
  --timeout SECS (30)
  --nagle               leave Nagle's algorithm on (default: TCP_NODELAY; with Nagle, a
                        synchronizing-literal APPEND costs ~40 ms on Cyrus: see
                        docs/design/recovery.md)
  --authzid TARGET      AUTHENTICATE PLAIN as U with authorization identity TARGET, i.e. an
                        administrator (Cyrus: a user in `admins`; Dovecot: a master user) acts
                        as TARGET. Without it: LOGIN U P. Dovecot also accepts LOGIN
                        "TARGET*MASTER" MASTERPASS.

COMMANDS (JSON goes to stdout, one object per line):
  capability              {"greeting", "pre_login", "post_login"} capability lists
  login                   {"result": "OK"|"NO"|"BAD", "text"}; exit 0 only on OK
  list-messages [--folder F] [--header NAME]...
                          one line per message, in UID order: uid, message_id, date,
                          internaldate, flags, size (RFC822.SIZE), sha256 (of BODY[], the
                          full message as the server returns it) and, per --header, the
                          value(s) of that header field under its lower-cased name
  count [--folder F]      {"folder", "messages", "uidvalidity", "uidnext"} (STATUS)
  append [--folder F] [--flags FLAGS] [--multi] [--raw] [--sync-literal] [--keep-going]
         [--prepend-header LINE]... [--reencode] FILE...
                          APPEND each FILE (LF/CR line ends become CRLF unless --raw); one
                          line per FILE: file, result, text, code (response code name or
                          null), appenduid ([uidvalidity, uid], [uidvalidity, "a:b"] or
                          null). Each command goes out in one write with a LITERAL+ literal
                          ({n+}); --sync-literal waits for the server's "+" instead (imaplib).
                          --multi sends all FILEs in one MULTIAPPEND command (RFC 3502) and
                          prints one line for the command. Exit 1 if any APPEND was refused;
                          stops at the first refusal unless --keep-going.
                          --prepend-header "Received: ..." puts that header line on top of
                          each message first (what a delivery would add); --reencode changes
                          the transfer encoding of each text part (see lmtp-deliver).
  create-folder --folder F
  set-quota --root R --kb N|none
                          SETQUOTA R (STORAGE N) (Cyrus admin: R = user/alice@example.test)
  get-quota [--folder F]  GETQUOTAROOT F: {"roots", "quota": {root: [[res, used, limit]...]}}
  verify [--folder F] [--ignore-header NAME]... [--allow-extra] FILE...
                          the oracle: is every FILE in F exactly once? Messages are compared
                          by sha256 of their bytes (FILE with line ends made CRLF; the server
                          copy with the --ignore-header fields removed, e.g. a restore marker).
                          Prints {"expected", "found", "missing": [FILE], "duplicates":
                          {FILE: n}, "unexpected": [uid]}; exit 0 only when nothing is
                          missing or duplicated and (unless --allow-extra) nothing unexpected.
  verify --match delivered [--folder F] [--ignore-header NAME]... [--allow-extra] FILE...
                          the same question for copies that went through a delivery or a
                          server that rewrote them. A mailbox message is a copy of FILE when
                          (a) both are equal after CRLF normalisation and removing the trace
                          fields Return-Path, Delivered-To, Received, X-Original-To (and any
                          --ignore-header) from both; or else (b) Message-ID and Date are equal
                          (whitespace-normalised; both absent counts as equal) and so is the
                          multiset of SHA-256 of the decoded leaf MIME parts (email package,
                          decode=True; text/* parts with CRLF->LF, trailing whitespace of each
                          line and trailing blank lines removed; other parts sent 7bit/8bit/
                          binary with CRLF->LF). (b) is what makes a copy whose parts were
                          re-encoded (base64 <-> quoted-printable) count. Identical FILEs
                          (by (a)) must be present as often as they are given. The report also
                          has "by_parts": [[uid, FILE]...], the copies that matched only by (b).
  lmtp-deliver --lmtp-port P [--lmtp-host H] --rcpt ADDR [--from ADDR] [--reencode] FILE...
                          deliver each FILE over LMTP (one session, one transaction per FILE,
                          line ends made CRLF, dots stuffed), as a mail server would: the LMTP
                          server adds Return-Path, Delivered-To, Received. --reencode first
                          changes each text part's Content-Transfer-Encoding (7bit/8bit/binary/
                          base64 -> quoted-printable, quoted-printable -> base64): other bytes,
                          same decoded content. One line per FILE: file, result ("OK" or the
                          server's reply), code; exit 1 if any was refused. Needs no --port.
Exit status 2: usage or connection/protocol error (message on stderr).
"""

import argparse
import base64
import email.generator
import email.parser
import email.policy
import hashlib
import imaplib
import io
import json
import quopri
import re
import smtplib
import socket
import sys

CRLF_RE = re.compile(rb"\r\n|\r(?!\n)|\n")
CODE_RE = re.compile(rb"^\[([A-Za-z0-9.+-]+)[^\]]*\]")
APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.I)
FETCH_ITEM_RE = re.compile(rb"(UID|RFC822\.SIZE) (\d+)", re.I)
FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)", re.I)
INTERNALDATE_RE = re.compile(rb'INTERNALDATE "([^"]*)"', re.I)


class ToolError(Exception):
    pass


def out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def text(b):
    if b is None:
        return None
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def crlf(data):
    return CRLF_RE.sub(b"\r\n", data)


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(a):
    if a.port is None:
        raise ToolError("--port is needed (before the command)")
    try:
        c = imaplib.IMAP4(a.host, a.port, timeout=a.timeout)
        if not a.nagle:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as e:
        raise ToolError(f"cannot connect to {a.host}:{a.port}: {e}")
    return c


def authenticate(c, a):
    """Returns (typ, text) of the login; never raises for NO."""
    if a.user is None or a.password is None:
        raise ToolError("--user and --password are needed")
    try:
        if a.authzid is not None:
            blob = f"{a.authzid}\0{a.user}\0{a.password}".encode()
            typ, dat = c.authenticate("PLAIN", lambda _: blob)
        else:
            typ, dat = c.login(a.user, a.password)
        return typ, text(dat[0] if dat else b"")
    except imaplib.IMAP4.error as e:
        # imaplib raises on NO for LOGIN/AUTHENTICATE; the message is the server's text
        msg = str(e)
        m = re.match(r"^b?['\"](.*)['\"]$", msg)
        return "NO", (m.group(1) if m else msg)


def login(a):
    c = connect(a)
    typ, t = authenticate(c, a)
    if typ != "OK":
        raise ToolError(f"login as {a.user}{' for ' + a.authzid if a.authzid else ''} refused: {t}")
    return c


def check(typ, dat, what):
    if typ != "OK":
        raise ToolError(f"{what}: {typ} {text(dat[0]) if dat else ''}")


def select(c, folder, readonly=True):
    typ, dat = c.select(quote(folder), readonly=readonly)
    check(typ, dat, f"SELECT {folder}")
    return int(dat[0] or 0)


def header_fields(raw):
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)


def norm_header_value(v):
    if v is None:
        return None
    return " ".join(str(v).split())


def strip_headers(raw, names):
    """raw without the header fields named in names (case-insensitive), folded lines too."""
    if not names:
        return raw
    names = {n.lower().encode() for n in names}
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        head, body = raw if raw.endswith(b"\r\n") else raw + b"\r\n", b""
    else:
        head, body = raw[: end + 2], raw[end + 2:]
    kept, skipping = [], False
    for line in head.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the field before
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() in names
        if not skipping:
            kept.append(line)
    return b"".join(l + b"\r\n" for l in kept) + body


# Header fields a delivery (LMTP/LDA, an MTA hop) adds on top of a message.
TRACE_HEADERS = ("Return-Path", "Delivered-To", "Received", "X-Original-To")
IDENTITY_CTES = ("", "7bit", "8bit", "binary")


def norm_text_part(data):
    """A decoded text part as compared by verify --match delivered: CRLF -> LF, trailing
    whitespace of each line and trailing blank lines removed."""
    lines = [l.rstrip() for l in data.replace(b"\r\n", b"\n").split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"\n".join(lines)


def part_hashes(raw):
    """Sorted SHA-256 (hex) of the decoded leaf MIME parts of raw (bytes)."""
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    hashes = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True)
        if data is None:
            data = b""
        elif isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if part.get_content_maintype() == "text":
            data = norm_text_part(data)
        elif (part.get("Content-Transfer-Encoding") or "").strip().lower() in IDENTITY_CTES:
            data = data.replace(b"\r\n", b"\n")
        hashes.append(hashlib.sha256(data).hexdigest())
    return tuple(sorted(hashes))


def content_key(raw):
    """(Message-ID, Date, part hashes): the fallback identity of verify --match delivered."""
    h = header_fields(raw)
    return (norm_header_value(h.get("Message-ID")), norm_header_value(h.get("Date")), part_hashes(raw))


def reencode(data):
    """data (a message, bytes) with each text/* leaf part's transfer encoding changed:
    7bit/8bit/binary/base64 -> quoted-printable, quoted-printable -> base64. The decoded
    content stays the same (up to line ends), the bytes do not."""
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        cte = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        payload = part.get_payload(decode=True) or b""
        if cte == "quoted-printable":
            new, body = "base64", base64.encodebytes(payload).decode("ascii")
        else:
            new, body = "quoted-printable", quopri.encodestring(payload).decode("ascii")
            if body and not body.endswith("\n"):
                body += "\n"
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = new
        part.set_payload(body)
    buf = io.BytesIO()
    email.generator.BytesGenerator(buf, mangle_from_=False, maxheaderlen=0).flatten(msg)
    return buf.getvalue()


def prepare(data, prepend=(), do_reencode=False):
    """A file's bytes as a delivery would hand them on: re-encoded, header lines on top."""
    if do_reencode:
        data = reencode(data)
    head = b"".join(line.encode("utf-8").rstrip(b"\r\n") + b"\n" for line in prepend)
    return head + data


def fetch_messages(c, folder, want_body=True, batch=200):
    """Yields dicts uid,size,flags,internaldate,raw for every message in folder, UID order."""
    if select(c, folder) == 0:
        return
    typ, dat = c.uid("FETCH", "1:*", "(UID RFC822.SIZE FLAGS INTERNALDATE)")
    check(typ, dat, "UID FETCH")
    meta = {}
    for item in dat:
        line = item[0] if isinstance(item, tuple) else item
        if not line:
            continue
        fields = dict((k.upper(), int(v)) for k, v in FETCH_ITEM_RE.findall(line))
        if b"UID" not in fields:
            continue
        fm, im = FLAGS_RE.search(line), INTERNALDATE_RE.search(line)
        meta[fields[b"UID"]] = {
            "uid": fields[b"UID"],
            "size": fields.get(b"RFC822.SIZE"),
            "flags": text(fm.group(1)).split() if fm else [],
            "internaldate": text(im.group(1)) if im else None,
        }
    uids = sorted(meta)
    for i in range(0, len(uids), batch):
        chunk = uids[i: i + batch]
        bodies = {}
        if want_body:
            typ, dat = c.uid("FETCH", ",".join(map(str, chunk)), "(UID BODY.PEEK[])")
            check(typ, dat, "UID FETCH BODY.PEEK[]")
            # dat: (b'N FETCH (UID u BODY[] {n}', literal), b')' -- or the UID after the
            # literal, in the closing item: b' UID u)'
            last = None
            for item in dat:
                if isinstance(item, tuple):
                    last = item[1]
                    uid = re.search(rb"UID (\d+)", item[0], re.I)
                    if uid:
                        bodies[int(uid.group(1))] = last
                        last = None
                elif last is not None and item:
                    uid = re.search(rb"UID (\d+)", item, re.I)
                    if uid:
                        bodies[int(uid.group(1))] = last
                    last = None
        for uid in chunk:
            m = dict(meta[uid])
            if want_body:
                if uid not in bodies:
                    raise ToolError(f"no BODY[] returned for UID {uid}")
                m["raw"] = bodies[uid]
            yield m


def describe(m, headers=()):
    raw = m["raw"]
    h = header_fields(raw)
    d = {
        "uid": m["uid"],
        "size": m["size"],
        "flags": m["flags"],
        "internaldate": m["internaldate"],
        "message_id": norm_header_value(h.get("Message-ID")),
        "date": norm_header_value(h.get("Date")),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if len(raw) != m["size"]:
        d["fetched_size"] = len(raw)
    for name in headers:
        vals = h.get_all(name) or []
        d[name.lower()] = [norm_header_value(v) for v in vals]
    return d


def parse_append_response(typ, dat):
    t = dat[0] if dat else b""
    if isinstance(t, tuple):
        t = t[0]
    t = t or b""
    code = CODE_RE.match(t)
    au = APPENDUID_RE.search(t)
    return {
        "result": typ,
        "text": text(t),
        "code": text(code.group(1)).upper() if code else None,
        "appenduid": [int(au.group(1)), text(au.group(2)) if not au.group(2).isdigit() else int(au.group(2))] if au else None,
    }


def raw_append(c, folder, flags, messages):
    """One APPEND (MULTIAPPEND when several messages) with non-synchronizing literals, sent
    in one write."""
    if "LITERAL+" not in c.capabilities:
        raise ToolError("server lacks LITERAL+; use --sync-literal")
    tag = c._new_tag()
    parts = [tag + b" APPEND " + quote(folder).encode()]
    for msg in messages:
        if flags:
            parts.append(b" (" + flags.encode() + b")")
        parts.append(b" {%d+}\r\n" % len(msg))
        parts.append(msg)
    parts.append(b"\r\n")
    c.send(b"".join(parts))
    try:
        typ, dat = c._command_complete("APPEND", tag)
    except imaplib.IMAP4.error as e:
        return "BAD", [str(e).encode()]
    return typ, dat


def cmd_capability(a):
    c = connect(a)
    pre = sorted(c.capabilities)
    greeting = text(c.welcome)
    post = None
    if a.user is not None:
        typ, t = authenticate(c, a)
        if typ == "OK":
            typ, dat = c.capability()
            post = text(dat[0]).split() if typ == "OK" else None
    out({"greeting": greeting, "pre_login": pre, "post_login": post})
    c.logout()
    return 0


def cmd_login(a):
    c = connect(a)
    typ, t = authenticate(c, a)
    out({"result": typ, "text": t})
    try:
        c.logout()
    except Exception:
        pass
    return 0 if typ == "OK" else 1


def cmd_list(a):
    c = login(a)
    for m in fetch_messages(c, a.folder):
        out(describe(m, a.header))
    c.logout()
    return 0


def cmd_count(a):
    c = login(a)
    typ, dat = c.status(quote(a.folder), "(MESSAGES UIDVALIDITY UIDNEXT)")
    check(typ, dat, f"STATUS {a.folder}")
    r = {"folder": a.folder}
    for k, v in re.findall(rb"(MESSAGES|UIDVALIDITY|UIDNEXT) (\d+)", dat[0]):
        r[text(k).lower()] = int(v)
    out(r)
    c.logout()
    return 0


def cmd_append(a):
    c = login(a)
    msgs = []
    for f in a.files:
        with open(f, "rb") as fh:
            data = prepare(fh.read(), a.prepend_header, a.reencode)
        msgs.append(data if a.raw else crlf(data))
    failed = False
    if a.multi:
        typ, dat = raw_append(c, a.folder, a.flags, msgs)
        r = parse_append_response(typ, dat)
        r["files"] = a.files
        out(r)
        failed = typ != "OK"
    else:
        for f, msg in zip(a.files, msgs):
            if not a.sync_literal:
                typ, dat = raw_append(c, a.folder, a.flags, [msg])
            else:
                try:
                    typ, dat = c.append(quote(a.folder), f"({a.flags})" if a.flags else None, None, msg)
                except imaplib.IMAP4.error as e:
                    typ, dat = "BAD", [str(e).encode()]
            r = parse_append_response(typ, dat)
            r["file"] = f
            out(r)
            if typ != "OK":
                failed = True
                if not a.keep_going:
                    break
    c.logout()
    return 1 if failed else 0


def cmd_create(a):
    c = login(a)
    typ, dat = c.create(quote(a.folder))
    out({"result": typ, "text": text(dat[0]) if dat else None})
    c.logout()
    return 0 if typ == "OK" else 1


def cmd_set_quota(a):
    c = login(a)
    limits = "()" if a.kb == "none" else f"(STORAGE {int(a.kb)})"
    typ, dat = c.setquota(quote(a.root), limits)
    out({"result": typ, "text": text(dat[0]) if dat and dat[0] else None})
    c.logout()
    return 0 if typ == "OK" else 1


def cmd_get_quota(a):
    c = login(a)
    typ, dat = c.getquotaroot(quote(a.folder))
    check(typ, dat, "GETQUOTAROOT")
    roots, quota = [], {}
    # dat: [[b'INBOX "User quota"'], [b'"User quota" (STORAGE 19 10)']], None for none
    for line in dat[0] if dat and isinstance(dat[0], list) else []:
        if line:
            roots = [r.strip('"') for r in re.findall(r'"[^"]*"|\S+', text(line))[1:]]
    for line in dat[1] if len(dat) > 1 and isinstance(dat[1], list) else []:
        m = re.match(r'^("[^"]*"|\S+) \((.*)\)$', text(line) or "")
        if m:
            t = m.group(2).split()
            quota[m.group(1).strip('"')] = [[t[i], int(t[i + 1]), int(t[i + 2])] for i in range(0, len(t) - 2, 3)]
    out({"folder": a.folder, "roots": roots, "quota": quota})
    c.logout()
    return 0


def cmd_verify(a):
    if a.match == "delivered":
        return verify_delivered(a)
    expected = {}
    for f in a.files:
        with open(f, "rb") as fh:
            h = hashlib.sha256(crlf(fh.read())).hexdigest()
        expected.setdefault(h, []).append(f)
    c = login(a)
    seen, unexpected, found = {}, [], 0
    for m in fetch_messages(c, a.folder):
        found += 1
        h = hashlib.sha256(strip_headers(m["raw"], a.ignore_header)).hexdigest()
        if h in expected:
            seen[h] = seen.get(h, 0) + 1
        else:
            unexpected.append(m["uid"])
    c.logout()
    missing, dups = [], {}
    for h, files in expected.items():
        n, want = seen.get(h, 0), len(files)
        if n < want:
            missing.extend(files[n:])
        elif n > want:
            dups[files[0]] = n
    out({"folder": a.folder, "expected": len(a.files), "found": found, "missing": missing,
         "duplicates": dups, "unexpected": unexpected})
    ok = not missing and not dups and (a.allow_extra or not unexpected)
    return 0 if ok else 1


def verify_delivered(a):
    strip = list(TRACE_HEADERS) + list(a.ignore_header)
    files, exact_of, class_of = a.files, [], []
    exact_groups, classes = {}, {}          # key -> [file index]
    for i, f in enumerate(files):
        with open(f, "rb") as fh:
            data = crlf(fh.read())
        e, k = hashlib.sha256(strip_headers(data, strip)).hexdigest(), content_key(data)
        exact_of.append(e)
        class_of.append(k)
        exact_groups.setdefault(e, []).append(i)
        classes.setdefault(k, []).append(i)
    c = login(a)
    exact_hits, class_hits, unexpected, found = {}, {}, [], 0
    for m in fetch_messages(c, a.folder):
        found += 1
        raw = strip_headers(m["raw"], a.ignore_header)
        e = hashlib.sha256(strip_headers(raw, strip)).hexdigest()
        if e in exact_groups:
            exact_hits[e] = exact_hits.get(e, 0) + 1
            continue
        k = content_key(raw)
        if k in classes:
            class_hits.setdefault(k, []).append(m["uid"])
        else:
            unexpected.append(m["uid"])
    c.logout()
    missing, dups, by_parts = [], {}, []
    for k, members in classes.items():
        unfilled = []
        for e in dict.fromkeys(exact_of[i] for i in members):   # exact groups in this class
            group = exact_groups[e]
            n = exact_hits.get(e, 0)
            if n > len(group):
                dups[files[group[0]]] = n
            unfilled.extend(group[n:])
        floating = list(class_hits.get(k, []))
        while unfilled and floating:
            by_parts.append([floating.pop(0), files[unfilled.pop(0)]])
        missing.extend(files[i] for i in unfilled)
        if floating:   # more copies than files: the class's first file is duplicated
            f0 = files[members[0]]
            dups[f0] = dups.get(f0, len(exact_groups[exact_of[members[0]]])) + len(floating)
    out({"folder": a.folder, "match": "delivered", "expected": len(files), "found": found,
         "missing": missing, "duplicates": dups, "unexpected": unexpected, "by_parts": by_parts})
    ok = not missing and not dups and (a.allow_extra or not unexpected)
    return 0 if ok else 1


def cmd_lmtp_deliver(a):
    try:
        s = smtplib.LMTP(a.lmtp_host, a.lmtp_port, timeout=a.timeout)
        s.ehlo("imap-tool.test")   # smtplib.LMTP sends LHLO for ehlo()
    except (OSError, smtplib.SMTPException) as e:
        raise ToolError(f"LMTP {a.lmtp_host}:{a.lmtp_port}: {e}")
    failed = False
    for f in a.files:
        with open(f, "rb") as fh:
            data = crlf(prepare(fh.read(), (), a.reencode))
        try:
            refused = s.sendmail(a.sender, [a.rcpt], data)
            r = {"file": f, "result": "OK" if not refused else str(refused), "code": None}
        except smtplib.SMTPResponseException as e:
            r = {"file": f, "result": text(e.smtp_error), "code": e.smtp_code}
        except smtplib.SMTPRecipientsRefused as e:
            r = {"file": f, "result": str(e.recipients), "code": None}
        except smtplib.SMTPException as e:
            r = {"file": f, "result": str(e), "code": None}
        if r["result"] != "OK":
            failed = True
            try:
                s.rset()
            except smtplib.SMTPException:
                pass
        out(r)
    try:
        s.quit()
    except smtplib.SMTPException:
        pass
    return 1 if failed else 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--authzid")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--nagle", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("capability").set_defaults(fn=cmd_capability)
    sub.add_parser("login").set_defaults(fn=cmd_login)
    s = sub.add_parser("list-messages")
    s.add_argument("--folder", default="INBOX")
    s.add_argument("--header", action="append", default=[])
    s.set_defaults(fn=cmd_list)
    s = sub.add_parser("count")
    s.add_argument("--folder", default="INBOX")
    s.set_defaults(fn=cmd_count)
    s = sub.add_parser("append")
    s.add_argument("--folder", default="INBOX")
    s.add_argument("--flags", default="")
    s.add_argument("--multi", action="store_true")
    s.add_argument("--raw", action="store_true")
    s.add_argument("--sync-literal", action="store_true")
    s.add_argument("--keep-going", action="store_true")
    s.add_argument("--prepend-header", action="append", default=[])
    s.add_argument("--reencode", action="store_true")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_append)
    s = sub.add_parser("create-folder")
    s.add_argument("--folder", required=True)
    s.set_defaults(fn=cmd_create)
    s = sub.add_parser("set-quota")
    s.add_argument("--root", required=True)
    s.add_argument("--kb", required=True)
    s.set_defaults(fn=cmd_set_quota)
    s = sub.add_parser("get-quota")
    s.add_argument("--folder", default="INBOX")
    s.set_defaults(fn=cmd_get_quota)
    s = sub.add_parser("verify")
    s.add_argument("--folder", default="INBOX")
    s.add_argument("--ignore-header", action="append", default=[])
    s.add_argument("--allow-extra", action="store_true")
    s.add_argument("--match", choices=("exact", "delivered"), default="exact")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("lmtp-deliver")
    s.add_argument("--lmtp-host", default="127.0.0.1")
    s.add_argument("--lmtp-port", type=int, required=True)
    s.add_argument("--rcpt", required=True)
    s.add_argument("--from", dest="sender", default="imap-tool@example.test")
    s.add_argument("--reencode", action="store_true")
    s.add_argument("files", nargs="+")
    s.set_defaults(fn=cmd_lmtp_deliver)
    a = p.parse_args(argv)
    try:
        return a.fn(a)
    except (ToolError, imaplib.IMAP4.error, smtplib.SMTPException, OSError) as e:
        print(f"imap_tool.py {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
