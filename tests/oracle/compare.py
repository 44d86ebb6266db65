#!/usr/bin/env python3
"""Second half of run_oracle_test.sh: compares mailvault's search answers with the oracle's.

    compare.py TMPDIR QUERIES.jsonl MAILDIR

TMPDIR holds oracle.json, details.json, variants.json, import.out and out/N.{json,err,rc} (the
answer of the N-th query of QUERIES.jsonl). Exit status 0 when every query passed, 1 otherwise.
"""

import json
import os
import re
import sys


def main():
    tmp, queries_path, maildir = sys.argv[1:4]
    queries = []
    for line in open(queries_path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#"):
            queries.append(json.loads(line)["q"])
    oracle = json.load(open(os.path.join(tmp, "oracle.json")))
    details = json.load(open(os.path.join(tmp, "details.json")))
    variants_path = os.path.join(tmp, "variants.json")
    variants = json.load(open(variants_path)) if os.path.exists(variants_path) else {}
    id_of_file = {v["file"]: k for k, v in details.items()}

    # Messages mailvault rejected on import are not in the vault: no query can find them.
    rejected = {}
    for line in open(os.path.join(tmp, "import.out"), encoding="utf-8", errors="replace"):
        m = re.match(r"\s*rejected (.+?): (.*)$", line.rstrip("\n"))
        if m:
            name = os.path.basename(m.group(1))
            if name in id_of_file:
                rejected[id_of_file[name]] = m.group(2)
            else:
                print("note: import rejected %s, which the oracle does not know" % m.group(1))
    if rejected:
        print("import rejected %d message(s); they are left out of every expected answer:" % len(rejected))
        for i, why in sorted(rejected.items(), key=lambda kv: details[kv[0]]["file"]):
            print("  %s  %s: %s" % (i[:12], details[i]["file"], why))

    def describe(i):
        d = details.get(i)
        if d is None:
            return "%s  (not a file of %s)" % (i, maildir)
        notes = (" [" + ", ".join(d["notes"]) + "]") if d["notes"] else ""
        return "%s  %s%s" % (i[:16], d["file"], notes)

    # Text in a charset the bytes do not decode cleanly from has no single right reading: two
    # decoders may both be reasonable and split words differently. A mismatch on such a message
    # is reported, not failed; there may be at most MAX_UNDECIDED of them over the whole run.
    MAX_UNDECIDED = 3
    undecidable = {i for i, d in details.items() if any(n.startswith("charset-errors") for n in d["notes"])}
    undecided = set()

    failed = 0
    for n, q in enumerate(queries):
        expected = set(oracle[q]) - set(rejected)
        problems = []
        rc = open(os.path.join(tmp, "out", "%d.rc" % n)).read().strip()
        err = open(os.path.join(tmp, "out", "%d.err" % n), errors="replace").read().strip()
        got, total = set(), None
        if rc != "0":
            problems.append("exit status %s: %s" % (rc, err[:300]))
        else:
            try:
                answer = json.load(open(os.path.join(tmp, "out", "%d.json" % n)))
                results = [r["id"] for r in answer["results"]]
                total = answer.get("total")
                got = set(results)
                if len(got) != len(results):
                    problems.append("%d duplicate id(s) in results" % (len(results) - len(got)))
                if total != len(results):
                    problems.append('"total" is %r but there are %d results' % (total, len(results)))
            except (ValueError, KeyError, TypeError) as e:
                problems.append("unreadable answer (%s): %s" % (e, open(os.path.join(tmp, "out", "%d.json" % n),
                                                                        errors="replace").read()[:300]))
        missing, extra = expected - got, got - expected
        for i in sorted((missing | extra) & undecidable):
            print("      note: %s differs on %s (its text does not decode cleanly from its charset; not judged)"
                  % (q, describe(i)))
            undecided.add(i)
        missing, extra = missing - undecidable, extra - undecidable
        ok = not problems and not missing and not extra
        print("%s  expected %5d  got %5d  %s" % ("PASS" if ok else "FAIL", len(expected),
                                                  len(got), q))
        if ok:
            continue
        failed += 1
        for p in problems:
            print("      " + p)
        if missing:
            print("      missing %d:" % len(missing))
            for i in sorted(missing, key=lambda i: details.get(i, {}).get("file", i))[:5]:
                print("        - " + describe(i))
        if extra:
            print("      extra %d:" % len(extra))
            for i in sorted(extra, key=lambda i: details.get(i, {}).get("file", i))[:5]:
                print("        + " + describe(i))
        for label, ids in variants.get(q, {}).items():
            alt = set(ids) - set(rejected)
            if alt == got:
                print("      = the oracle's answer under the alternative reading %s "
                      "(a spec ambiguity: see oracle.py VARIANTS)" % label)
            else:
                print("      (the answer also depends on %s: %d ids under that reading)" % (label, len(alt)))

    if len(undecided) > MAX_UNDECIDED:
        print("FAIL  %d messages with undecodable text differ (at most %d allowed)" % (len(undecided), MAX_UNDECIDED))
        failed += 1
    print("%d of %d queries passed" % (len(queries) - failed, len(queries)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
