#!/usr/bin/env python3
"""Journal-capture load for bench/service_bench.sh: distinct messages over SMTP at a steady rate.

    smtp_load.py --port P --rate R --connections C --acked FILE --latency FILE

Sends R messages a second in all, over C connections (each its own thread and pace), until
SIGTERM. A message counts as acknowledged only after the server's 250 to the end of DATA: its
Message-ID is then appended to --acked (and, with --ack-times, the wall-clock time and the
Message-ID to that file: bench/offsite_bench.sh measures offsite lag from it). For each, the seconds from the last byte of DATA (the
final ".") to that 250 go to --latency, one per line. On SIGTERM, prints a JSON summary:
sent, acked, refused (5xx), temporary (4xx), errors, and the achieved rate.
"""

import argparse
import json
import signal
import smtplib
import sys
import threading
import time
import uuid


def worker(args, idx, stop, lock, out_acked, out_latency, stats):
    interval = args.connections / args.rate
    next_at = time.monotonic() + idx * interval / args.connections
    conn = None
    n = 0
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        next_at = max(next_at + interval, time.monotonic() - 1)
        n += 1
        mid = "<%s@bench.mailvault>" % uuid.uuid4()
        body = ("From: Load <load@client.test>\r\nTo: Archive <archive@journal.test>\r\n"
                "Subject: service bench %d/%d\r\nMessage-ID: %s\r\nDate: %s\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n") % (
            idx, n, mid, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "journaled while a restore runs, " * 40)
        try:
            if conn is None:
                conn = smtplib.SMTP("127.0.0.1", args.port, timeout=30)
                conn.ehlo()
            code, _ = conn.mail("load@client.test")
            if code != 250:
                raise smtplib.SMTPResponseException(code, b"MAIL")
            code, _ = conn.rcpt("archive@journal.test")
            if code not in (250, 251):
                raise smtplib.SMTPResponseException(code, b"RCPT")
            code, _ = conn.docmd("DATA")
            if code != 354:
                raise smtplib.SMTPResponseException(code, b"DATA")
            conn.send(body.encode() + b".\r\n")
            t0 = time.monotonic()
            code, msg = conn.getreply()
            dt = time.monotonic() - t0
            with lock:
                stats["sent"] += 1
                if code == 250:
                    stats["acked"] += 1
                    out_acked.write(mid + "\n")
                    out_latency.write("%.6f\n" % dt)
                    if args.ack_times_file:
                        args.ack_times_file.write("%.6f %s\n" % (time.time(), mid))
                elif 400 <= code < 500:
                    stats["temporary"] += 1
                else:
                    stats["refused"] += 1
        except (OSError, smtplib.SMTPException) as e:
            with lock:
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=150)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--acked", required=True)
    ap.add_argument("--latency", required=True)
    ap.add_argument("--ack-times", help="also write 'EPOCH_SECONDS MESSAGE-ID' per 250 (offsite lag)")
    args = ap.parse_args()
    args.ack_times_file = open(args.ack_times, "w", buffering=1) if args.ack_times else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    stats = {"sent": 0, "acked": 0, "temporary": 0, "refused": 0, "errors": 0, "last_error": ""}
    started = time.monotonic()
    with open(args.acked, "w") as acked, open(args.latency, "w") as latency:
        threads = [threading.Thread(target=worker, args=(args, i, stop, lock, acked, latency, stats))
                   for i in range(args.connections)]
        for t in threads:
            t.start()
        while not stop.is_set():
            stop.wait(0.5)
        for t in threads:
            t.join()
    stats["seconds"] = round(time.monotonic() - started, 3)
    stats["rate"] = round(stats["acked"] / max(stats["seconds"], 1e-6), 1)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
