#!/usr/bin/env python3
"""Checks that every message ack_client.py logged as acknowledged is in the (stopped) vault.

    check_acked.py --log FILE --vault V --key-file K [--mailvault BIN] [--check-index]

Reads the Message-IDs of FILE (first field of each line; a last line without its newline is
a write cut short by a kill and is ignored), lists the vault with `mailvault list --json`
(which prints each message's Message-ID) and compares. Prints the counts; exit status 1
when an acknowledged message is missing (or, with --check-index, when `mailvault check`
finds the full-text index out of step with the vault), 2 when the vault cannot be read.
"""

import argparse
import collections
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BIN = os.path.normpath(os.path.join(HERE, "..", "..", "build", "release", "cli", "mailvault"))


def norm(msgid):
    return msgid.strip().strip("<>").lower()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--log", required=True)
    ap.add_argument("--vault", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--mailvault", default=os.environ.get("MAILVAULT", DEFAULT_BIN))
    ap.add_argument("--check-index", action="store_true", help="also run `mailvault check` (vault vs index)")
    ap.add_argument("--show-missing", type=int, default=20, help="list at most this many missing ids")
    args = ap.parse_args()

    with open(args.log, "rb") as f:
        raw = f.read()
    torn = 0
    lines = raw.split(b"\n")
    if lines and lines[-1] != b"":
        torn = 1  # the last line has no newline: cut short
    acked = collections.OrderedDict()
    ack_vault_id = {}
    repeats = 0
    for ln in lines[:-1]:
        fields = ln.decode("utf-8", "replace").split()
        if not fields:
            continue
        m = norm(fields[0])
        if m in acked:
            repeats += 1
        acked[m] = True
        if len(fields) > 1:
            ack_vault_id[m] = fields[1]

    base = [args.mailvault, "--vault", args.vault, "--key-file", args.key_file]
    p = subprocess.run(base + ["list", "--json"], capture_output=True)
    if p.returncode != 0:
        sys.stderr.write("check_acked: mailvault list --json failed (exit %d): %s\n"
                         % (p.returncode, p.stderr.decode(errors="replace").strip()))
        return 2
    try:
        listing = json.loads(p.stdout)
    except ValueError as e:
        sys.stderr.write("check_acked: cannot parse mailvault list --json: %s\n" % e)
        return 2
    stored = collections.Counter()
    for m in listing:
        if m.get("message_id") and not m.get("message_id_synthetic"):
            stored[norm(m["message_id"])] += 1
    missing = [m for m in acked if m not in stored]
    ours = [m for m in stored if m.endswith("@ack.mailvault.test")]
    unacked = [m for m in ours if m not in acked]
    dup_ids = [m for m, n in stored.items() if n > 1]

    print("check_acked: acknowledged %d, missing %d, in vault %d messages (%d from ack_client, of which %d "
          "stored but never acknowledged), message-ids stored more than once %d, repeated log lines %d, "
          "torn last log line %d" % (len(acked), len(missing), len(listing), len(ours), len(unacked),
                                     len(dup_ids), repeats, torn))
    for m in missing[:args.show_missing]:
        print("check_acked: MISSING <%s> (the server acknowledged it as %s)" % (m, ack_vault_id.get(m, "?")))
    for m in dup_ids[:args.show_missing]:
        print("check_acked: note: <%s> is stored %d times" % (m, stored[m]))
    rc = 1 if missing else 0
    if args.check_index:
        p = subprocess.run(base + ["check"], capture_output=True, text=True)
        out = (p.stdout + p.stderr).strip()
        if p.returncode != 0:
            print("check_acked: INDEX: mailvault check exit %d: %s" % (p.returncode, out[-1500:]))
            rc = rc or 1
        else:
            print("check_acked: index: %s" % (out.splitlines() or [""])[-1][:200])
    return rc


if __name__ == "__main__":
    sys.exit(main())
