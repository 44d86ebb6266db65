#!/usr/bin/env python3
"""A reviewer, auditor, admin/operator and compliance session through a validating proxy of
docs/openapi.yaml.

    spec_proxy.py --env ENV.json --proxy http://127.0.0.1:PORT --openapi docs/openapi.yaml

api_test.sh (phase 8) starts `mailvault serve --http` with two restore targets ("primary": an IMAP
port nobody listens on, "broken": an auth file that does not exist), then Stoplight Prism in
front of it:

    prism proxy docs/openapi.yaml http://127.0.0.1:API_PORT --errors=false --validate-request

and runs this. Every request goes to Prism, which forwards it to mailvault and validates the
request and mailvault's answer against the document: path, query and body against the
operation's schemas and the security requirement; the answer's status against the operation's
documented responses, its Content-Type against the response's media types, its body against the
schema and its documented headers. Prism reports what does not conform in an `sl-violations`
header (a JSON list of {location: ["request"|"response", ...], severity, code, message}).

Why --errors=false: with --errors Prism answers a non-conforming *request* itself (401 for a
missing bearer token, 422 for a bad body) and never forwards it, so the server's own 4xx problems
(this session sends a few on purpose) would not be checked at all. Here every request reaches
mailvault, and the header flags both sides. One case cannot go through Prism: a body that is not
JSON (Prism's HTTP layer answers 400 itself); api_client.py checks that one directly.

Per exchange, "ok   METHOD PATH (who, what): STATUS" or "FAIL ...: why", where FAIL means:
  - a response-side violation of any severity (the answer does not conform: a field, a type, an
    enum value, a status or media type the document does not list for the operation);
  - a request-side violation on a request meant to conform (the test or the document is wrong),
    or, on a request sent non-conforming on purpose, not the violation expected (Prism did not
    validate against this document);
  - an answer not made by mailvault (no x-request-id: Prism answered itself), or another status
    than the one expected.
At the end every operation of the document must have been exercised through the proxy, so a
route added to docs/openapi.yaml without a line here fails too. Exit status 1 on any FAIL.

The session sets the preservation lock on the vault's policy set (it cannot be lifted), as the
very last thing it does (preservation_lock); nothing after it may change policies.
"""

import argparse
import json
import os
import re
import secrets
import sys
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_client import Client, Report  # noqa: E402

import yaml  # python3-yaml  # noqa: E402

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ROUTE_NOT_FOUND = "Selected route not found"  # Prism's input warning for an undocumented route
FINAL_JOB_STATES = ("done", "failed", "cancelled")


def q(value):
    return urllib.parse.quote(str(value), safe="")


class Operations:
    """The document's operations, to say which one a request exercised."""

    def __init__(self, path):
        with open(path) as f:
            doc = yaml.safe_load(f)
        self.ops = []
        for template, item in (doc.get("paths") or {}).items():
            rx = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)) + "$")
            for method in item:
                if method in METHODS:
                    self.ops.append((method.upper(), template, rx))
        self.seen = {}  # (METHOD, template) -> statuses answered

    def match(self, method, path):
        path = path.split("?", 1)[0]
        for m, template, rx in self.ops:
            if m == method and rx.match(path):
                return (m, template)
        return None

    def note(self, method, path, status):
        key = self.match(method, path)
        if key:
            self.seen.setdefault(key, set()).add(status)

    def missing(self):
        return [(m, t) for m, t, _ in self.ops if (m, t) not in self.seen]


class Session:
    def __init__(self, env, proxy, openapi):
        self.env = env
        self.users = env["users"]
        self.api = Client(proxy, None)
        self.r = Report()
        self.ops = Operations(openapi)
        self.tokens = {}
        self.exchanges = 0
        self.resets = 0  # Prism's EPIPE/ECONNRESET on a refused large body, tried again
        self.nonconforming = []  # "METHOD PATH STATUS: violations" of the answers that do not conform

    # -- one exchange ---------------------------------------------------------------------------

    def send(self, who, method, path, token=None, **kw):
        if token is None and who and who != "anonymous":
            token = self.tokens[who]
        return self.api.call(method, path, token=token, timeout=kw.pop("timeout", 30), **kw)

    def x(self, label, who, method, path, want, bad_request=None, quiet=False, token=None, **kw):
        """One request through the proxy; checks it. want: a status or a tuple of statuses.
        bad_request: the request is sent non-conforming on purpose; Prism must flag it with a
        request-side violation whose message contains this text. quiet: print only a FAIL."""
        for _ in range(3):
            resp = self.send(who, method, path, token=token, **kw)
            # A body over the limit: mailvault answers 413 at once and closes without reading the
            # rest; Prism (node-fetch) may still be writing it and then fails with EPIPE instead
            # of reading the answer (curl, which reads the early answer, never does). Only that
            # Prism-made 500 is tried again.
            if not (resp.status == 500 and not resp.header("x-request-id") and
                    (b"EPIPE" in resp.body or b"ECONNRESET" in resp.body)):
                break
            self.resets += 1
        self.exchanges += 1
        self.ops.note(method, path, resp.status)
        wants = want if isinstance(want, tuple) else (want,)
        name = "%s %s (%s%s): %d" % (method, path.split("?", 1)[0] if len(path) > 90 else path, who or "anonymous",
                                     ", " + label if label else "", resp.status)
        raw = resp.header("sl-violations")
        try:
            violations = json.loads(raw) if raw else []
        except ValueError:  # over 8 KiB: "Too many violations! <the first 8 KiB>"
            side = "request" if raw.startswith('Too many violations! [{"location":["request"') else "response"
            violations = [{"location": [side], "severity": "Error", "message": raw[:400] + "..."}]
        req = [v for v in violations if (v.get("location") or ["request"])[0] == "request"]
        res = [v for v in violations if (v.get("location") or [""])[0] == "response"]
        why = []
        if not resp.header("x-request-id") and resp.slug() is None:
            why.append("not answered by mailvault (no x-request-id, no mailvault problem: Prism answered itself): %s"
                       % resp.brief())
        if resp.status not in wants:
            why.append("expected %s, got %s" % ("/".join(map(str, wants)), resp.brief()))
        if res:
            why.append("the answer does not conform: %s" % show(res))
            self.nonconforming.append("%s %s -> %d: %s" % (method, path, resp.status, show(res)))
        if bad_request is None and req:
            why.append("the request does not conform (test or document wrong): %s" % show(req))
        elif bad_request is not None and not any(bad_request in str(v.get("message", "")) for v in req):
            why.append("expected Prism to flag the request (%r), it flagged %s" % (bad_request, show(req) or "nothing"))
        if why:
            self.r.fail(name, "; ".join(why))
        elif not quiet:
            self.r.ok(name + (" (request flagged as intended: %s)" % bad_request if bad_request else "") + ", conforms")
        return resp

    def login(self, who):
        u = self.users[who]
        resp = self.x("", None, "POST", "/api/v1/auth/login", 200, body={"username": u["name"], "password": u["password"]})
        if resp.status != 200:
            raise RuntimeError("login as %s failed: %s" % (u["name"], resp.brief()))
        self.tokens[who] = resp.json()["token"]


def show(violations):
    """Prism's violations, one per distinct (place, severity, message): array indices become *,
    so a field wrong in 40 list items is one line with (x40)."""
    seen = {}
    for v in violations:
        where = ".".join("*" if isinstance(p, int) or str(p).isdigit() else str(p) for p in v.get("location") or [])
        msg = re.sub(r"(?<=\.)\d+(?=\.|\s|$)", "*", str(v.get("message")))
        key = "%s %s: %s" % (where, v.get("severity"), msg)
        seen[key] = seen.get(key, 0) + 1
    return "; ".join(k + (" (x%d)" % n if n > 1 else "") for k, n in seen.items())


# ---------------------------------------------------------------------------------------------
# The session, by role

def health_and_auth(s):
    s.x("", None, "GET", "/healthz", 200)
    for who in ("admin", "operator", "reviewer", "auditor"):
        s.login(who)
        s.x("", who, "GET", "/api/v1/me", 200)
    if s.env.get("custodians"):
        s.login("scoped")  # a reviewer scoped to alice's mail
        s.x("scoped", "scoped", "GET", "/api/v1/me", 200)
    # a second reviewer session, logged out
    u = s.users["reviewer"]
    extra = s.x("second session", None, "POST", "/api/v1/auth/login", 200,
                body={"username": u["name"], "password": u["password"]})
    if extra.status == 200:
        t = extra.json()["token"]
        s.x("", "reviewer", "POST", "/api/v1/auth/logout", 204, token=t)
        s.x("the logged-out session", "reviewer", "GET", "/api/v1/me", 401, token=t)
    s.x("no credential", None, "GET", "/api/v1/me", 401, bad_request="security")
    s.x("forged token", None, "GET", "/api/v1/me", 401, token="mvs_" + secrets.token_hex(32))
    s.x("no credential", None, "POST", "/api/v1/auth/logout", 401, bad_request="security")
    s.x("no credential", None, "GET", "/metrics", 401, bad_request="security")


def operator_and_admin(s):
    s.x("", "operator", "GET", "/metrics", 200)
    s.x("", "admin", "GET", "/metrics", 200)
    s.x("", "reviewer", "GET", "/metrics", 403)
    s.x("", "operator", "GET", "/api/v1/status", 200)
    s.x("", "operator", "GET", "/api/v1/offsite", 200)
    s.x("", "admin", "GET", "/api/v1/config", 200)
    s.x("", "operator", "GET", "/api/v1/config", 403)
    s.x("", "admin", "GET", "/api/v1/users", 200)
    s.x("read-only", "auditor", "GET", "/api/v1/users", 200)
    s.x("", "reviewer", "GET", "/api/v1/users", 403)
    name = "spec-proxy-" + secrets.token_hex(3)
    body = {"name": name, "role": "reviewer", "password": secrets.token_hex(12),
            "scope": {"custodians": ["alice@corp.test"], "query": "*"}}
    s.x("", "admin", "POST", "/api/v1/users", 201, body=body)
    s.x("the same name again", "admin", "POST", "/api/v1/users", 409, body=body)
    s.x("bad role", "admin", "POST", "/api/v1/users", 400, bad_request="allowed values",
        body=dict(body, name=name + "-x", role="superuser"))
    s.x("disable", "admin", "PUT", "/api/v1/users/" + q(name), 200, body={"disabled": True})
    s.x("unlock", "admin", "PUT", "/api/v1/users/" + q(name), 200, body={"unlock": True})
    s.x("no field", "admin", "PUT", "/api/v1/users/" + q(name), 400, bad_request="fewer than 1", body={})
    s.x("unknown user", "admin", "PUT", "/api/v1/users/no-such-user-" + secrets.token_hex(3), 404, body={"disabled": True})
    s.x("", "auditor", "PUT", "/api/v1/users/" + q(name), 403, body={"disabled": False})


def tokens(s):
    made = s.x("", "reviewer", "POST", "/api/v1/tokens", 201, body={"label": "spec-proxy", "expires_days": 1})
    s.x("", "reviewer", "GET", "/api/v1/tokens", 200)
    s.x("every user's", "admin", "GET", "/api/v1/tokens", 200)
    s.x("expires_days 0", "reviewer", "POST", "/api/v1/tokens", 400, bad_request="must be >= 1",
        body={"label": "bad", "expires_days": 0})
    s.x("for the operator", "admin", "POST", "/api/v1/tokens", 201, body={"user": s.users["operator"]["name"], "label": "spec-proxy"})
    s.x("for a reviewer", "admin", "POST", "/api/v1/tokens", 403, body={"user": s.users["reviewer"]["name"], "label": "x"})
    if made.status == 201:
        t = made.json()
        s.x("with the API token", "reviewer", "GET", "/api/v1/me", 200, token=t["token"])
        s.x("another user's token", "operator", "DELETE", "/api/v1/tokens/" + q(t["id"]), 404)
        s.x("", "reviewer", "DELETE", "/api/v1/tokens/" + q(t["id"]), 204)
        s.x("revoked already", "reviewer", "DELETE", "/api/v1/tokens/" + q(t["id"]), 404)
        s.x("the revoked token", "reviewer", "GET", "/api/v1/me", 401, token=t["token"])


def reviewer(s):
    """Search, messages, tags, saved searches; returns message ids for the exports."""
    found = s.x("", "reviewer", "POST", "/api/v1/search", 200, body={"query": "*", "limit": 20})
    s.x("a field over a group", "reviewer", "POST", "/api/v1/search", 200,
        body={"query": "subject:(razor OR re)", "sort": "oldest", "offset": 1, "limit": 5})
    s.x("relevance", "reviewer", "POST", "/api/v1/search", 200, body={"query": "click here", "sort": "relevance"})
    s.x("bad query", "reviewer", "POST", "/api/v1/search", 400, body={"query": "subject:(razor"})
    s.x("query a number", "reviewer", "POST", "/api/v1/search", 400, bad_request="must be string", body={"query": 5})
    s.x("limit 1001", "reviewer", "POST", "/api/v1/search", 400, bad_request="must be <= 1000",
        body={"query": "*", "limit": 1001})
    s.x("body over 1 MiB", "reviewer", "POST", "/api/v1/search", 413, body={"query": "x" * (1 << 20)})
    s.x("", "operator", "POST", "/api/v1/search", 403, body={"query": "*"})
    hits = found.json().get("hits", []) if found.status == 200 else []
    if not hits:
        raise RuntimeError("the search found nothing to look at")
    mid = hits[0]["id"]
    s.x("", "reviewer", "GET", "/api/v1/messages/" + mid, 200)
    for h in hits[1:6]:
        s.x("", "reviewer", "GET", "/api/v1/messages/" + h["id"], 200, quiet=True)
    s.x("", "reviewer", "GET", "/api/v1/messages/%s/raw" % mid, 200)
    s.x("missing id", "reviewer", "GET", "/api/v1/messages/" + secrets.token_hex(32), 404)
    s.x("upper-case id", "reviewer", "GET", "/api/v1/messages/" + mid.upper(), 404, bad_request="must match pattern")
    s.x("missing id", "reviewer", "GET", "/api/v1/messages/%s/raw" % secrets.token_hex(32), 404)
    s.x("", "auditor", "GET", "/api/v1/messages/" + mid, 403)
    s.x("", "reviewer", "PUT", "/api/v1/messages/%s/tags/spec-proxy" % mid, 204)
    s.x("tagged", "reviewer", "GET", "/api/v1/messages/" + mid, 200)
    s.x("", "reviewer", "DELETE", "/api/v1/messages/%s/tags/spec-proxy" % mid, 204)
    s.x("missing id", "reviewer", "PUT", "/api/v1/messages/%s/tags/spec-proxy" % secrets.token_hex(32), 404)
    s.x("add", "reviewer", "POST", "/api/v1/search/tags", 200, body={"query": "subject:razor", "add": ["spec-proxy-bulk"]})
    s.x("remove", "reviewer", "POST", "/api/v1/search/tags", 200,
        body={"query": "tag:spec-proxy-bulk", "remove": ["spec-proxy-bulk"]})
    if s.env.get("custodians"):
        s.x("scoped, all", "scoped", "POST", "/api/v1/search", 200, body={"query": "*", "limit": 5})

    made = s.x("", "reviewer", "POST", "/api/v1/saved-searches", 201, body={"name": "spec proxy", "query": "subject:razor"})
    s.x("no query", "reviewer", "POST", "/api/v1/saved-searches", 400, bad_request="required", body={"name": "x"})
    s.x("", "reviewer", "GET", "/api/v1/saved-searches", 200)
    if made.status == 201:
        sid = q(made.json()["id"])
        s.x("", "reviewer", "POST", "/api/v1/saved-searches/%s/run" % sid, 200, body={"limit": 5, "sort": "newest"})
        s.x("no body", "reviewer", "POST", "/api/v1/saved-searches/%s/run" % sid, 200)
        s.x("", "reviewer", "DELETE", "/api/v1/saved-searches/" + sid, 204)
        s.x("after delete", "reviewer", "POST", "/api/v1/saved-searches/%s/run" % sid, 404, body={})
        s.x("deleted already", "reviewer", "DELETE", "/api/v1/saved-searches/" + sid, 404)


def wait_export(s, jid, secs=60):
    deadline = time.time() + secs
    while True:
        resp = s.x("poll", "reviewer", "GET", "/api/v1/exports/" + q(jid), 200, quiet=True)
        state = resp.json().get("state") if resp.status == 200 else None
        if state not in ("queued", "running") or time.time() > deadline:
            return state
        time.sleep(0.1)


def exports(s):
    """Create, poll, manifest, download, delete, and the lists after a delete (issue 14 item 6)."""
    zip_job = s.x("zip", "reviewer", "POST", "/api/v1/exports", 202, body={"query": "subject:razor", "format": "zip"})
    saved = s.x("for an export", "reviewer", "POST", "/api/v1/saved-searches", 201, body={"name": "spec proxy mbox", "query": "re"})
    mbox_job = None
    if saved.status == 201:
        mbox_job = s.x("mbox by saved search", "reviewer", "POST", "/api/v1/exports", 202,
                       body={"saved_search_id": saved.json()["id"], "format": "mbox"})
    s.x("format tar", "reviewer", "POST", "/api/v1/exports", 400, bad_request="allowed values",
        body={"query": "razor", "format": "tar"})
    s.x("neither query nor saved search", "reviewer", "POST", "/api/v1/exports", 400, bad_request="oneOf",
        body={"format": "zip"})
    s.x("unknown id", "reviewer", "GET", "/api/v1/exports/" + secrets.token_hex(8), 404)
    s.x("", "operator", "GET", "/api/v1/exports", 403)
    if zip_job.status != 202 or mbox_job is None or mbox_job.status != 202:
        raise RuntimeError("no export to follow")
    zid, mid = zip_job.json()["id"], mbox_job.json()["id"]
    for jid in (zid, mid):
        state = wait_export(s, jid)
        if state != "done":
            s.r.fail("export %s is done" % jid, "state %s" % state)
    s.x("done", "reviewer", "GET", "/api/v1/exports/" + q(zid), 200)
    s.x("", "reviewer", "GET", "/api/v1/exports/%s/manifest" % q(zid), 200)
    s.x("zip", "reviewer", "GET", "/api/v1/exports/%s/download" % q(zid), 200)
    s.x("mbox", "reviewer", "GET", "/api/v1/exports/%s/download" % q(mid), 200)
    if s.env.get("custodians"):
        s.x("another reviewer's", "scoped", "GET", "/api/v1/exports/" + q(zid), 404)
    s.x("", "reviewer", "GET", "/api/v1/exports", 200)
    s.x("exports in the job shape", "operator", "GET", "/api/v1/jobs", 200)
    s.x("an export", "operator", "GET", "/api/v1/jobs/" + q(zid), 200)
    s.x("an export", "operator", "POST", "/api/v1/jobs/%s/cancel" % q(zid), 409)
    s.x("an export", "operator", "GET", "/api/v1/jobs/%s/events" % q(zid), 404)

    s.x("a done export", "reviewer", "DELETE", "/api/v1/exports/" + q(zid), 204)
    s.x("after a delete", "reviewer", "GET", "/api/v1/exports", 200)
    s.x("deleted", "reviewer", "GET", "/api/v1/exports/" + q(zid), 200)
    # 409 not-ready, as for a job that is not done (410 is for an expired file)
    s.x("deleted", "reviewer", "GET", "/api/v1/exports/%s/download" % q(zid), 409)
    s.x("deleted", "reviewer", "GET", "/api/v1/exports/%s/manifest" % q(zid), 409)
    s.x("after a delete", "operator", "GET", "/api/v1/jobs", 200)
    s.x("after a delete", "admin", "GET", "/api/v1/jobs?kind=export&state=done", 200)
    # deleted at once: cancelled while queued or running, or deleted if it was quick
    quick = s.x("to delete at once", "reviewer", "POST", "/api/v1/exports", 202, body={"query": "*", "format": "zip"})
    if quick.status == 202:
        s.x("a fresh export", "reviewer", "DELETE", "/api/v1/exports/" + q(quick.json()["id"]), 204)
        s.x("after a cancel", "reviewer", "GET", "/api/v1/exports", 200)
        s.x("cancelled", "reviewer", "GET", "/api/v1/exports/" + q(quick.json()["id"]), 200)
        s.x("after a cancel", "operator", "GET", "/api/v1/jobs?kind=export", 200)
    s.x("", "reviewer", "DELETE", "/api/v1/saved-searches/" + q(saved.json()["id"]), 204)


def wait_job(s, jid, secs=20):
    deadline = time.time() + secs
    while True:
        resp = s.x("poll", "operator", "GET", "/api/v1/jobs/" + q(jid), 200, quiet=True)
        state = resp.json().get("state") if resp.status == 200 else None
        if state in FINAL_JOB_STATES or state is None or time.time() > deadline:
            return state
        time.sleep(0.1)


def jobs_and_restores(s):
    s.x("", "operator", "GET", "/api/v1/restore-targets", 200)
    s.x("", "admin", "GET", "/api/v1/restore-targets", 200)
    s.x("", "reviewer", "GET", "/api/v1/restore-targets", 403)
    users = ["alice@corp.test"]
    s.x("dry run, the server is down", "operator", "POST", "/api/v1/restores", 200,
        body={"target": "primary", "users": users, "dry_run": True, "from": "2000-01-01", "margin_after": "5m"})
    s.x("unknown target", "operator", "POST", "/api/v1/restores", 400, body={"target": "no-such-target", "users": users})
    s.x("unknown field", "operator", "POST", "/api/v1/restores", 400, bad_request="additional properties",
        body={"target": "broken", "users": users, "password": "x"})
    s.x("no users", "operator", "POST", "/api/v1/restores", 400, bad_request="fewer than 1", body={"target": "broken", "users": []})
    s.x("", "auditor", "POST", "/api/v1/restores", 403, body={"target": "broken", "users": users})
    made = s.x("a job that fails (no auth file)", "operator", "POST", "/api/v1/restores", 202,
               body={"target": "broken", "users": users, "folder": "Restored", "flags": ["\\Seen"]})
    if made.status != 202:
        raise RuntimeError("no restore job to follow")
    job = made.json()
    loc = made.header("location") or ""
    s.r.check("  ... Location: /api/v1/jobs/%s" % job.get("id"), loc.endswith("/api/v1/jobs/%s" % job.get("id")),
              "Location %r" % loc)
    jid = q(job["id"])
    state = wait_job(s, job["id"])
    s.r.check("  ... the job fails by itself (state %s)" % state, state == "failed", "state %s" % state)
    s.x(state or "", "operator", "GET", "/api/v1/jobs/" + jid, 200)
    ev = s.x("a finished job's stream", "operator", "GET", "/api/v1/jobs/%s/events" % jid, 200,
             headers={"Accept": "text/event-stream"}, timeout=20)
    if ev.status == 200:
        s.r.check("  ... retry, progress events, then event: end", ev.body.startswith(b"retry:") and b"event: end" in ev.body,
                  ev.body[:200])
    s.x("a failed job", "operator", "POST", "/api/v1/jobs/%s/pause" % jid, 409)
    s.x("a failed restore", "admin", "POST", "/api/v1/jobs/%s/resume" % jid, 200)
    s.x("queued again, or running, or failed again", "operator", "POST", "/api/v1/jobs/%s/cancel" % jid, (200, 409))
    state = wait_job(s, job["id"])
    s.x("a %s job" % state, "operator", "POST", "/api/v1/jobs/%s/cancel" % jid, 409)
    s.x("a %s job" % state, "operator", "POST", "/api/v1/jobs/%s/resume" % jid, 200 if state == "failed" else 409)
    wait_job(s, job["id"])
    s.x("", "operator", "GET", "/api/v1/jobs?kind=restore", 200)
    s.x("", "operator", "GET", "/api/v1/jobs?state=failed", 200)
    s.x("bad state", "operator", "GET", "/api/v1/jobs?state=sleeping", 400, bad_request="allowed values")
    s.x("unknown id", "operator", "GET", "/api/v1/jobs/r20990101-000000-000000", 404)
    s.x("unknown id", "operator", "POST", "/api/v1/jobs/r20990101-000000-000000/cancel", 404)
    s.x("unknown id", "operator", "GET", "/api/v1/jobs/r20990101-000000-000000/events", 404)
    s.x("", "reviewer", "GET", "/api/v1/jobs", 403)
    # The service's own maintenance (admins): a verify and a compaction of the index, followed to their end.
    s.x("operators do not start maintenance", "operator", "POST", "/api/v1/jobs", 403, body={"kind": "verify"})
    s.x("a restore has its own route", "admin", "POST", "/api/v1/jobs", 400, bad_request="allowed values",
        body={"kind": "restore"})
    s.x("sample above 100", "admin", "POST", "/api/v1/jobs", 400, bad_request="<= 100", body={"kind": "verify", "sample": 101})
    for body, want in (({"kind": "verify", "sample": 50}, "done"), ({"kind": "reindex", "compact": True}, "done")):
        made = s.x(body["kind"], "admin", "POST", "/api/v1/jobs", 202, body=body)
        if made.status == 202:
            state = wait_job(s, made.json()["id"], secs=120)
            s.r.check("  ... the %s job ends %s (state %s)" % (body["kind"], want, state), state == want, "state %s" % state)


def auditor(s):
    s.x("", "auditor", "GET", "/api/v1/audit/head", 200)
    s.x("the last 50", "auditor", "GET", "/api/v1/audit?after_seq=0&limit=50", 200)
    s.x("export deletes", "auditor", "GET", "/api/v1/audit?action=export.delete&limit=1000", 200)
    s.x("restore creates", "auditor", "GET", "/api/v1/audit?action=restore.create", 200)
    s.x("one user", "auditor", "GET", "/api/v1/audit?user=%s&limit=5" % q(s.users["reviewer"]["name"]), 200)
    s.x("a window", "auditor", "GET", "/api/v1/audit?from=2000-01-01T00:00:00Z&to=2099-01-01T00:00:00Z&limit=3", 200)
    s.x("limit 1001", "auditor", "GET", "/api/v1/audit?limit=1001", 400, bad_request="must be <= 1000")
    s.x("from not a time", "auditor", "GET", "/api/v1/audit?from=yesterday", 400, bad_request="date-time")
    s.x("", "reviewer", "GET", "/api/v1/audit", 403)
    s.x("", "admin", "GET", "/api/v1/audit/head", 403)


# The set the compliance part saves: a catch-all retention (the SpamAssassin sample is from 2002, so
# it has run out: purgeable), a hold on alice's mail, a tag. The preservation lock part, last of all,
# locks it in.
POLICIES = [
    {"name": "keep-10y", "kind": "retention", "keep": "10y"},
    {"name": "alice-hold", "kind": "hold", "case": "4711", "custodians": ["alice@corp.test"]},
    {"name": "razor", "kind": "tag", "query": "subject:razor"},
]


def as_written(policies):
    """Policies as answered (with `effective`) -> as an author writes them (a set to send back)."""
    return [{k: v for k, v in p.items() if k != "effective"} for p in policies]


def explain_one(s, label, query):
    """A message id found by the reviewer (compliance reads no mail, and cannot search), explained."""
    found = s.x(label, "reviewer", "POST", "/api/v1/search", 200, body={"query": query, "limit": 1})
    hits = found.json().get("hits", []) if found.status == 200 else []
    if not hits:
        s.r.fail("a message for %s (%s)" % (label, query), "the reviewer's search found nothing")
        return None
    resp = s.x(label, "compliance", "GET", "/api/v1/messages/%s/policy" % hits[0]["id"], 200)
    return resp.json() if resp.status == 200 else None


def compliance(s):
    """Policies and holds: a set saved, refused and read; what-if; a message's decision; holds placed,
    refused and released (by the other officer); the lock refused without confirmation. The lock
    itself is set by preservation_lock, the last part."""
    s.login("compliance")
    s.login("spare_compliance")
    s.x("", "compliance", "GET", "/api/v1/me", 200)
    names = [p["name"] for p in POLICIES]
    me = s.users["compliance"]["name"]

    # -- the set (replacing the role matrix's, or whatever is in force)
    before = s.x("before", "compliance", "GET", "/api/v1/policies", 200)
    before = [p["name"] for p in before.json().get("policies", [])] if before.status == 200 else []
    saved = s.x("retention, hold, tag", "compliance", "PUT", "/api/v1/policies", 200, body={"policies": POLICIES})
    version = None
    if saved.status == 200:
        d = saved.json()
        version = d.get("version")
        s.r.check("  ... the set as sent, in order, saved by %s, not locked" % me,
                  [p.get("name") for p in d.get("policies", [])] == names and d.get("saved_by") == me
                  and d.get("locked") is False and "lock" not in d, str(d)[:400])
        diff = d.get("diff", {})
        s.r.check("  ... the diff against the set before (%s)" % ", ".join(before),
                  diff.get("added") == [n for n in names if n not in before]
                  and diff.get("removed") == [n for n in before if n not in names]
                  and set(diff.get("changed", [])) <= set(names) & set(before), str(diff))
        again = s.x("the same set again", "compliance", "PUT", "/api/v1/policies", 200, body={"policies": POLICIES})
        if again.status == 200:
            a = again.json()
            version = a.get("version")
            s.r.check("  ... an empty diff, a new version, every policy keeps its effective time",
                      a.get("diff") == {"added": [], "removed": [], "changed": []} and a.get("version") == d["version"] + 1
                      and [p.get("effective") for p in a["policies"]] == [p.get("effective") for p in d["policies"]],
                      str(a)[:400])
    bad = s.x("an unknown kind", "compliance", "PUT", "/api/v1/policies", 400, bad_request="allowed values",
              body={"policies": POLICIES + [{"name": "archive-all", "kind": "archive"}]})
    detail = (bad.problem() or {}).get("detail", "")
    s.r.check("  ... the detail names the 4th policy and its kind", detail.startswith('policy 4 ("archive-all"): "kind"'), detail)
    s.x("an unknown field", "compliance", "PUT", "/api/v1/policies", 400, bad_request="additional properties",
        body={"policies": [{"name": "spam", "kind": "tag", "colour": "red"}]})
    s.x("a bad period", "compliance", "PUT", "/api/v1/policies", 400, bad_request="must match pattern",
        body={"policies": [{"name": "short", "kind": "retention", "keep": "3 days"}]})
    bad = s.x("a retention without keep (valid JSON schema, refused by the server)", "compliance", "PUT",
              "/api/v1/policies", 400, body={"policies": [POLICIES[2], {"name": "no-period", "kind": "retention"}]})
    detail = (bad.problem() or {}).get("detail", "")
    s.r.check("  ... the detail names the 2nd policy and keep", detail.startswith('policy 2 ("no-period"): "keep"'), detail)
    s.x("a query that does not parse", "compliance", "PUT", "/api/v1/policies", 400,
        body={"policies": [{"name": "broken", "kind": "tag", "query": "subject:(razor"}]})
    s.x("no policies", "compliance", "PUT", "/api/v1/policies", 400, bad_request="required", body={})
    s.x("", "reviewer", "PUT", "/api/v1/policies", 403, body={"policies": POLICIES})
    s.x("", "admin", "PUT", "/api/v1/policies", 403, body={"policies": POLICIES})
    got = s.x("", "compliance", "GET", "/api/v1/policies", 200)
    if got.status == 200:
        s.r.check("  ... the refused sets changed nothing (version %s)" % version,
                  got.json().get("version") == version and [p.get("name") for p in got.json().get("policies", [])] == names,
                  str(got.json())[:300])
    s.x("read-only", "admin", "GET", "/api/v1/policies", 200)
    s.x("read-only", "auditor", "GET", "/api/v1/policies", 200)
    s.x("", "operator", "GET", "/api/v1/policies", 403)
    one = s.x("", "compliance", "GET", "/api/v1/policies/keep-10y", 200)
    if one.status == 200:
        p = one.json()
        s.r.check("  ... keep 10y from the date, delete, weight 0, retroactive, with effective",
                  (p.get("keep"), p.get("from"), p.get("action"), p.get("weight"), p.get("retroactive")) == ("10y", "date", "delete", 0, True)
                  and isinstance(p.get("effective"), int), str(p))
    s.x("read-only", "auditor", "GET", "/api/v1/policies/alice-hold", 200)
    s.x("unknown name", "compliance", "GET", "/api/v1/policies/no-such-policy", 404)
    s.x("upper-case name", "compliance", "GET", "/api/v1/policies/Keep-10y", 404, bad_request="must match pattern")
    s.x("", "reviewer", "GET", "/api/v1/policies/keep-10y", 403)

    # -- what-if: nothing saved
    draft = [POLICIES[0], {"name": "bob-review-30d", "kind": "retention", "custodians": ["bob@corp.test"], "keep": "30d",
                           "action": "review", "weight": 5}]
    wi = s.x("a draft", "compliance", "POST", "/api/v1/policies/what-if", 200, body={"policies": draft})
    if wi.status == 200:
        w = wi.json()
        s.r.check("  ... purgeable, by_policy for every draft policy, changes, the set in force as current",
                  isinstance(w.get("purgeable"), int) and set(w.get("by_policy", {})) == {p["name"] for p in draft}
                  and "changes" in w and set(w.get("current", {}).get("by_policy", {})) == set(names), str(w)[:400])
        s.r.check("  ... every message counted once (messages = purgeable + held + review + kept)",
                  w.get("messages") == sum(w.get(k, -1) for k in ("purgeable", "held", "review", "kept")) and w.get("messages", 0) > 0,
                  str(w)[:300])
    s.x("an empty draft", "compliance", "POST", "/api/v1/policies/what-if", 200, body={"policies": []})
    s.x("an unknown kind", "compliance", "POST", "/api/v1/policies/what-if", 400, bad_request="allowed values",
        body={"policies": [{"name": "x", "kind": "purge"}]})
    s.x("", "auditor", "POST", "/api/v1/policies/what-if", 403, body={"policies": draft})
    got = s.x("after a what-if", "compliance", "GET", "/api/v1/policies", 200)
    if got.status == 200:
        s.r.check("  ... the what-if saved nothing", got.json().get("version") == version, str(got.json())[:200])

    # -- a message's decision
    if s.env.get("custodians"):
        d = explain_one(s, "alice's", "custodian:alice@corp.test")
        if d is not None:
            s.r.check("  ... held by alice-hold, every policy's vote", d.get("outcome") == "held" and d.get("holds") == ["alice-hold"]
                      and {v.get("policy") for v in d.get("votes", [])} == set(names) and d.get("version") == version, str(d)[:400])
        d = explain_one(s, "bob's only", "custodian:bob@corp.test NOT custodian:alice@corp.test")
        if d is not None:
            s.r.check("  ... not held, keep-10y among the votes", d.get("outcome") in ("purgeable", "keep") and "holds" not in d
                      and any(v.get("policy") == "keep-10y" and v.get("vote") in ("delete", "keep") for v in d.get("votes", [])),
                      str(d)[:400])
    else:
        explain_one(s, "any", "*")
    s.x("missing id", "compliance", "GET", "/api/v1/messages/%s/policy" % secrets.token_hex(32), 404)
    s.x("upper-case id", "compliance", "GET", "/api/v1/messages/%s/policy" % secrets.token_hex(32).upper(), 404,
        bad_request="must match pattern")
    s.x("compliance reads no mail", "compliance", "GET", "/api/v1/messages/%s" % secrets.token_hex(32), 403)
    s.x("", "reviewer", "GET", "/api/v1/messages/%s/policy" % secrets.token_hex(32), 403)

    # -- holds
    listed = s.x("", "compliance", "GET", "/api/v1/holds", 200)
    if listed.status == 200:
        s.r.check("  ... alice-hold, and the set's version", [h.get("name") for h in listed.json().get("holds", [])] == ["alice-hold"]
                  and listed.json().get("version") == version, str(listed.json())[:300])
    s.x("read-only", "admin", "GET", "/api/v1/holds", 200)
    s.x("read-only", "auditor", "GET", "/api/v1/holds", 200)
    s.x("", "reviewer", "GET", "/api/v1/holds", 403)
    name = "case-%s" % secrets.token_hex(3)
    hold = {"name": name, "case": "4712", "custodians": ["bob@corp.test"], "query": "subject:razor"}
    placed = s.x("", "compliance", "POST", "/api/v1/holds", 201, body=hold)
    if placed.status == 201:
        h = placed.json()
        loc = placed.header("location") or ""
        s.r.check("  ... kind hold, effective, Location /api/v1/policies/%s" % name,
                  h.get("kind") == "hold" and h.get("case") == "4712" and isinstance(h.get("effective"), int)
                  and loc.endswith("/api/v1/policies/" + name), "%s, Location %r" % (h, loc))
        s.x("the hold placed", "auditor", "GET", "/api/v1/policies/" + name, 200)
    s.x("the same name again", "compliance", "POST", "/api/v1/holds", 409, body=hold)
    s.x("a retention's name", "compliance", "POST", "/api/v1/holds", 409, body=dict(hold, name="keep-10y"))
    s.x("with kind hold", "compliance", "POST", "/api/v1/holds", 409, body=dict(hold, kind="hold"))
    s.x("a period on a hold", "compliance", "POST", "/api/v1/holds", 400, bad_request="additional properties",
        body=dict(hold, name=name + "-x", keep="1y"))
    s.x("a case alone", "compliance", "POST", "/api/v1/holds", 400, bad_request="anyOf",
        body={"name": name + "-x", "case": "4712"})
    s.x("kind tag", "compliance", "POST", "/api/v1/holds", 400, bad_request="allowed values",
        body=dict(hold, name=name + "-x", kind="tag"))
    s.x("not an address", "compliance", "POST", "/api/v1/holds", 400, body=dict(hold, name=name + "-x", custodians=["bob"]))
    s.x("", "admin", "POST", "/api/v1/holds", 403, body=dict(hold, name=name + "-x"))
    released = s.x("by the other officer", "spare_compliance", "DELETE", "/api/v1/holds/" + name, 200)
    if released.status == 200:
        s.r.check("  ... released %s, the set's version %s" % (name, (version or 0) + 2),
                  released.json() == {"released": name, "version": (version or 0) + 2}, str(released.json()))
    s.x("released already", "compliance", "DELETE", "/api/v1/holds/" + name, 404)
    s.x("a retention is not a hold", "compliance", "DELETE", "/api/v1/holds/keep-10y", 404)
    s.x("", "admin", "DELETE", "/api/v1/holds/alice-hold", 403)

    # -- purges: proposed, refused to its proposer, read, withdrawn (none runs here: the vault's
    #    mail stays for the parts after this one; tests/policy/purge_test.sh runs one)
    for _ in range(40):  # 409 while the index catches up with mail the parts before captured
        proposed = s.x("a dry run", "compliance", "POST", "/api/v1/purges", (201, 409), quiet=True)
        if proposed.status != 409:
            break
        time.sleep(0.5)
    s.r.check("POST /api/v1/purges: 201 once the index is level", proposed.status == 201, proposed.brief())
    s.x("", "admin", "POST", "/api/v1/purges", 403)
    if proposed.status == 201:
        pg = proposed.json()
        pid = pg.get("id", "")
        s.r.check("  ... pending, its impact, proposed by %s" % s.users["compliance"]["name"],
                  pg.get("state") == "pending" and isinstance(pg.get("messages"), int) and isinstance(pg.get("bytes"), int)
                  and pg.get("proposer", {}).get("user") == s.users["compliance"]["name"]
                  and (proposed.header("location") or "").endswith("/api/v1/purges/" + pid), str(pg)[:300])
        listed = s.x("", "auditor", "GET", "/api/v1/purges", 200)
        if listed.status == 200:
            s.r.check("  ... lists it", pid in [x.get("id") for x in listed.json().get("purges", [])], str(listed.json())[:300])
        s.x("", "reviewer", "GET", "/api/v1/purges", 403)
        s.x("", "admin", "GET", "/api/v1/purges/" + pid, 200)
        s.x("by its proposer", "compliance", "POST", "/api/v1/purges/%s/approve" % pid, 403)
        s.x("", "admin", "POST", "/api/v1/purges/%s/approve" % pid, 403)
        s.x("none yet", "auditor", "GET", "/api/v1/purges/%s/dispositions" % pid, 200)
        s.x("as CSV", "compliance", "GET", "/api/v1/purges/%s/dispositions?format=csv" % pid, 200)
        withdrawn = s.x("by the other officer", "spare_compliance", "DELETE", "/api/v1/purges/" + pid, 200)
        if withdrawn.status == 200:
            s.r.check("  ... cancelled", withdrawn.json().get("state") == "cancelled", str(withdrawn.json())[:300])
        s.x("withdrawn already", "compliance", "DELETE", "/api/v1/purges/" + pid, 409)
        s.x("a withdrawn purge", "spare_compliance", "POST", "/api/v1/purges/%s/approve" % pid, 409)
    s.x("no such purge", "compliance", "GET", "/api/v1/purges/p20990101-000000-000000", 404)
    s.x("no such purge", "spare_compliance", "POST", "/api/v1/purges/p20990101-000000-000000/approve", 404)

    # -- the lock, refused without confirmation (preservation_lock sets it, last of all)
    s.x("confirm false", "compliance", "POST", "/api/v1/policies/lock", 400, bad_request="allowed values", body={"confirm": False})
    s.x("no confirm", "compliance", "POST", "/api/v1/policies/lock", 400, bad_request="required", body={})
    got = s.x("after the holds", "compliance", "GET", "/api/v1/policies", 200)
    if got.status == 200:
        s.r.check("  ... not locked, the set as saved, the hold placed and released: 2 versions more",
                  got.json().get("locked") is False and [p.get("name") for p in got.json()["policies"]] == names
                  and got.json().get("version") == (version or 0) + 2, str(got.json())[:300])


def problems(s):
    s.x("no such route", "reviewer", "GET", "/api/v1/no-such-route", 404, bad_request=ROUTE_NOT_FOUND)
    s.x("wrong method", "reviewer", "DELETE", "/api/v1/me", 405, bad_request=ROUTE_NOT_FOUND)
    s.x("wrong password", None, "POST", "/api/v1/auth/login", 401,
        body={"username": "spec-proxy-nobody", "password": secrets.token_hex(8)})
    s.x("no password", None, "POST", "/api/v1/auth/login", 400, bad_request="required", body={"username": "spec-proxy-nobody"})
    # last: logging out the sessions used above
    for who in ("reviewer", "auditor", "operator", "admin", "scoped"):
        if who in s.tokens:
            s.x("", who, "POST", "/api/v1/auth/logout", 204)


def preservation_lock(s):
    """Last of all, because it cannot be undone in this vault: the preservation lock, and what it
    refuses and allows afterwards."""
    if "compliance" not in s.tokens:
        raise RuntimeError("no compliance session (the compliance part failed to log in)")
    s.login("admin")  # problems() logged the admin out
    s.x("an admin, confirmed", "admin", "POST", "/api/v1/policies/lock", 403, body={"confirm": True})
    before = s.x("before the lock", "compliance", "GET", "/api/v1/policies", 200)
    if before.status != 200 or before.json().get("locked") is not False:
        raise RuntimeError("the set before the lock: %s" % before.brief())
    current = as_written(before.json()["policies"])
    me = s.users["compliance"]["name"]
    lock = s.x("confirmed", "compliance", "POST", "/api/v1/policies/lock", 200, body={"confirm": True})
    if lock.status == 200:
        s.r.check("  ... locked by %s" % me, lock.json().get("locked") is True and lock.json().get("by") == me, str(lock.json()))
    again = s.x("set again, by the other officer", "spare_compliance", "POST", "/api/v1/policies/lock", 200, body={"confirm": True})
    if lock.status == 200 and again.status == 200:
        s.r.check("  ... the lock as it was set (by %s)" % me, again.json() == lock.json(), "%s vs %s" % (again.json(), lock.json()))
    got = s.x("locked", "admin", "GET", "/api/v1/policies", 200)
    if got.status == 200:
        s.r.check("  ... locked, lock.by %s" % me, got.json().get("locked") is True and (got.json().get("lock") or {}).get("by") == me,
                  str(got.json())[:300])
    without = [p for p in current if p["name"] != "keep-10y"]
    refused = s.x("the retention removed", "compliance", "PUT", "/api/v1/policies", 409, body={"policies": without})
    detail = (refused.problem() or {}).get("detail", "")
    s.r.check("  ... the detail names keep-10y", 'retention "keep-10y" would be removed' in detail, detail)
    shorter = [dict(p, keep="5y") if p["name"] == "keep-10y" else p for p in current]
    s.x("the retention shortened", "compliance", "PUT", "/api/v1/policies", 409, body={"policies": shorter})
    s.x("the hold released", "compliance", "DELETE", "/api/v1/holds/alice-hold", 409)
    longer = [dict(p, keep="12y") if p["name"] == "keep-10y" else p for p in current if p["kind"] != "tag"]
    longer.append({"name": "razor-2", "kind": "tag", "query": "subject:razor", "tag": "razor"})
    ok = s.x("the retention extended, a tag replaced", "compliance", "PUT", "/api/v1/policies", 200, body={"policies": longer})
    if ok.status == 200:
        d = ok.json()
        s.r.check("  ... diff: keep-10y changed, razor removed, razor-2 added; still locked",
                  d.get("diff") == {"added": ["razor-2"], "removed": ["razor"], "changed": ["keep-10y"]} and d.get("locked") is True,
                  str(d.get("diff")))
    s.x("a hold added under the lock", "compliance", "POST", "/api/v1/holds", 201,
        body={"name": "case-after-lock", "case": "4713", "custodians": ["bob@corp.test"]})
    s.x("under the lock", "compliance", "GET", "/api/v1/holds", 200)
    for who in ("compliance", "spare_compliance", "admin"):
        s.x("", who, "POST", "/api/v1/auth/logout", 204)


# compliance before auditor (whose reads then include the policy entries); preservation_lock last.
PARTS = [health_and_auth, operator_and_admin, tokens, reviewer, exports, jobs_and_restores, compliance, auditor, problems,
         preservation_lock]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True, help="api_test.sh's ENV.json (users, custodians)")
    ap.add_argument("--proxy", required=True, help="Prism's address, http://127.0.0.1:PORT")
    ap.add_argument("--openapi", required=True, help="the document Prism validates against")
    args = ap.parse_args()
    with open(args.env) as f:
        env = json.load(f)
    s = Session(env, args.proxy, args.openapi)
    started = time.time()
    for part in PARTS:
        try:
            part(s)
        except Exception as e:  # one broken part must not hide the others
            s.r.fail(part.__name__, "%s: %s" % (type(e).__name__, e))
            traceback.print_exc(file=sys.stdout)
    missing = s.ops.missing()
    s.r.check("every operation of the document was exercised through the proxy (%d)" % len(s.ops.ops), not missing,
              "not exercised: %s (add them to tests/api/spec_proxy.py)" % ", ".join("%s %s" % m for m in missing))
    print("spec_proxy: %d exchanges in %.1f s (%d retried after a reset), %d answer(s) that do not conform%s" % (
        s.exchanges, time.time() - started, s.resets, len(s.nonconforming),
        "".join("\n  " + n for n in s.nonconforming)))
    if s.r.failures:
        print("%d check(s) failed" % s.r.failures)
    return 1 if s.r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
