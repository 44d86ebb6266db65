#!/usr/bin/env python3
"""Functional checks of mailvault's REST API v1 over real HTTP(S) on 127.0.0.1.

    api_client.py --env ENV.json --phase tls|plain

api_test.sh starts `mailvault serve`, writes ENV.json and runs this twice: `--phase tls` against the
HTTPS listener (every check), then, after a restart, `--phase plain` against `serve --http` (a
smaller set, plus the audit trail across the restart). Each check prints "ok   NAME" or
"FAIL NAME: why"; the exit status is 1 when any check failed. Python standard library only.

ENV.json:
  {"base": "https://127.0.0.1:PORT", "cafile": "cert.pem", "smtp_port": N,
   "users": {"admin"|"operator"|"reviewer"|"auditor"|"compliance"|"scoped"|"spare"|"spare_compliance":
             {"name", "password", "role"}},
   "sample": "Maildir holding every imported file (cur/)",
   "custodians": {"alice@corp.test": "its Maildir", "bob@corp.test": "its Maildir"} or null
                 (null: `import --custodian` was refused, so nothing can be scoped)}
"scoped" is a reviewer whose scope is {"custodians": [alice]}; "spare" is an auditor used for the
login backoff checks (its name gets locked for a few seconds); "spare_compliance" is a second
compliance officer (spec_proxy.py: one places a hold, the other releases it).

Oracles, all independent of mailvault:
  - search totals and hit sets: tests/oracle/oracle.py evaluating the query over the raw files;
  - message bytes: the corpus files themselves (SHA-256 of the file = the vault id);
  - custodians: which folder each file was imported from;
  - exports: the zip/mbox/manifest bytes, re-hashed here.
"""

import argparse
import csv
import datetime
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import smtplib
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ROLES = ("admin", "operator", "reviewer", "auditor", "compliance")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PROBLEM_BASE = "https://mailvault.example/problems/"
MANIFEST_COLUMNS = ["id", "message_id", "date", "from", "to", "size", "sha256", "custodian"]
# Queries compared with tests/oracle/oracle.py over the sample (chosen so that each has hits in a
# 200-message sample and none depends on a reading of the spec the oracle marks as ambiguous).
ORACLE_QUERIES = ["*", "subject:re", "subject:razor", "from:yahoo", "exmh", "mime:text/html",
                  'body:"click here"']
INDEX_WAIT = 20  # seconds a change (tag, captured message) may take to become searchable


# ---------------------------------------------------------------------------------------------
# HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> value (repeated headers joined with ", ")
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def problem(self):
        """The problem+json object, or None when the body is not one."""
        if not (self.header("content-type") or "").startswith("application/problem+json"):
            return None
        try:
            p = self.json()
        except ValueError:
            return None
        return p if isinstance(p, dict) else None

    def slug(self):
        p = self.problem()
        t = p.get("type", "") if p else ""
        return t[len(PROBLEM_BASE):] if t.startswith(PROBLEM_BASE) else None

    def brief(self):
        text = self.body[:300].decode("utf-8", "replace")
        return "HTTP %d %s" % (self.status, text.replace("\n", " "))


class Client:
    """One new connection per request: simple, and a request never depends on an earlier one."""

    def __init__(self, base, cafile):
        u = urllib.parse.urlsplit(base)
        self.base = base
        self.tls = u.scheme == "https"
        self.host, self.port = u.hostname, u.port
        self.cafile = cafile
        self.ssl_context = ssl.create_default_context(cafile=cafile) if self.tls else None

    def connection(self, timeout=60, ssl_context=None):
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl_context or self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def call(self, method, path, token=None, body=None, data=None, headers=None, params=None,
             timeout=60):
        """body: JSON-encoded; data: sent as is. headers may hold a list of (name, value) pairs."""
        hdrs = [("Accept", "application/json")]
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.append(("Content-Type", "application/json"))
        elif data is not None:
            hdrs.append(("Content-Type", "application/json"))
        if headers:
            hdrs.extend(headers.items() if isinstance(headers, dict) else headers)
        if params:
            path += "?" + urllib.parse.urlencode(params)
        conn = self.connection(timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in hdrs:
                conn.putheader(name, value)
            if data is not None or method in ("POST", "PUT"):
                conn.putheader("Content-Length", str(len(data or b"")))
            conn.endheaders(data)
            r = conn.getresponse()
            payload = r.read()
            merged = {}
            for name, value in r.getheaders():
                k = name.lower()
                merged[k] = merged[k] + ", " + value if k in merged else value
            return Response(r.status, merged, payload)
        finally:
            conn.close()

    def login(self, name, password):
        # docs/openapi.yaml's LoginRequest: {"username", "password"}
        return self.call("POST", "/api/v1/auth/login", body={"username": name, "password": password})


# ---------------------------------------------------------------------------------------------
# Reporting

class Report:
    def __init__(self):
        self.failures = 0

    def ok(self, name):
        print("ok   " + name, flush=True)

    def fail(self, name, why):
        self.failures += 1
        print("FAIL %s: %s" % (name, why), flush=True)

    def check(self, name, cond, why=""):
        if cond:
            self.ok(name)
        else:
            self.fail(name, why or "not as expected")
        return bool(cond)

    def status(self, name, resp, want):
        """Passes when resp.status is want (an int or a tuple of ints)."""
        wants = want if isinstance(want, tuple) else (want,)
        return self.check(name, resp.status in wants,
                          "expected %s, got %s" % ("/".join(map(str, wants)), resp.brief()))

    def problem(self, name, resp, status, slug=None):
        """An RFC 9457 problem with this status (and slug): type, title, status, instance."""
        p = resp.problem()
        why = None
        if resp.status != status:
            why = "expected %d, got %s" % (status, resp.brief())
        elif p is None:
            why = "not application/problem+json: %s (Content-Type %s)" % (resp.brief(), resp.header("content-type"))
        elif p.get("status") != status or not p.get("title") or not p.get("instance"):
            why = "status/title/instance missing or wrong: %s" % p
        elif not str(p.get("type", "")).startswith(PROBLEM_BASE):
            why = "type %r is not under %s" % (p.get("type"), PROBLEM_BASE)
        elif slug is not None and resp.slug() != slug:
            why = "slug %r, expected %r" % (resp.slug(), slug)
        return self.check(name, why is None, why)


def without_instance(resp):
    """A problem body minus "instance", for comparing two refusals that must look the same."""
    p = resp.problem()
    if p is None:
        return resp.body
    return {k: v for k, v in p.items() if k != "instance"}


def comparable_headers(resp):
    """Headers that must not tell two refusals apart: all but Date, Content-Length and any header
    carrying the request id (the problem's "instance")."""
    instance = (resp.problem() or {}).get("instance") or ""
    skip = {"date", "content-length", "x-request-id"}
    return {k: v for k, v in resp.headers.items()
            if k not in skip and not (instance and (instance in v or v in instance))}


def parse_time(value):
    """RFC 3339 -> aware datetime; raises ValueError on anything else."""
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", value):
        raise ValueError("not RFC 3339: %r" % (value,))
    t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("no time zone: %r" % value)
    return t


def lf(data):
    return data.replace(b"\r\n", b"\n")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# The test context: the server, the users, the sample and the oracle's answers

class Ctx:
    def __init__(self, env, phase):
        self.env = env
        self.phase = phase
        self.api = Client(env["base"], env.get("cafile"))
        self.r = Report()
        self.users = env["users"]
        self.tokens = {}        # user key -> session token (filled by the login checks)
        self.files = {}         # vault id -> file bytes
        self.custodian_of = {}  # vault id -> set of custodians
        for path in sorted(os.listdir(os.path.join(env["sample"], "cur"))):
            with open(os.path.join(env["sample"], "cur", path), "rb") as f:
                data = f.read()
            self.files[sha256(data)] = data
        self.custodians = env.get("custodians")
        for cust, folder in (self.custodians or {}).items():
            for path in os.listdir(os.path.join(folder, "cur")):
                with open(os.path.join(folder, "cur", path), "rb") as f:
                    self.custodian_of.setdefault(sha256(f.read()), set()).add(cust)
        self.alice = "alice@corp.test"
        self.bob = "bob@corp.test"
        self.alice_ids = {i for i, c in self.custodian_of.items() if self.alice in c}
        self.bob_only_ids = {i for i, c in self.custodian_of.items() if c == {self.bob}}
        self.oracle = run_oracle(env["sample"], ORACLE_QUERIES)
        self.audit_start_seq = None

    def token(self, who):
        if who not in self.tokens:
            u = self.users[who]
            resp = self.api.login(u["name"], u["password"])
            if resp.status != 200:
                raise RuntimeError("login as %s failed: %s" % (u["name"], resp.brief()))
            self.tokens[who] = resp.json()["token"]
        return self.tokens[who]

    def call(self, who, method, path, **kw):
        return self.api.call(method, path, token=self.token(who) if who else None, **kw)

    def search(self, who, query, **extra):
        return self.call(who, "POST", "/api/v1/search", body=dict({"query": query}, **extra))

    def search_ids(self, who, query, page=1000):
        """Every hit of query, paged; returns (total, [ids in order]); raises on an error."""
        ids, offset, total = [], 0, None
        while True:
            resp = self.search(who, query, offset=offset, limit=page)
            if resp.status != 200:
                raise RuntimeError("search %r as %s: %s" % (query, who, resp.brief()))
            d = resp.json()
            if total is not None and d["total"] != total:
                raise RuntimeError("search %r: total changed between pages (%d, %d)" % (query, total, d["total"]))
            total = d["total"]
            ids += [h["id"] for h in d["hits"]]
            offset += page
            if offset >= total or not d["hits"]:
                return total, ids

    def wait_search(self, who, query, want, secs=INDEX_WAIT):
        """Polls until the hit set of query is want (the index follows changes within seconds)."""
        deadline = time.time() + secs
        while True:
            total, ids = self.search_ids(who, query)
            if set(ids) == want and total == len(want) or time.time() > deadline:
                return total, set(ids)
            time.sleep(0.25)


def run_oracle(maildir, queries):
    sys.path.insert(0, os.path.join(ROOT, "tests", "oracle"))
    import oracle  # tests/oracle/oracle.py: standard library only
    docs = oracle.load_corpus(maildir, oracle.DEFAULTS)
    now = datetime.datetime.now(datetime.timezone.utc)
    parsed = [(q, oracle.parse_query(q)) for q in queries]
    return {q: set(ids) for q, ids in oracle.evaluate(docs, parsed, now).items()}


def set_diff(got, want):
    got, want = set(got), set(want)
    return "%d unexpected (e.g. %s), %d missing (e.g. %s)" % (
        len(got - want), sorted(got - want)[:3], len(want - got), sorted(want - got)[:3])


# ---------------------------------------------------------------------------------------------
# Checks. Each group takes the context; an exception inside a group is one FAIL for the group.

def check_health(c):
    resp = c.api.call("GET", "/healthz")
    c.r.check("GET /healthz anonymous: 200 {\"status\":\"ok\"}",
              resp.status == 200 and resp.json() == {"status": "ok"}, resp.brief())


def check_login(c):
    for who in ("admin", "operator", "reviewer", "auditor", "compliance", "scoped"):
        u = c.users[who]
        resp = c.api.login(u["name"], u["password"])
        if not c.r.status("login as %s (%s)" % (u["name"], u["role"]), resp, 200):
            continue
        d = resp.json()
        why = None
        try:
            expires = parse_time(d.get("expires_at"))
            if expires <= datetime.datetime.now(datetime.timezone.utc):
                why = "expires_at %s is in the past" % d["expires_at"]
        except ValueError as e:
            why = str(e)
        if not str(d.get("token", "")).startswith("mvs_"):
            why = "token %r does not start with mvs_" % d.get("token")
        elif d.get("user") != {"name": u["name"], "role": u["role"]}:
            why = "user %r, expected name %s role %s" % (d.get("user"), u["name"], u["role"])
        c.r.check("  ... token mvs_..., expires_at RFC 3339 in the future, user {name, role}", why is None, why)
        c.tokens[who] = d["token"]

    for who in ("admin", "operator", "reviewer", "auditor", "compliance", "scoped"):
        u = c.users[who]
        resp = c.call(who, "GET", "/api/v1/me")
        if not c.r.status("GET /me as %s" % u["name"], resp, 200):
            continue
        d = resp.json()
        ok = d.get("name") == u["name"] and d.get("role") == u["role"]
        if who == "scoped":
            ok = ok and (d.get("scope") or {}).get("custodians") == [c.alice]
        c.r.check("  ... name, role%s" % (" and scope.custodians [alice]" if who == "scoped" else ""), ok, str(d))

    u = c.users["reviewer"]
    login = c.api.login(u["name"], u["password"])
    if c.r.status("a second session for the reviewer", login, 200):
        t = login.json()["token"]
        c.r.status("POST /auth/logout: 204", c.api.call("POST", "/api/v1/auth/logout", token=t), 204)
        c.r.problem("  ... the logged-out session: 401", c.api.call("GET", "/api/v1/me", token=t), 401, "unauthenticated")
        c.r.status("  ... the reviewer's first session still works", c.call("reviewer", "GET", "/api/v1/me"), 200)


def check_login_backoff(c):
    # Two failures, then the right password at once: after failure k a name waits
    # min(2^(k-1), 60) s, so the third attempt falls inside a 2 s window (the first window, 1 s,
    # is too short to hit reliably with a server that counts whole seconds).
    spare = c.users["spare"]
    wrong = c.api.login(spare["name"], "not-" + spare["password"])
    c.r.problem("wrong password: 401", wrong, 401)
    time.sleep(1.2)
    second = c.api.login(spare["name"], "not-" + spare["password"])
    c.r.status("a second wrong password, 1.2 s later: 401", second, 401)
    again = c.api.login(spare["name"], spare["password"])
    retry = again.header("retry-after") or ""
    c.r.check("the right password at once after that: 429 with Retry-After (backoff, no password check)",
              again.status == 429 and retry.isdigit() and 1 <= int(retry) <= 2,
              "%s, Retry-After %r" % (again.brief(), retry))

    nobody = "nobody-%s" % secrets.token_hex(4)
    wrong_unknown = c.api.login(nobody, "whatever-password")
    c.r.problem("unknown name: 401", wrong_unknown, 401)
    c.r.check("  ... the same body as a wrong password (except instance): no user enumeration",
              without_instance(wrong_unknown) == without_instance(wrong),
              "%s vs %s" % (without_instance(wrong_unknown), without_instance(wrong)))
    time.sleep(1.2)
    c.api.login(nobody, "whatever-password")
    again_unknown = c.api.login(nobody, "whatever-password")
    c.r.check("unknown name: backoff too (counted per name, known or not): 429",
              again_unknown.status == 429 and again_unknown.header("retry-after"), again_unknown.brief())

    if again.status == 429 and retry.isdigit():
        time.sleep(min(int(retry), 65) + 0.3)
        after = c.api.login(spare["name"], spare["password"])
        c.r.status("after Retry-After seconds the right password logs in (200)", after, 200)
    else:
        c.r.fail("after Retry-After seconds the right password logs in", "no usable Retry-After to wait for")


def check_errors(c):
    resp = c.api.call("GET", "/api/v1/me")
    c.r.problem("no credential: 401 unauthenticated", resp, 401, "unauthenticated")
    c.r.check("  ... with WWW-Authenticate: Bearer",
              (resp.header("www-authenticate") or "").startswith("Bearer"), str(resp.header("www-authenticate")))
    forged = c.api.call("GET", "/api/v1/me", token="mvs_" + secrets.token_urlsafe(32))
    c.r.problem("forged session token: 401 unauthenticated", forged, 401, "unauthenticated")
    resp = c.call("reviewer", "GET", "/api/v1/no-such-route")
    c.r.problem("unknown route: 404 not-found", resp, 404, "not-found")
    resp = c.call("reviewer", "DELETE", "/api/v1/me")
    c.r.problem("known path, wrong method: 405 method-not-allowed", resp, 405, "method-not-allowed")
    c.r.check("  ... with an Allow header naming GET", "GET" in (resp.header("allow") or ""), str(resp.header("allow")))
    resp = c.call("operator", "POST", "/api/v1/search", body={"query": "*"})
    c.r.problem("operator searching: 403 forbidden", resp, 403, "forbidden")
    resp = c.call("reviewer", "POST", "/api/v1/search", data=b'{"query": "razor"')
    c.r.problem("malformed JSON: 400 bad-request", resp, 400, "bad-request")
    resp = c.call("reviewer", "POST", "/api/v1/search", body={"query": 5})
    c.r.problem("query of the wrong type: 400 bad-request", resp, 400, "bad-request")
    for extra in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"sort": "sideways"}):
        resp = c.search("reviewer", "razor", **extra)
        c.r.problem("search with %s: 400 bad-request" % json.dumps(extra), resp, 400, "bad-request")
    resp = c.search("reviewer", "(razor OR spam")
    c.r.problem("unparseable query: 400 bad-query", resp, 400, "bad-query")
    # Over 1 MiB: the server answers 413 from the Content-Length alone, before any of the body
    # is sent (so the body is never read into memory), then closes the connection.
    conn = c.api.connection(30)
    try:
        conn.putrequest("POST", "/api/v1/search", skip_accept_encoding=True)
        conn.putheader("Authorization", "Bearer " + c.token("reviewer"))
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str((1 << 20) + 1))
        conn.endheaders()
        r = conn.getresponse()
        c.r.check("body over 1 MiB: 413 before the body is sent", r.status == 413, "%d %r" % (r.status, r.read()[:200]))
    except (OSError, http.client.HTTPException) as e:
        c.r.fail("body over 1 MiB: 413 before the body is sent", "no answer (%s)" % e)
    finally:
        conn.close()


def check_tokens(c):
    resp = c.call("reviewer", "POST", "/api/v1/tokens", body={"label": "api-test", "expires_days": 1})
    if not c.r.status("POST /tokens as reviewer: 201", resp, 201):
        return
    t = resp.json()
    c.r.check("  ... {id, token mvt_..., expires_at}", str(t.get("token", "")).startswith("mvt_") and t.get("id")
              and t.get("expires_at"), str(t))
    me = c.api.call("GET", "/api/v1/me", token=t["token"])
    c.r.check("the API token acts as its user", me.status == 200 and me.json().get("name") == c.users["reviewer"]["name"],
              me.brief())
    listed = c.call("reviewer", "GET", "/api/v1/tokens")
    mine = [x for x in listed.json().get("tokens", [])] if listed.status == 200 else []
    c.r.check("GET /tokens as reviewer lists it, without the secret",
              any(x.get("id") == t["id"] for x in mine) and t["token"] not in listed.body.decode("utf-8", "replace"),
              listed.brief())
    theirs = c.call("operator", "GET", "/api/v1/tokens")
    c.r.check("GET /tokens as operator does not list the reviewer's token (own only)",
              theirs.status == 200 and all(x.get("id") != t["id"] for x in theirs.json().get("tokens", [])),
              theirs.brief())
    everyone = c.call("admin", "GET", "/api/v1/tokens")
    c.r.check("GET /tokens as admin lists it (admin: all)",
              everyone.status == 200 and any(x.get("id") == t["id"] for x in everyone.json().get("tokens", [])),
              everyone.brief())
    for days in (0, 366):
        resp = c.call("reviewer", "POST", "/api/v1/tokens", body={"label": "bad", "expires_days": days})
        c.r.problem("expires_days %d: 400" % days, resp, 400, "bad-request")
    resp = c.call("operator", "DELETE", "/api/v1/tokens/" + urllib.parse.quote(t["id"]))
    c.r.status("DELETE another user's token as operator: 404", resp, 404)
    resp = c.call("reviewer", "DELETE", "/api/v1/tokens/" + urllib.parse.quote(t["id"]))
    c.r.status("DELETE own token: 204", resp, 204)
    resp = c.api.call("GET", "/api/v1/me", token=t["token"])
    c.r.problem("the revoked API token: 401", resp, 401, "unauthenticated")
    # Issue 13 item 6: an admin cannot hold a credential that reads mail or the audit trail, nor
    # one that decides what the archive destroys (compliance).
    for role in ("reviewer", "auditor", "compliance"):
        resp = c.call("admin", "POST", "/api/v1/tokens", body={"user": c.users[role]["name"], "label": "impersonation"})
        c.r.problem("POST /tokens as admin for a %s: 403" % role, resp, 403, "forbidden")
    resp = c.call("admin", "POST", "/api/v1/tokens", body={"user": c.users["operator"]["name"], "label": "monitoring"})
    if c.r.status("POST /tokens as admin for an operator: 201", resp, 201):
        made = resp.json()
        me = c.api.call("GET", "/api/v1/me", token=made["token"])
        c.r.check("  ... /me names the admin as issued_by",
                  me.status == 200 and me.json().get("issued_by") == c.users["admin"]["name"], me.brief())
        resp = c.call("admin", "DELETE", "/api/v1/tokens/" + urllib.parse.quote(made["id"]))
        c.r.status("  ... the admin revokes it: 204", resp, 204)


def check_admin(c):
    resp = c.call("admin", "GET", "/api/v1/users")
    if c.r.status("GET /users as admin", resp, 200):
        users = {u.get("name"): u for u in resp.json().get("users", [])}
        want = {u["name"]: u["role"] for u in c.users.values()}
        c.r.check("  ... lists every user with its role",
                  all(users.get(n, {}).get("role") == r for n, r in want.items()), str(sorted(users)))
        c.r.check("  ... and no password hash", not re.search(rb"scrypt|\$7\$|hash", resp.body, re.I), resp.brief())
    c.r.status("GET /users as auditor (read-only)", c.call("auditor", "GET", "/api/v1/users"), 200)

    name = "apitest-%s" % secrets.token_hex(3)
    password = secrets.token_hex(12)
    body = {"name": name, "role": "reviewer", "password": password}
    resp = c.call("admin", "POST", "/api/v1/users", body=body)
    c.r.check("POST /users as admin: 201 {name, role}", resp.status == 201 and resp.json().get("name") == name
              and resp.json().get("role") == "reviewer", resp.brief())
    c.r.status("  ... again: 409", c.call("admin", "POST", "/api/v1/users", body=body), 409)
    login = c.api.login(name, password)
    c.r.status("  ... the new user logs in", login, 200)
    resp = c.call("admin", "PUT", "/api/v1/users/" + name, body={"disabled": True})
    c.r.check("PUT /users/NAME {disabled: true}: 200, disabled", resp.status == 200 and resp.json().get("disabled") is True,
              resp.brief())
    if login.status == 200:
        me = c.api.call("GET", "/api/v1/me", token=login.json()["token"])
        c.r.problem("  ... the disabled user's session: 401", me, 401, "unauthenticated")
    c.r.check("  ... and it cannot log in", c.api.login(name, password).status in (401, 429), "")
    c.r.status("PUT /users/NO-SUCH: 404", c.call("admin", "PUT", "/api/v1/users/no-such-user-x", body={"disabled": True}), 404)
    c.r.problem("POST /users with a bad role: 400", c.call("admin", "POST", "/api/v1/users", body=dict(
        body, name=name + "b", role="emperor")), 400, "bad-request")

    resp = c.call("admin", "GET", "/api/v1/config")
    if c.r.status("GET /config as admin", resp, 200):
        text = resp.body.decode("utf-8", "replace")
        c.r.check("  ... secrets redacted (no PEM private key, no password)",
                  "PRIVATE KEY" not in text and all(u["password"] not in text for u in c.users.values()), text[:300])

    resp = c.call("operator", "GET", "/api/v1/status")
    if c.r.status("GET /status as operator", resp, 200):
        d = resp.json()
        c.r.check("  ... messages = the number of distinct messages imported (%d)" % len(c.files),
                  d.get("messages") == len(c.files), "messages %r" % d.get("messages"))


def check_search(c):
    for q in ORACLE_QUERIES:
        want = c.oracle[q]
        total, ids = c.search_ids("reviewer", q)
        c.r.check("search %s: total and hits = the oracle's %d" % (q, len(want)),
                  total == len(want) and set(ids) == want and len(ids) == len(set(ids)),
                  "total %d; %s" % (total, set_diff(ids, want)))

    # paging with a small page walks the whole set once
    total, ids = c.search_ids("reviewer", "*", page=7)
    c.r.check("paging * 7 at a time: every message once", len(ids) == len(set(ids)) and set(ids) == c.oracle["*"],
              "%d hits, %d distinct; %s" % (len(ids), len(set(ids)), set_diff(ids, c.oracle["*"])))

    resp = c.search("reviewer", "subject:re", limit=1000)
    if c.r.status("search subject:re (default sort)", resp, 200):
        d = resp.json()
        hits = d["hits"]
        fields = {"id", "message_id", "date", "from", "subject", "size", "tags"}
        bad = [h for h in hits if not fields <= set(h) or not HEX64.match(h["id"]) or h["size"] != len(c.files.get(h["id"], b""))]
        c.r.check("  ... hits carry id, message_id, date, from, subject, size (= the file's), tags", not bad and hits,
                  "e.g. %s" % (bad[:1] or "no hits"))
        c.r.check("  ... offset 0 and limit 1000 echoed", d.get("offset") == 0 and d.get("limit") == 1000, str(
            {k: d.get(k) for k in ("offset", "limit")}))
        try:
            dates = [parse_time(h["date"]) for h in hits]
            c.r.check("  ... newest first", dates == sorted(dates, reverse=True), "dates out of order")
        except ValueError as e:
            c.r.fail("  ... dates are RFC 3339", str(e))
        resp = c.search("reviewer", "subject:re", limit=1000, sort="oldest")
        try:
            dates = [parse_time(h["date"]) for h in resp.json()["hits"]]
            c.r.check("  ... sort oldest: oldest first", resp.status == 200 and dates == sorted(dates), resp.brief())
        except (ValueError, KeyError) as e:
            c.r.fail("  ... sort oldest", "%s: %s" % (e, resp.brief()))
    resp = c.search("reviewer", "razor", sort="relevance", limit=5)
    c.r.check("sort relevance: 200 and at most 5 hits", resp.status == 200 and len(resp.json()["hits"]) <= 5, resp.brief())
    resp = c.search("reviewer", "subject:razor")
    c.r.check("default limit 50", resp.status == 200 and resp.json().get("limit") == 50, resp.brief())


def check_messages(c):
    ids = sorted(c.files)[:20]
    bad_meta, bad_raw = [], []
    for i in ids:
        meta = c.call("reviewer", "GET", "/api/v1/messages/" + i)
        d = meta.json() if meta.status == 200 else {}
        envs = json.dumps(d.get("envelopes", []))
        if meta.status != 200 or d.get("id") != i or d.get("sha256") != i or d.get("size") != len(c.files[i]) \
                or not isinstance(d.get("tags"), list) or not all(cu in envs for cu in c.custodian_of.get(i, ())):
            bad_meta.append("%s: %s" % (i[:12], meta.brief()))
        raw = c.call("reviewer", "GET", "/api/v1/messages/%s/raw" % i)
        if raw.status != 200 or sha256(raw.body) != i or lf(raw.body) != lf(c.files[i]) \
                or not (raw.header("content-type") or "").startswith("message/rfc822"):
            bad_raw.append("%s: %s" % (i[:12], raw.brief()[:80]))
    c.r.check("GET /messages/{id} for %d messages: id, sha256, size as the file, envelopes with the custodian"
              % len(ids), not bad_meta, "; ".join(bad_meta[:3]))
    c.r.check("GET /messages/{id}/raw: message/rfc822, SHA-256 = id, bytes = the corpus file", not bad_raw,
              "; ".join(bad_raw[:3]))

    missing = c.call("reviewer", "GET", "/api/v1/messages/" + secrets.token_hex(32))
    c.r.problem("a missing id: 404", missing, 404)
    real = ids[0]
    for label, bad_id in (("the id in upper case", real.upper()), ("a 6-digit prefix", real[:6]),
                          ("65 digits", real + "0"), ("63 digits", real[:63])):
        resp = c.call("reviewer", "GET", "/api/v1/messages/" + bad_id)
        c.r.check("%s: 404 like a missing id" % label,
                  resp.status == 404 and without_instance(resp) == without_instance(missing), resp.brief())
    resp = c.call("reviewer", "GET", "/api/v1/messages/..%2f" + real[:60])
    c.r.status("an id with ..%2f in it: 404", resp, 404)


def check_scope(c):
    if not c.custodians:
        c.r.fail("scoped reviewer", "`import --custodian` was refused by the binary, so no scope can be tested")
        return
    for cust, want in ((c.alice, c.alice_ids), (c.bob, {i for i, s in c.custodian_of.items() if c.bob in s})):
        total, ids = c.search_ids("reviewer", "custodian:" + cust)
        c.r.check("unscoped reviewer: custodian:%s = the %d messages imported for it" % (cust, len(want)),
                  total == len(want) and set(ids) == want, set_diff(ids, want))
    total, ids = c.search_ids("scoped", "*")
    c.r.check("scoped reviewer (alice): * = alice's %d messages" % len(c.alice_ids),
              total == len(c.alice_ids) and set(ids) == c.alice_ids, "total %d; %s" % (total, set_diff(ids, c.alice_ids)))
    for q in ("custodian:" + c.bob, "NOT custodian:" + c.alice):
        total, ids = c.search_ids("scoped", q)
        c.r.check("scoped reviewer: %s finds nothing" % q, total == 0 and not ids, "total %d" % total)
    resp = c.search("scoped", ") OR (*", limit=1000)
    c.r.check("scoped reviewer: ') OR (*' cannot escape the scope (400 bad-query or only alice's)",
              (resp.status == 400 and resp.slug() == "bad-query") or
              (resp.status == 200 and {h["id"] for h in resp.json()["hits"]} <= c.alice_ids), resp.brief())
    want = c.oracle["subject:re"] & c.alice_ids
    total, ids = c.search_ids("scoped", "subject:re")
    c.r.check("scoped reviewer: subject:re = the oracle's hits among alice's (%d)" % len(want),
              total == len(want) and set(ids) == want, set_diff(ids, want))

    if not c.bob_only_ids or not c.alice_ids:
        c.r.fail("scoped reviewer: by id", "the sample has no bob-only or no alice message")
        return
    bob = sorted(c.bob_only_ids)[0]
    alice = sorted(c.alice_ids)[0]
    c.r.status("scoped reviewer: GET an alice message: 200", c.call("scoped", "GET", "/api/v1/messages/" + alice), 200)
    missing_id = secrets.token_hex(32)
    for suffix, label in (("", "GET /messages/{id}"), ("/raw", "GET /messages/{id}/raw")):
        out = c.call("scoped", "GET", "/api/v1/messages/%s%s" % (bob, suffix))
        missing = c.call("scoped", "GET", "/api/v1/messages/%s%s" % (missing_id, suffix))
        c.r.check("scoped reviewer: %s of a bob message: 404, body identical to a missing id's but instance" % label,
                  out.status == 404 and missing.status == 404 and without_instance(out) == without_instance(missing),
                  "%s vs %s" % (out.brief(), missing.brief()))
        c.r.check("  ... and the same headers (Date, Content-Length, request id aside)",
                  comparable_headers(out) == comparable_headers(missing),
                  "%s vs %s" % (comparable_headers(out), comparable_headers(missing)))
    out = c.call("scoped", "PUT", "/api/v1/messages/%s/tags/apitest-escape" % bob)
    missing = c.call("scoped", "PUT", "/api/v1/messages/%s/tags/apitest-escape" % missing_id)
    c.r.check("scoped reviewer: PUT a tag on a bob message: 404 like a missing id",
              out.status == 404 and without_instance(out) == without_instance(missing), out.brief())
    meta = c.call("reviewer", "GET", "/api/v1/messages/" + bob)
    c.r.check("  ... and the tag was not added", meta.status == 200 and "apitest-escape" not in meta.json().get("tags", []),
              meta.brief())


def check_tags(c):
    i = sorted(c.oracle["subject:razor"])[0]
    tag = "apitest-one"
    c.r.status("PUT /messages/{id}/tags/%s: 204" % tag, c.call("reviewer", "PUT", "/api/v1/messages/%s/tags/%s" % (i, tag)), 204)
    meta = c.call("reviewer", "GET", "/api/v1/messages/" + i)
    c.r.check("  ... GET /messages/{id} lists it", meta.status == 200 and tag in meta.json().get("tags", []), meta.brief())
    total, ids = c.wait_search("reviewer", "tag:" + tag, {i})
    c.r.check("  ... search tag:%s finds exactly that message" % tag, ids == {i} and total == 1, "total %d" % total)
    c.r.status("DELETE /messages/{id}/tags/%s: 204" % tag, c.call("reviewer", "DELETE", "/api/v1/messages/%s/tags/%s" % (i, tag)), 204)
    meta = c.call("reviewer", "GET", "/api/v1/messages/" + i)
    c.r.check("  ... GET /messages/{id} no longer lists it", meta.status == 200 and tag not in meta.json().get("tags", []),
              meta.brief())
    total, ids = c.wait_search("reviewer", "tag:" + tag, set())
    c.r.check("  ... search tag:%s finds nothing" % tag, total == 0, "total %d" % total)

    want = c.oracle["subject:razor"]
    resp = c.call("reviewer", "POST", "/api/v1/search/tags", body={"query": "subject:razor", "add": ["apitest-bulk"]})
    c.r.check("POST /search/tags add: matched = the oracle's %d" % len(want),
              resp.status == 200 and resp.json().get("matched") == len(want), resp.brief())
    total, ids = c.wait_search("reviewer", "tag:apitest-bulk", want)
    c.r.check("  ... search tag:apitest-bulk finds those", ids == want, set_diff(ids, want))
    resp = c.call("reviewer", "POST", "/api/v1/search/tags", body={"query": "tag:apitest-bulk", "remove": ["apitest-bulk"]})
    c.r.check("POST /search/tags remove: matched %d" % len(want),
              resp.status == 200 and resp.json().get("matched") == len(want), resp.brief())
    total, ids = c.wait_search("reviewer", "tag:apitest-bulk", set())
    c.r.check("  ... search tag:apitest-bulk finds nothing", total == 0, "total %d" % total)

    if c.custodians:
        resp = c.call("scoped", "POST", "/api/v1/search/tags", body={"query": "*", "add": ["apitest-scoped"]})
        c.r.check("scoped reviewer: bulk tag * matches only alice's %d" % len(c.alice_ids),
                  resp.status == 200 and resp.json().get("matched") == len(c.alice_ids), resp.brief())
        total, ids = c.wait_search("reviewer", "tag:apitest-scoped", c.alice_ids)
        c.r.check("  ... and only alice's messages carry the tag", ids == c.alice_ids, set_diff(ids, c.alice_ids))
        c.call("reviewer", "POST", "/api/v1/search/tags", body={"query": "tag:apitest-scoped", "remove": ["apitest-scoped"]})


def check_saved_searches(c):
    want = c.oracle["subject:razor"]
    resp = c.call("reviewer", "POST", "/api/v1/saved-searches", body={"name": "razor subjects", "query": "subject:razor"})
    if not c.r.status("POST /saved-searches: 201", resp, 201):
        return
    s = resp.json()
    c.r.check("  ... {id, name, query, created}", s.get("id") and s.get("name") == "razor subjects"
              and s.get("query") == "subject:razor" and s.get("created"), str(s))
    sid = urllib.parse.quote(str(s["id"]), safe="")
    listed = c.call("reviewer", "GET", "/api/v1/saved-searches")
    c.r.check("GET /saved-searches lists it", listed.status == 200 and any(
        x.get("id") == s["id"] for x in listed.json().get("saved_searches", [])), listed.brief())
    other = c.call("scoped", "GET", "/api/v1/saved-searches")
    c.r.check("  ... another reviewer's list does not (own only)", other.status == 200 and all(
        x.get("id") != s["id"] for x in other.json().get("saved_searches", [])), other.brief())
    run = c.call("reviewer", "POST", "/api/v1/saved-searches/%s/run" % sid, body={"limit": 1000})
    ok = run.status == 200 and run.json().get("total") == len(want) and {h["id"] for h in run.json()["hits"]} == want
    c.r.check("POST /saved-searches/{id}/run: the oracle's %d hits" % len(want), ok, run.brief())
    c.r.status("  ... run by another reviewer: 404", c.call("scoped", "POST", "/api/v1/saved-searches/%s/run" % sid, body={}), 404)
    c.r.status("  ... deleted by another reviewer: 404", c.call("scoped", "DELETE", "/api/v1/saved-searches/" + sid), 404)
    c.r.status("DELETE /saved-searches/{id}: 204", c.call("reviewer", "DELETE", "/api/v1/saved-searches/" + sid), 204)
    listed = c.call("reviewer", "GET", "/api/v1/saved-searches")
    c.r.check("  ... no longer listed", listed.status == 200 and all(
        x.get("id") != s["id"] for x in listed.json().get("saved_searches", [])), listed.brief())
    c.r.status("  ... run after delete: 404", c.call("reviewer", "POST", "/api/v1/saved-searches/%s/run" % sid, body={}), 404)


def wait_export(c, who, job_id, secs=300):
    deadline = time.time() + secs
    while True:
        resp = c.call(who, "GET", "/api/v1/exports/" + urllib.parse.quote(str(job_id), safe=""))
        if resp.status != 200:
            raise RuntimeError("GET /exports/%s: %s" % (job_id, resp.brief()))
        job = resp.json()
        if job.get("state") not in ("queued", "running") or time.time() > deadline:
            return job
        time.sleep(0.2)


def start_export(c, who, name, body):
    resp = c.call(who, "POST", "/api/v1/exports", body=body)
    if not c.r.status("%s: POST /exports %s: 202" % (name, json.dumps(body)), resp, 202):
        return None
    job = resp.json()
    loc = resp.header("location") or ""
    c.r.check("  ... Location names the job", loc.endswith("/api/v1/exports/%s" % job.get("id")), "Location %r, job %s" % (loc, job))
    job = wait_export(c, who, job["id"])
    c.r.check("  ... the job is done", job.get("state") == "done", str(job))
    return job if job.get("state") == "done" else None


def download(c, who, job):
    jid = urllib.parse.quote(str(job["id"]), safe="")
    art = c.call(who, "GET", "/api/v1/exports/%s/download" % jid, timeout=300)
    man = c.call(who, "GET", "/api/v1/exports/%s/manifest" % jid)
    return art, man


def check_manifest(c, name, job, manifest, want, eml=None):
    """manifest.csv bytes against the job and the expected ids; eml: id -> bytes from the zip."""
    c.r.check("%s: the manifest's SHA-256 = job.manifest_sha256" % name, sha256(manifest) == job.get("manifest_sha256"),
              "%s vs %s" % (sha256(manifest), job.get("manifest_sha256")))
    first_line = manifest.split(b"\n", 1)[0]
    c.r.check("  ... CRLF line ends (RFC 4180)", first_line.endswith(b"\r") and manifest.endswith(b"\r\n"), repr(first_line))
    rows = list(csv.reader(io.StringIO(manifest.decode("utf-8"), newline="")))
    c.r.check("  ... header row starts %s" % ",".join(MANIFEST_COLUMNS), rows and rows[0][:8] == MANIFEST_COLUMNS,
              repr(rows[:1]))
    if not rows:
        return []
    col = {h: k for k, h in enumerate(rows[0])}
    body = [r for r in rows[1:] if r]
    ids = [r[col["id"]] for r in body]
    c.r.check("  ... one row per message: the oracle's %d, job.total and job.done agree" % len(want),
              set(ids) == want and len(ids) == len(want) and job.get("total") == len(want) and job.get("done") == len(want),
              "%s; total %s done %s" % (set_diff(ids, want), job.get("total"), job.get("done")))
    bad = []
    for r in body:
        i = r[col["id"]]
        data = eml.get(i) if eml is not None else c.files.get(i)
        if r[col["sha256"]] != i or data is None or r[col["size"]] != str(len(data)):
            bad.append("%s sha256 %s size %s" % (i[:12], r[col["sha256"]][:12], r[col["size"]]))
        elif c.custodians and sorted(c.custodian_of.get(i, ())) != sorted(x for x in r[col["custodian"]].split("; ") if x):
            bad.append("%s custodian %r, expected %s" % (i[:12], r[col["custodian"]], sorted(c.custodian_of.get(i, ()))))
    c.r.check("  ... each row: sha256 = id, size = the message's, custodian as imported", not bad, "; ".join(bad[:3]))
    return ids


def check_exports(c):
    want = c.oracle["subject:re"]
    job = start_export(c, "reviewer", "zip", {"query": "subject:re", "format": "zip"})
    if job:
        art, man = download(c, "reviewer", job)
        c.r.check("zip: download 200 application/zip, Content-Disposition attachment",
                  art.status == 200 and (art.header("content-type") or "").startswith("application/zip")
                  and "attachment" in (art.header("content-disposition") or ""), art.brief()[:120])
        c.r.check("  ... SHA-256 of the artefact = job.artefact_sha256", sha256(art.body) == job.get("artefact_sha256"),
                  "%s vs %s" % (sha256(art.body), job.get("artefact_sha256")))
        digest = art.header("repr-digest")
        if digest is not None:
            import base64
            c.r.check("  ... Repr-Digest sha-256 matches", digest.strip() == "sha-256=:%s:" % base64.b64encode(
                hashlib.sha256(art.body).digest()).decode(), digest)
        try:
            z = zipfile.ZipFile(io.BytesIO(art.body))
            names = z.namelist()
            expected = {"manifest.csv"} | {"messages/%s.eml" % i for i in want}
            c.r.check("  ... entries: manifest.csv + messages/<id>.eml for the oracle's %d" % len(want),
                      set(names) == expected and len(names) == len(expected), set_diff(names, expected))
            eml = {n[len("messages/"):-len(".eml")]: z.read(n) for n in names if n.startswith("messages/")}
            bad = [i for i, data in eml.items() if sha256(data) != i or lf(data) != lf(c.files.get(i, b""))]
            c.r.check("  ... every .eml: SHA-256 = its name = the corpus file", not bad, "bad: %s" % bad[:3])
            zman = z.read("manifest.csv") if "manifest.csv" in names else b""
            check_manifest(c, "zip", job, zman, want, eml)
            c.r.check("  ... GET /exports/{id}/manifest: text/csv, the zip's manifest.csv",
                      man.status == 200 and man.body == zman and (man.header("content-type") or "").startswith("text/csv"),
                      man.brief()[:120])
        except zipfile.BadZipFile as e:
            c.r.fail("zip: the artefact is a zip file", str(e))
        jid = urllib.parse.quote(str(job["id"]), safe="")
        for what in ("", "/download", "/manifest"):
            resp = c.call("scoped", "GET", "/api/v1/exports/%s%s" % (jid, what))
            c.r.status("  ... another reviewer: GET /exports/{id}%s 404 (own only)" % what, resp, 404)
        listed = c.call("reviewer", "GET", "/api/v1/exports")
        c.r.check("GET /exports lists the job", listed.status == 200 and any(
            x.get("id") == job["id"] for x in listed.json().get("exports", [])), listed.brief())
        listed = c.call("scoped", "GET", "/api/v1/exports")
        c.r.check("  ... another reviewer's list does not", listed.status == 200 and all(
            x.get("id") != job["id"] for x in listed.json().get("exports", [])), listed.brief())
        jobs = c.call("operator", "GET", "/api/v1/jobs")
        entry = [x for x in jobs.json().get("jobs", [])] if jobs.status == 200 else []
        c.r.check("GET /jobs as operator lists it without the query",
                  any(x.get("id") == job["id"] for x in entry) and all("query" not in x for x in entry), jobs.brief())
        c.r.status("DELETE /exports/{id}: 204", c.call("reviewer", "DELETE", "/api/v1/exports/" + jid), 204)
        after = c.call("reviewer", "GET", "/api/v1/exports/%s/download" % jid)
        c.r.check("  ... the artefact cannot be downloaded any more (4xx)", 400 <= after.status < 500, after.brief())

    want = c.oracle["subject:razor"]
    job = start_export(c, "reviewer", "mbox", {"query": "subject:razor", "format": "mbox"})
    if job:
        art, man = download(c, "reviewer", job)
        c.r.check("mbox: download 200 application/mbox", art.status == 200 and (art.header("content-type") or "").startswith(
            "application/mbox"), art.brief()[:120])
        c.r.check("  ... SHA-256 of the artefact = job.artefact_sha256", sha256(art.body) == job.get("artefact_sha256"), "")
        ids = check_manifest(c, "mbox", job, man.body if man.status == 200 else b"", want)
        seps = [ln for ln in art.body.split(b"\n") if ln.startswith(b"From ")]
        c.r.check("  ... as many \"From \" separators (%d) as manifest rows (%d)" % (len(seps), len(ids)),
                  len(seps) == len(ids) and ids, "")
        asctime = re.compile(rb"^From \S+ (Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$")
        c.r.check("  ... separators are \"From <sender> <asctime>\"", all(asctime.match(s) for s in seps), repr(seps[:2]))
        got = {}
        for m in mboxrd_split(art.body):
            got[sha256(m)] = m
        expected = set()
        for i in want:
            data = c.files[i]
            expected.add(sha256(data if data.endswith(b"\n") else data + b"\n"))
        c.r.check("  ... mboxrd unquoted, each message is a corpus file byte for byte", set(got) == expected,
                  set_diff(got, expected))

    if c.custodians:
        job = start_export(c, "scoped", "scoped zip", {"query": "*", "format": "zip"})
        if job:
            _, man = download(c, "scoped", job)
            check_manifest(c, "scoped zip (alice)", job, man.body if man.status == 200 else b"", c.alice_ids)

    resp = c.call("reviewer", "POST", "/api/v1/saved-searches", body={"name": "for export", "query": "subject:razor"})
    if c.r.status("saved search for an export: 201", resp, 201):
        sid = resp.json()["id"]
        job = start_export(c, "reviewer", "by saved search", {"saved_search_id": sid, "format": "zip"})
        if job:
            c.r.check("  ... total = the oracle's %d" % len(c.oracle["subject:razor"]),
                      job.get("total") == len(c.oracle["subject:razor"]), str(job))
        c.call("reviewer", "DELETE", "/api/v1/saved-searches/" + urllib.parse.quote(str(sid), safe=""))
    resp = c.call("reviewer", "POST", "/api/v1/exports", body={"query": "razor", "format": "tar"})
    c.r.problem("export format tar: 400", resp, 400, "bad-request")


def mboxrd_split(data):
    """Messages of an mboxrd file: split at "From " lines, drop the blank line that belongs to
    the separator, remove one ">" from ">+From " lines."""
    out, cur = [], None
    for line in data.splitlines(keepends=True):
        if line.startswith(b"From "):
            if cur is not None:
                out.append(cur)
            cur = []
            continue
        if cur is None:
            continue  # junk before the first separator: makes the set comparison fail
        cur.append(line[1:] if re.match(rb"^>+From ", line) else line)
    if cur is not None:
        out.append(cur)
    msgs = []
    for lines in out:
        if lines and lines[-1] in (b"\n", b"\r\n"):
            lines = lines[:-1]
        msgs.append(b"".join(lines))
    return msgs


def metric_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})?\s+(\S+)" % re.escape(name), line)
        if m:
            total += float(m.group(2))
    return total


def check_metrics(c):
    resp = c.call("operator", "GET", "/metrics")
    if not c.r.status("GET /metrics as operator", resp, 200):
        return
    text = resp.body.decode("utf-8", "replace")
    c.r.check("  ... text/plain; version=0.0.4", (resp.header("content-type") or "").replace(" ", "").startswith(
        "text/plain;version=0.0.4"), str(resp.header("content-type")))
    for name in ("mailvault_api_requests_total", "mailvault_api_request_duration_seconds_bucket"):
        c.r.check("  ... has %s" % name, re.search(r"^%s[{ ]" % name, text, re.M), "")
    before = metric_sum(text, "mailvault_api_requests_total")
    for _ in range(5):
        c.api.call("GET", "/healthz")
    after = metric_sum(c.call("operator", "GET", "/metrics").body.decode("utf-8", "replace"), "mailvault_api_requests_total")
    c.r.check("  ... mailvault_api_requests_total grows by at least 5 after 5 requests", after - before >= 5,
              "%s -> %s" % (before, after))
    c.r.problem("GET /metrics as reviewer: 403", c.call("reviewer", "GET", "/metrics"), 403, "forbidden")
    c.r.problem("GET /metrics anonymous: 401 (metrics-allow is empty by default)", c.api.call("GET", "/metrics"), 401,
                "unauthenticated")


def tls_probe(port, cafile, max_version):
    """Handshake with a client capped at max_version (SECLEVEL 0, so OpenSSL 3 offers it at all).
    Returns the negotiated version; raises on refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            return t.version()


def permissive_tls_server(cert, key):
    """A throwaway TLS 1.0-1.3 server: the control showing the old-version probe can succeed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(cert, key)
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        for _ in range(2):
            conn, _ = srv.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def raw_http_get(port, path="/healthz", timeout=5):
    """A plain-text HTTP/1.1 request on a bare socket; returns the first bytes of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
        got = b""
        try:
            while len(got) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return got


def check_tls(c):
    if not c.api.tls:
        return
    port = c.api.port
    old = ssl.TLSVersion.TLSv1_1
    try:
        control = tls_probe(permissive_tls_server(c.env["cafile"], c.env["tls_key"]), c.env["cafile"], old)
        c.r.check("control: the TLS 1.1 probe gets through to a permissive server", control == "TLSv1.1", control)
    except (ssl.SSLError, OSError) as e:
        c.r.fail("control: the TLS 1.1 probe gets through to a permissive server", "%s: the check below would prove nothing" % e)
    for label, version in (("1.1", old), ("1.0", ssl.TLSVersion.TLSv1)):
        try:
            got = tls_probe(port, c.env["cafile"], version)
            c.r.fail("a client capped at TLS %s is refused" % label, "negotiated %s" % got)
        except (ssl.SSLError, ConnectionResetError, OSError) as e:
            c.r.ok("a client capped at TLS %s is refused (%s)" % (label, type(e).__name__))
    try:
        got = tls_probe(port, c.env["cafile"], ssl.TLSVersion.TLSv1_2)
        c.r.check("a TLS 1.2 client is served, certificate verified for 127.0.0.1", got == "TLSv1.2", got)
    except (ssl.SSLError, OSError) as e:
        c.r.fail("a TLS 1.2 client is served", str(e))
    answer = raw_http_get(port)
    c.r.check("plain HTTP to the TLS port gets no 200", not re.match(rb"^HTTP/1\.[01] 200", answer), repr(answer[:80]))
    c.r.status("  ... and the listener still serves TLS", c.api.call("GET", "/healthz"), 200)


def check_plain_http(c):
    answer = raw_http_get(c.api.port)
    c.r.check("serve --http: a bare-socket HTTP/1.1 GET /healthz gets 200 (the control for the TLS-port check)",
              re.match(rb"^HTTP/1\.[01] 200", answer), repr(answer[:80]))


def check_capture_to_search(c):
    """A message captured over SMTP while serving becomes searchable and readable by id; its
    body has "From " lines, so its mbox export shows whether mboxrd quoting round-trips."""
    word = "apitestsmtp" + secrets.token_hex(6)
    msg = ("From: Sender <sender@example.test>\r\nTo: r@example.test\r\nSubject: capture probe %s\r\n"
           "Message-ID: <%s@api.test>\r\nDate: %s\r\n\r\nbody of the capture probe\r\n"
           "From the start of a line\r\n>From an already quoted line\r\n\r\nFrom after an empty line\r\n"
           % (word, word, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()))).encode()
    with smtplib.SMTP("127.0.0.1", c.env["smtp_port"], timeout=30) as s:
        s.sendmail("sender@example.test", ["r@example.test"], msg)
    mid = sha256(lf(msg))
    total, ids = c.wait_search("reviewer", "subject:" + word, {mid})
    c.r.check("a message captured over SMTP while serving is found by the API within %d s" % INDEX_WAIT,
              ids == {mid}, "total %d, ids %s, expected %s" % (total, sorted(ids)[:2], mid))
    raw = c.call("reviewer", "GET", "/api/v1/messages/%s/raw" % mid)
    c.r.check("  ... its raw bytes are what was sent, in LF form", raw.status == 200 and raw.body == lf(msg), raw.brief())
    if c.custodians:
        total, _ = c.search_ids("scoped", "subject:" + word)
        c.r.check("  ... the scoped reviewer does not see it (no custodian)", total == 0, "total %d" % total)
    job = start_export(c, "reviewer", "mbox of the captured message", {"query": "subject:" + word, "format": "mbox"})
    if job:
        art, _ = download(c, "reviewer", job)
        got = mboxrd_split(art.body) if art.status == 200 else []
        c.r.check("  ... its \"From \" lines are quoted and come back byte for byte (mboxrd)",
                  got == [lf(msg)], "mbox %r" % art.body[:400])


def read_audit(c, after_seq=None):
    """Every audit entry after after_seq, paged 1000 at a time."""
    entries = []
    params = {"limit": 1000}
    if after_seq is not None:
        params["after_seq"] = after_seq
    while True:
        resp = c.call("auditor", "GET", "/api/v1/audit", params=params)
        if resp.status != 200:
            raise RuntimeError("GET /audit %s: %s" % (params, resp.brief()))
        page = resp.json()["entries"]
        entries += page
        if len(page) < 1000:
            return entries, resp.json().get("head")
        params["after_seq"] = page[-1]["seq"]


def check_chain(c, entries, label):
    fields = {"seq", "time", "user", "role", "source", "action", "target", "status", "details", "prev", "hash"}
    bad = [e for e in entries if not fields <= set(e)]
    c.r.check("%s: every entry has %s" % (label, ", ".join(sorted(fields))), not bad, "e.g. %s" % bad[:1])
    breaks = []
    for a, b in zip(entries, entries[1:]):
        if b.get("seq") != a.get("seq", -2) + 1 or b.get("prev") != a.get("hash"):
            breaks.append("seq %s -> %s" % (a.get("seq"), b.get("seq")))
    hashes = [e.get("hash") for e in entries]
    c.r.check("%s: %d entries, seq +1 and each prev = the previous entry's hash" % (label, len(entries)),
              entries and not breaks and len(set(hashes)) == len(hashes) and all(hashes), "; ".join(breaks[:3]))


def entry_matches(e, want):
    """want: field -> value, or field -> a predicate; "query" looks in details."""
    for k, v in want.items():
        got = (e.get("details") or {}).get("query") if k == "query" else e.get(k)
        if not (v(got) if callable(v) else got == v):
            return False
    return True


def has_entry(entries, **want):
    return any(entry_matches(e, want) for e in entries)


def check_audit(c):
    # a refusal, so the log must hold one from this very moment
    c.call("operator", "POST", "/api/v1/search", body={"query": "audit-refusal-probe"})
    names = {k: u["name"] for k, u in c.users.items()}
    entries, head = read_audit(c, c.audit_start_seq)
    check_chain(c, entries, "GET /audit as auditor (this run)")
    raw_id = sorted(c.files)[0]
    reviewer = names["reviewer"]
    expect = [
        ("auth.login by the reviewer, status 200", dict(action="auth.login", user=reviewer, status=200)),
        # the user is not authenticated yet: the name tried may be the user or the target
        ("auth.login_failed naming the spare user", dict(action="auth.login_failed", status=401)),
        ("search with the query in details", dict(action="search", user=reviewer, query="subject:razor", status=200)),
        ("message.view with the id as target", dict(action="message.view", user=reviewer, target=raw_id)),
        ("message.raw with the id as target", dict(action="message.raw", user=reviewer, target=raw_id)),
        ("tag.add", dict(action="tag.add", user=reviewer)),
        ("tag.remove", dict(action="tag.remove", user=reviewer)),
        ("tag.bulk", dict(action="tag.bulk", user=reviewer)),
        ("saved_search.create", dict(action="saved_search.create", user=reviewer)),
        ("saved_search.run", dict(action="saved_search.run", user=reviewer)),
        ("saved_search.delete", dict(action="saved_search.delete", user=reviewer)),
        ("export.create with the query in details", dict(action="export.create", user=reviewer, query="subject:re")),
        ("export.download", dict(action="export.download", user=reviewer)),
        ("export.delete", dict(action="export.delete", user=reviewer)),
        ("token.create", dict(action="token.create", user=reviewer)),
        ("token.revoke", dict(action="token.revoke", user=reviewer)),
        ("auth.logout", dict(action="auth.logout")),
        ("user.create by the admin", dict(action="user.create", user=names["admin"])),
        ("user.update by the admin", dict(action="user.update", user=names["admin"])),
        ("config.read by the admin", dict(action="config.read", user=names["admin"])),
        # SPEC: refusals are audited "with the status" (the action name is not fixed for them)
        ("the operator's refused search, status 403", dict(user=names["operator"], status=403)),
    ]
    if c.custodians and c.bob_only_ids:
        bob = sorted(c.bob_only_ids)[0]
        expect.append(("the scoped reviewer's 404 on a bob message, with its id", dict(
            user=names["scoped"], status=404, target=bob)))
    for label, want in expect:
        c.r.check("audit has %s" % label, has_entry(entries, **want),
                  "no entry with %s" % {k: ("<predicate>" if callable(v) else v) for k, v in want.items()})
    failed = [e for e in entries if e.get("action") == "auth.login_failed"]
    c.r.check("  ... and the failed login names the spare user (as user or target)",
              any(names["spare"] in (e.get("user"), e.get("target")) for e in failed), str(failed[:2]))
    request_actions = ("auth.login", "search", "message.view", "message.raw", "tag.add", "export.create",
                       "export.download", "saved_search.create")
    mine = [e for e in entries if e.get("user") == reviewer and e.get("action") in request_actions]
    c.r.check("the reviewer's request entries carry the client address as source",
              mine and all("127.0.0.1" in str(e.get("source")) for e in mine),
              "sources %s" % sorted({(e.get("action"), str(e.get("source"))) for e in mine})[:5])

    resp = c.call("auditor", "GET", "/api/v1/audit/head")
    h = resp.json() if resp.status == 200 else {}
    last = entries[-1] if entries else {}
    c.r.check("GET /audit/head: at or past the last entry read", resp.status == 200 and h.get("seq", -1) >= last.get("seq", 0)
              and (h.get("seq") != last.get("seq") or h.get("hash") == last.get("hash")), resp.brief())
    resp = c.call("auditor", "GET", "/api/v1/audit", params={"action": "search", "limit": 1000})
    got = resp.json().get("entries", []) if resp.status == 200 else []
    c.r.check("GET /audit?action=search: only search entries", got and all(e.get("action") == "search" for e in got), resp.brief())
    resp = c.call("auditor", "GET", "/api/v1/audit", params={"user": names["admin"], "limit": 1000})
    got = resp.json().get("entries", []) if resp.status == 200 else []
    c.r.check("GET /audit?user=ADMIN: only the admin's entries", got and all(e.get("user") == names["admin"] for e in got),
              resp.brief())
    resp = c.call("auditor", "GET", "/api/v1/audit", params={"limit": 1})
    c.r.check("GET /audit?limit=1: one entry", resp.status == 200 and len(resp.json().get("entries", [])) == 1, resp.brief())
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    resp = c.call("auditor", "GET", "/api/v1/audit", params={"from": future})
    c.r.check("GET /audit?from=an hour ahead: no entries", resp.status == 200 and resp.json().get("entries") == [], resp.brief())
    c.r.problem("GET /audit?limit=1001: 400", c.call("auditor", "GET", "/api/v1/audit", params={"limit": 1001}), 400,
                "bad-request")
    entries, _ = read_audit(c, c.audit_start_seq)
    c.r.check("audit.read entries for the auditor's reads", has_entry(entries, action="audit.read", user=names["auditor"]), "")


def check_audit_across_restart(c):
    entries, _ = read_audit(c)
    check_chain(c, entries, "the whole audit log after a restart")
    starts = [e["seq"] for e in entries if e.get("action") == "server.start"]
    stops = [e["seq"] for e in entries if e.get("action") == "server.stop"]
    c.r.check("server.start twice and a server.stop between them",
              len(starts) >= 2 and any(starts[-2] < s < starts[-1] for s in stops), "starts %s, stops %s" % (starts, stops))
    c.r.check("the first run's export.create and message.raw are still there",
              has_entry(entries, action="export.create") and has_entry(entries, action="message.raw"), "")


def note_audit_start(c):
    resp = c.call("auditor", "GET", "/api/v1/audit/head")
    if c.r.status("GET /audit/head as auditor", resp, 200):
        c.audit_start_seq = resp.json().get("seq")


def check_search_plain(c):
    for q in ("subject:razor", "from:yahoo"):
        want = c.oracle[q]
        total, ids = c.search_ids("reviewer", q)
        c.r.check("search %s over plain HTTP: the oracle's %d" % (q, len(want)), total == len(want) and set(ids) == want,
                  set_diff(ids, want))
    i = sorted(c.oracle["subject:razor"])[0]
    raw = c.call("reviewer", "GET", "/api/v1/messages/%s/raw" % i)
    c.r.check("raw over plain HTTP: SHA-256 = id", raw.status == 200 and sha256(raw.body) == i, raw.brief())
    if c.custodians:
        total, ids = c.search_ids("scoped", "*")
        c.r.check("scoped reviewer after the restart: * = alice's %d" % len(c.alice_ids), set(ids) == c.alice_ids,
                  set_diff(ids, c.alice_ids))


PHASES = {
    "tls": [check_health, note_audit_start, check_login, check_login_backoff, check_errors, check_tokens,
            check_admin, check_search, check_messages, check_scope, check_tags, check_saved_searches,
            check_exports, check_metrics, check_tls, check_capture_to_search, check_audit],
    "plain": [check_health, check_plain_http, check_login, check_search_plain, check_audit_across_restart],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True)
    ap.add_argument("--phase", choices=sorted(PHASES), required=True)
    ap.add_argument("--only", help="comma-separated check function names (debugging)")
    args = ap.parse_args()
    with open(args.env) as f:
        env = json.load(f)
    c = Ctx(env, args.phase)
    empty = [q for q in ORACLE_QUERIES if not c.oracle[q]]
    if empty:
        print("FAIL sample: the oracle finds nothing for %s in %s; use a larger sample" % (empty, env["sample"]))
        return 1
    for fn in PHASES[args.phase]:
        if args.only and fn.__name__ not in args.only.split(","):
            continue
        try:
            fn(c)
        except Exception as e:  # one broken group must not hide the others
            c.r.fail(fn.__name__, "%s: %s" % (type(e).__name__, e))
            traceback.print_exc(file=sys.stdout)
    print("%d check(s) failed" % c.r.failures if c.r.failures else "all API checks passed (%s)" % args.phase)
    return 1 if c.r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
