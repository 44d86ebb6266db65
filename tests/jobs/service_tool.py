#!/usr/bin/env python3
"""Clients for tests/jobs/service_test.sh (Python standard library only).

    service_tool.py smtp-load --port P --log FILE [--rate R]
        Sends distinct messages (a UUID Message-ID each) to the SMTP port at about R per
        second until SIGTERM. Only after the server's 250 to the end of DATA is the
        Message-ID appended to FILE (one line, fsynced): every line is a message the server
        promised to keep. A connection error or a 4xx (serve killed, restarting) retries the
        SAME message after 0.2 s. Prints a JSON summary on exit.

    service_tool.py events --url URL --token T --out FILE [--timeout S]
        An EventSource-style reader of a server-sent event stream (Accept:
        text/event-stream, fields "id", "event", "data", "retry"; a blank line dispatches):
        one JSON line per event in FILE, flushed as it comes; a last line {"closed": why}
        when the stream ends (end of stream, error, timeout).

    service_tool.py events-check FILE
        Prints a JSON summary of FILE: the events, whether ids strictly increase, whether
        the progress counters (total, appended, present, failed) never decrease, the last
        event and its state.

    service_tool.py storm --base URL --tokens T1,T2 --job ID [--count N] [--actions A,B,...]
        Two clients (one per token, each its own thread and connections) send N requests
        each to one job at once, each picked at random from the actions (default
        cancel,pause,resume). Prints JSON: every answer's
        status and the job it returned (state, requested, version).

    service_tool.py socket-hostile --sock PATH --cmd 'mailvault ... stats --json'
        Three clients on the control socket at once: one connects and sends nothing, one
        sends garbage, one sends a 10 MiB request; meanwhile CMD runs (after 0.5 s) and is
        timed. Waits for the idle client to be dropped (at most 14 s). Prints JSON.

    service_tool.py socket-idle-many --sock PATH --n N --cmd CMD
        N clients connect to the control socket and send nothing; CMD runs meanwhile and is
        timed; then they hang up. Prints JSON.

    service_tool.py uid-probe --sock PATH --uid U
        Forks, drops to uid/gid U, connects to PATH and asks for `stats --json`. Prints JSON:
        the connect error (if any), the frames received, the exit status they carried.
"""

import argparse
import json
import os
import random
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid


# ---- smtp-load ---------------------------------------------------------------------------------

def smtp_load(args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stats = {"acked": 0, "attempts": 0, "errors": 0, "temporary": 0, "rejected": 0, "last_error": ""}
    conn = None
    pending = None
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    n = 0
    while not stop.is_set():
        if pending is None:
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            next_at = max(next_at + interval, time.monotonic() - 1)
            n += 1
            mid = "<%s@smtp.service-test.mailvault>" % uuid.uuid4()
            body = ("From: Load <load@client.test>\r\nTo: Archive <archive@journal.test>\r\n"
                    "Subject: service-test capture %d %s\r\nMessage-ID: %s\r\n"
                    "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
                    "capture beside a restore job, message %d\r\n%s\r\n") % (
                n, mid, mid, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()), n,
                "lorem ipsum dolor sit amet " * random.randint(5, 60))
            pending = (mid, body.encode())
        try:
            if conn is None:
                conn = smtplib.SMTP("127.0.0.1", args.port, timeout=10)
            stats["attempts"] += 1
            refused = conn.sendmail("load@client.test", ["archive@journal.test"], pending[1])
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
            os.write(log, (pending[0] + "\n").encode())
            os.fsync(log)
            stats["acked"] += 1
            pending = None
        except smtplib.SMTPResponseException as e:
            if 500 <= e.smtp_code < 600:
                stats["rejected"] += 1
                stats["last_error"] = "%d %r" % (e.smtp_code, e.smtp_error)
                pending = None
            else:
                stats["temporary"] += 1
                stats["last_error"] = "%d %r" % (e.smtp_code, e.smtp_error)
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            stop.wait(0.2)
        except (OSError, smtplib.SMTPException) as e:
            stats["errors"] += 1
            stats["last_error"] = repr(e)[:200]
            try:
                if conn:
                    conn.close()
            except Exception:
                pass
            conn = None
            stop.wait(0.2)
    try:
        if conn:
            conn.quit()
    except Exception:
        pass
    os.close(log)
    print(json.dumps(stats))
    return 0


# ---- events ------------------------------------------------------------------------------------

def events(args):
    req = urllib.request.Request(args.url, headers={"Authorization": "Bearer " + args.token,
                                                    "Accept": "text/event-stream", "Cache-Control": "no-cache"})
    out = open(args.out, "w")

    def emit(obj):
        obj["t"] = round(time.time(), 3)
        out.write(json.dumps(obj) + "\n")
        out.flush()

    why = "end of stream"
    try:
        resp = urllib.request.urlopen(req, timeout=args.timeout)
        emit({"open": resp.status, "content_type": resp.headers.get("Content-Type", "")})
        ev = {"id": None, "event": "message", "data": []}
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if ev["data"] or ev["id"] is not None:
                    data = "\n".join(ev["data"])
                    try:
                        parsed = json.loads(data)
                    except ValueError:
                        parsed = data
                    emit({"id": ev["id"], "event": ev["event"], "data": parsed})
                ev = {"id": None, "event": "message", "data": []}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "id":
                ev["id"] = value
            elif field == "event":
                ev["event"] = value
            elif field == "data":
                ev["data"].append(value)
            elif field == "retry":
                emit({"retry": value})
    except urllib.error.HTTPError as e:
        why = "HTTP %d" % e.code
    except Exception as e:  # the server was killed: reset, timeout, incomplete read
        why = "error: %r" % (e,)
    emit({"closed": why})
    out.close()
    return 0


def events_check(args):
    evs = []
    closed = None
    opened = None
    with open(args.file) as f:
        for ln in f:
            try:
                o = json.loads(ln)
            except ValueError:
                continue  # a line cut short
            if "closed" in o:
                closed = o["closed"]
            elif "open" in o:
                opened = o
            elif "event" in o:
                evs.append(o)
    progress = [e for e in evs if e["event"] == "progress" and isinstance(e["data"], dict)]
    ids_ok, counters_ok, problems = True, True, []
    last_id, last_c = None, {}
    for e in progress:
        try:
            i = int(e["id"])
        except (TypeError, ValueError):
            ids_ok = False
            problems.append("event without a numeric id: %r" % (e["id"],))
            continue
        if last_id is not None and i <= last_id:
            ids_ok = False
            problems.append("id %d after %d" % (i, last_id))
        last_id = i
        p = e["data"].get("progress", {})
        for k in ("total", "appended", "present", "failed"):
            v = p.get(k)
            if v is None:
                continue
            if k in last_c and v < last_c[k]:
                counters_ok = False
                problems.append("%s went from %d to %d at id %d" % (k, last_c[k], v, i))
            last_c[k] = v
    last = evs[-1] if evs else None
    summary = {
        "opened": opened,
        "events": len(evs),
        "progress_events": len(progress),
        "ids": [e["id"] for e in progress],
        "ids_increasing": ids_ok,
        "counters_monotonic": counters_ok,
        "problems": problems[:10],
        "max_appended": max([e["data"].get("progress", {}).get("appended", 0) or 0 for e in progress] or [0]),
        "appended_seen": sorted(set(e["data"].get("progress", {}).get("appended", 0) or 0 for e in progress)),
        "states": [e["data"].get("state") for e in progress],
        "last_event": last["event"] if last else None,
        "last_data": last["data"] if last else None,
        "closed": closed,
    }
    print(json.dumps(summary))
    return 0


# ---- storm -------------------------------------------------------------------------------------

def http(base, token, method, path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except Exception as e:
        return 0, repr(e)


def storm(args):
    tokens = args.tokens.split(",")
    actions = args.actions.split(",")
    results = []
    lock = threading.Lock()
    go = threading.Event()

    def client(idx, token):
        rng = random.Random(1000 + idx)
        go.wait()
        for k in range(args.count):
            action = rng.choice(actions)
            t0 = time.monotonic()
            status, text = http(args.base, token, "POST", "/api/v1/jobs/%s/%s" % (args.job, action))
            rec = {"client": idx, "n": k, "action": action, "status": status, "ms": int((time.monotonic() - t0) * 1000)}
            try:
                j = json.loads(text)
            except ValueError:
                j = {"raw": text[:200]}
            if status == 200:
                rec.update(state=j.get("state"), requested=j.get("requested"), version=j.get("version"),
                           updated=j.get("updated"))
            else:
                rec["detail"] = (j.get("detail") or j.get("raw") or "")[:200]
            with lock:
                results.append(rec)
            time.sleep(rng.random() * 0.03)

    threads = [threading.Thread(target=client, args=(i, t)) for i, t in enumerate(tokens)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    statuses = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    print(json.dumps({"statuses": statuses, "results": results}))
    return 0


# ---- control socket ----------------------------------------------------------------------------

def read_frames(s, deadline):
    """Frames until the peer closes or the deadline: [(channel, bytes)], error or None."""
    buf = b""
    err = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            err = "timeout"
            break
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            err = "timeout"
            break
        except OSError as e:
            err = "%s" % e
            break
        if not d:
            break
        buf += d
    frames = []
    while len(buf) >= 5:
        ch = chr(buf[0])
        n = struct.unpack(">I", buf[1:5])[0]
        frames.append((ch, buf[5:5 + n].decode("utf-8", "replace")))
        buf = buf[5 + n:]
    return frames, err


def frames_summary(frames, err, t0):
    exit_code = None
    for ch, data in frames:
        if ch == "x":
            exit_code = data
    return {"frames": [[ch, data[:300]] for ch, data in frames], "exit": exit_code, "error": err,
            "stdout_bytes": sum(len(d) for ch, d in frames if ch == "1"),
            "seconds": round(time.monotonic() - t0, 2)}


def socket_hostile(args):
    res = {}

    def idle():
        t0 = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(args.sock)
        except OSError as e:
            res["idle"] = {"connect_error": str(e)}
            return
        frames, err = read_frames(s, t0 + 14)
        res["idle"] = frames_summary(frames, err, t0)
        s.close()

    def garbage():
        t0 = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(args.sock)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        except OSError as e:
            res["garbage"] = {"send_error": str(e)}
        frames, err = read_frames(s, t0 + 14)
        res.setdefault("garbage", {}).update(frames_summary(frames, err, t0))
        s.close()

    def big():
        t0 = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        size = 10 << 20
        sent = 0
        info = {}
        try:
            s.connect(args.sock)
            body = b'{"argv": ["stats"], "cwd": "/", "stdin": "' + b"A" * (size - 40) + b'"}'
            s.sendall(b"MVC1" + struct.pack(">I", len(body)))
            s.settimeout(15)
            view = memoryview(body)
            while sent < len(body):
                n = s.send(view[sent:sent + 65536])
                sent += n
        except OSError as e:
            info["send_error"] = str(e)
        info["sent"] = sent
        frames, err = read_frames(s, t0 + 14)
        info.update(frames_summary(frames, err, t0))
        res["big"] = info
        s.close()

    threads = [threading.Thread(target=f) for f in (idle, garbage, big)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    try:
        p = subprocess.run(args.cmd, shell=True, capture_output=True, timeout=30)
        res["cmd"] = {"rc": p.returncode, "seconds": round(time.monotonic() - t0, 2),
                      "stdout": p.stdout.decode("utf-8", "replace")[:2000],
                      "stderr": p.stderr.decode("utf-8", "replace")[:500]}
    except subprocess.TimeoutExpired:
        res["cmd"] = {"rc": None, "seconds": round(time.monotonic() - t0, 2), "stdout": "", "stderr": "timed out (30 s)"}
    for t in threads:
        t.join()
    print(json.dumps(res))
    return 0


def socket_idle_many(args):
    socks, errors = [], []
    for _ in range(args.n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(args.sock)
            socks.append(s)
        except OSError as e:
            errors.append(str(e))
    time.sleep(0.3)
    t0 = time.monotonic()
    try:
        p = subprocess.run(args.cmd, shell=True, capture_output=True, timeout=30)
        res = {"rc": p.returncode, "seconds": round(time.monotonic() - t0, 2),
               "stdout": p.stdout.decode("utf-8", "replace")[:2000], "stderr": p.stderr.decode("utf-8", "replace")[:500]}
    except subprocess.TimeoutExpired:
        res = {"rc": None, "seconds": round(time.monotonic() - t0, 2), "stdout": "", "stderr": "timed out (30 s)"}
    for s in socks:
        s.close()
    res["connected"] = len(socks)
    res["connect_errors"] = errors[:3]
    print(json.dumps(res))
    return 0


def uid_probe(args):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = {}
        try:
            os.setgroups([])
            os.setgid(args.uid)
            os.setuid(args.uid)
            out["uid"] = os.getuid()
            t0 = time.monotonic()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(args.sock)
            except OSError as e:
                out["connect_error"] = "%s (errno %d)" % (e.strerror, e.errno)
                out["errno"] = e.errno
            else:
                body = json.dumps({"argv": ["stats", "--json"], "cwd": "/"}).encode()
                try:
                    s.sendall(b"MVC1" + struct.pack(">I", len(body)) + body)
                except OSError as e:
                    out["send_error"] = str(e)
                frames, err = read_frames(s, t0 + 10)
                out.update(frames_summary(frames, err, t0))
        except Exception as e:
            out["probe_error"] = repr(e)
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        d = os.read(r, 65536)
        if not d:
            break
        data += d
    os.waitpid(pid, 0)
    print(data.decode())
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("smtp-load")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--rate", type=float, default=4.0)
    p.set_defaults(fn=smtp_load)
    p = sub.add_parser("events")
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=events)
    p = sub.add_parser("events-check")
    p.add_argument("file")
    p.set_defaults(fn=events_check)
    p = sub.add_parser("storm")
    p.add_argument("--base", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--count", type=int, default=25)
    p.add_argument("--actions", default="cancel,pause,resume", help="picked at random (repeat one to weigh it)")
    p.set_defaults(fn=storm)
    p = sub.add_parser("socket-hostile")
    p.add_argument("--sock", required=True)
    p.add_argument("--cmd", required=True)
    p.set_defaults(fn=socket_hostile)
    p = sub.add_parser("socket-idle-many")
    p.add_argument("--sock", required=True)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--cmd", required=True)
    p.set_defaults(fn=socket_idle_many)
    p = sub.add_parser("uid-probe")
    p.add_argument("--sock", required=True)
    p.add_argument("--uid", type=int, default=65534)
    p.set_defaults(fn=uid_probe)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
