#!/usr/bin/env python3
"""The role matrix of mailvault's REST API v1, over real HTTP(S), as docs/openapi.yaml states it.

    role_matrix.py --env ENV.json --openapi docs/openapi.yaml [--mailvault path/to/mailvault]

ENV.json is api_test.sh's (see api_client.py). Steps:
  1. Read every operation of docs/openapi.yaml with its `x-roles` (a list of admin, operator,
     reviewer, auditor, compliance; ["anonymous"] for open routes; "any" = the five roles). The
     operations must be exactly the routes of the API contract (SPEC_ROUTES below, the table of
     SPEC.md), with the same roles, so the matrix follows documentation that follows the contract.
  2. With --mailvault: `mailvault api routes --json` (the server's own route table) must list
     the same operations with the same roles, both ways.
  3. Call every operation as: anonymous; forged session and API tokens (right prefix, random
     bytes); a logged-out session; a revoked API token; a disabled user's session; and each role
     (admin, operator, reviewer, auditor, compliance, a scoped reviewer), once with a session and
     once with an API token. Expected, exactly:
       - no valid credential, non-anonymous route: 401, problem slug "unauthenticated",
         WWW-Authenticate: Bearer;
       - a role the table refuses: 403, slug "forbidden";
       - a role the table allows, and anyone on an anonymous route: neither 401 nor 403 (nor
         405 or 5xx: the route must exist and not break). A dummy path value (an unknown user
         name, token id, policy or hold name) may then answer 404, and a body the handler
         refuses on purpose (`{"confirm": false}` to the preservation lock, which must never be
         set here) 400: those count as allowed.
     Bad credentials are not tried on anonymous routes (the contract does not say whether a
     server must ignore or refuse a stray bad token there).
Prints "ok   ..." per operation and "FAIL ..." per wrong answer; exit status 1 on any failure.
Side effects on the vault are small: one user, tokens, one saved search, one (empty) export, a
policy set holding one tag policy (the set in force is replaced by it), and holds on an address
nobody uses, each with a fresh name (no lock is ever set).
"""

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_client import Client, Report  # noqa: E402

import yaml  # python3-yaml  # noqa: E402

ROLES = ("admin", "operator", "reviewer", "auditor", "compliance")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

# SPEC.md's table: method, path, roles ("any" = every role; "anonymous" = no credential needed).
SPEC_ROUTES = """
GET    /healthz                                  anonymous
GET    /metrics                                  admin operator
POST   /api/v1/auth/login                        anonymous
POST   /api/v1/auth/logout                       any
GET    /api/v1/me                                any
GET    /api/v1/users                             admin auditor
POST   /api/v1/users                             admin
PUT    /api/v1/users/{name}                      admin
GET    /api/v1/config                            admin
GET    /api/v1/tokens                            any
POST   /api/v1/tokens                            any
DELETE /api/v1/tokens/{id}                       any
GET    /api/v1/status                            admin operator
GET    /api/v1/offsite                           admin operator
GET    /api/v1/jobs                              admin operator
POST   /api/v1/jobs                              admin
GET    /api/v1/jobs/{id}                         admin operator
POST   /api/v1/jobs/{id}/cancel                  admin operator
POST   /api/v1/jobs/{id}/pause                   admin operator
POST   /api/v1/jobs/{id}/resume                  admin operator
GET    /api/v1/jobs/{id}/events                  admin operator
POST   /api/v1/restores                          admin operator
GET    /api/v1/restore-targets                   admin operator
POST   /api/v1/search                            reviewer
POST   /api/v1/search/tags                       reviewer
GET    /api/v1/messages/{id}                     reviewer
GET    /api/v1/messages/{id}/raw                 reviewer
PUT    /api/v1/messages/{id}/tags/{tag}          reviewer
DELETE /api/v1/messages/{id}/tags/{tag}          reviewer
GET    /api/v1/saved-searches                    reviewer
POST   /api/v1/saved-searches                    reviewer
POST   /api/v1/saved-searches/{id}/run           reviewer
DELETE /api/v1/saved-searches/{id}               reviewer
GET    /api/v1/exports                           reviewer
POST   /api/v1/exports                           reviewer
GET    /api/v1/exports/{id}                      reviewer
GET    /api/v1/exports/{id}/download             reviewer
GET    /api/v1/exports/{id}/manifest             reviewer
DELETE /api/v1/exports/{id}                      reviewer
GET    /api/v1/audit                             auditor
GET    /api/v1/audit/head                        auditor
GET    /api/v1/policies                          compliance admin auditor
PUT    /api/v1/policies                          compliance
GET    /api/v1/policies/{name}                   compliance admin auditor
POST   /api/v1/policies/what-if                  compliance
POST   /api/v1/policies/lock                     compliance
GET    /api/v1/messages/{id}/policy              compliance
GET    /api/v1/holds                             compliance admin auditor
POST   /api/v1/holds                             compliance
DELETE /api/v1/holds/{name}                      compliance
GET    /api/v1/purges                            compliance admin auditor
POST   /api/v1/purges                            compliance
GET    /api/v1/purges/{id}                       compliance admin auditor
DELETE /api/v1/purges/{id}                       compliance
POST   /api/v1/purges/{id}/approve               compliance
GET    /api/v1/purges/{id}/dispositions          compliance auditor
"""


def normalise_roles(roles, where):
    """x-roles -> frozenset of role names, or frozenset({"anonymous"}). Raises ValueError."""
    if isinstance(roles, str):
        roles = roles.replace(",", " ").split()
    if not isinstance(roles, list) or not roles:
        raise ValueError("%s: x-roles must be a non-empty list, got %r" % (where, roles))
    out = set()
    for r in roles:
        r = str(r).strip().lower()
        if r in ("any", "*", "any role"):
            out.update(ROLES)
        elif r in ROLES or r == "anonymous":
            out.add(r)
        else:
            raise ValueError("%s: unknown role %r in x-roles" % (where, r))
    if "anonymous" in out and len(out) > 1:
        out = {"anonymous"}  # anonymous routes are open to everyone anyway
    return frozenset(out)


def template_key(method, path):
    """("GET", "/api/v1/messages/{}") : parameter names do not matter when comparing tables."""
    return method.upper(), re.sub(r"\{[^}]*\}", "{}", path)


def spec_table():
    out = {}
    for line in SPEC_ROUTES.strip().splitlines():
        method, path, *roles = line.split()
        out[template_key(method, path)] = (path, normalise_roles(roles, "SPEC"))
    return out


def server_prefix(servers):
    if not servers:
        return ""
    path = urllib.parse.urlsplit(str(servers[0].get("url", ""))).path
    return path.rstrip("/")


def openapi_table(doc):
    """{(METHOD, template): (path as documented, roles)}; raises ValueError on a missing x-roles."""
    out = {}
    problems = []
    root_prefix = server_prefix(doc.get("servers"))
    for path, item in (doc.get("paths") or {}).items():
        path_prefix = server_prefix(item.get("servers")) if item.get("servers") else root_prefix
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            prefix = server_prefix(op.get("servers")) if op.get("servers") else path_prefix
            where = "%s %s" % (method.upper(), path)
            if "x-roles" not in op:
                problems.append("%s has no x-roles" % where)
                continue
            try:
                roles = normalise_roles(op["x-roles"], where)
            except ValueError as e:
                problems.append(str(e))
                continue
            full = prefix + path
            out[template_key(method, full)] = (full, roles)
    return out, problems


def route_dump(mailvault):
    p = subprocess.run([mailvault, "api", "routes", "--json"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("`mailvault api routes --json` exited %d: %s" % (p.returncode, p.stderr.strip()[:300]))
    out = {}
    for r in json.loads(p.stdout):
        out[template_key(r["method"], r["path"])] = (r["path"], normalise_roles(r["roles"], "route dump"))
    return out


def compare_tables(rep, name_a, a, name_b, b):
    """Both ways: every operation of a in b with the same roles, and nothing extra in b."""
    fmt = lambda roles: ",".join(sorted(roles))  # noqa: E731
    bad = 0
    for key, (path, roles) in sorted(a.items()):
        if key not in b:
            rep.fail("%s %s is in %s" % (key[0], path, name_b), "missing there (%s has it: %s)" % (name_a, fmt(roles)))
            bad += 1
        elif b[key][1] != roles:
            rep.fail("%s %s: the same roles in %s and %s" % (key[0], path, name_a, name_b),
                     "%s says %s, %s says %s" % (name_a, fmt(roles), name_b, fmt(b[key][1])))
            bad += 1
    for key, (path, roles) in sorted(b.items()):
        if key not in a:
            rep.fail("%s %s (%s) is in %s" % (key[0], path, name_b, name_a), "only %s has it" % name_b)
            bad += 1
    if not bad:
        rep.ok("%s and %s list the same %d operations with the same roles" % (name_a, name_b, len(a)))


# ---------------------------------------------------------------------------------------------

class Caller:
    def __init__(self, label, role=None, token=None, user=None, kind="session"):
        self.label = label
        self.role = role      # None: no valid credential
        self.token = token
        self.user = user      # the user key in ENV.json (for fresh logout credentials)
        self.kind = kind      # "session" or "api-token" for role callers


class Matrix:
    def __init__(self, env, rep):
        self.env = env
        self.rep = rep
        self.api = Client(env["base"], env.get("cafile"))
        self.users = env["users"]
        self.sessions = {}

    def login(self, who):
        u = self.users[who]
        resp = self.api.login(u["name"], u["password"])
        if resp.status != 200:
            raise RuntimeError("login as %s: %s" % (u["name"], resp.brief()))
        return resp.json()["token"]

    def session(self, who):
        if who not in self.sessions:
            self.sessions[who] = self.login(who)
        return self.sessions[who]

    def api_token(self, who, label="matrix"):
        resp = self.api.call("POST", "/api/v1/tokens", token=self.session(who), body={"label": label, "expires_days": 1})
        if resp.status != 201:
            raise RuntimeError("POST /tokens as %s: %s" % (who, resp.brief()))
        return resp.json()

    def callers(self):
        bad = [Caller("anonymous"),
               Caller("forged mvs_ token", token="mvs_" + secrets.token_urlsafe(32)),
               Caller("forged mvt_ token", token="mvt_" + secrets.token_urlsafe(32))]
        # a session after logout
        t = self.login("reviewer")
        resp = self.api.call("POST", "/api/v1/auth/logout", token=t)
        if resp.status != 204:
            raise RuntimeError("logout: %s" % resp.brief())
        bad.append(Caller("logged-out session", token=t))
        # an API token after revocation
        tok = self.api_token("reviewer", "matrix-revoked")
        resp = self.api.call("DELETE", "/api/v1/tokens/" + urllib.parse.quote(str(tok["id"]), safe=""),
                             token=self.session("reviewer"))
        if resp.status != 204:
            raise RuntimeError("DELETE /tokens/ID: %s" % resp.brief())
        bad.append(Caller("revoked API token", token=tok["token"]))
        # a disabled user's session
        name, password = "matrix-disabled-%s" % secrets.token_hex(3), secrets.token_hex(12)
        resp = self.api.call("POST", "/api/v1/users", token=self.session("admin"),
                             body={"name": name, "role": "reviewer", "password": password})
        if resp.status != 201:
            raise RuntimeError("POST /users: %s" % resp.brief())
        login = self.api.login(name, password)
        if login.status != 200:
            raise RuntimeError("login as the new user: %s" % login.brief())
        resp = self.api.call("PUT", "/api/v1/users/" + name, token=self.session("admin"), body={"disabled": True})
        if resp.status != 200:
            raise RuntimeError("PUT /users/NAME disabled: %s" % resp.brief())
        bad.append(Caller("disabled user's session", token=login.json()["token"]))

        good = []
        for who in ("admin", "operator", "reviewer", "auditor", "compliance", "scoped"):
            role = self.users[who]["role"]
            label = self.users[who]["name"] + (" (scoped reviewer)" if who == "scoped" else " (%s)" % role)
            good.append(Caller(label + " session", role=role, token=self.session(who), user=who))
            good.append(Caller(label + " API token", role=role, token=self.api_token(who)["token"], user=who,
                               kind="api-token"))
        return bad, good

    def fixtures(self):
        """Real path values, so that allowed calls reach the handler's real work."""
        rv = self.session("reviewer")
        resp = self.api.call("POST", "/api/v1/search", token=rv, body={"query": "*", "limit": 1})
        if resp.status != 200 or not resp.json().get("hits"):
            raise RuntimeError("search * as reviewer: %s" % resp.brief())
        message = resp.json()["hits"][0]["id"]
        resp = self.api.call("POST", "/api/v1/saved-searches", token=rv, body={"name": "matrix", "query": "*"})
        if resp.status != 201:
            raise RuntimeError("POST /saved-searches: %s" % resp.brief())
        saved = str(resp.json()["id"])
        resp = self.api.call("POST", "/api/v1/exports", token=rv, body={"query": "tag:matrix-none", "format": "zip"})
        if resp.status != 202:
            raise RuntimeError("POST /exports: %s" % resp.brief())
        export = str(resp.json()["id"])
        token = str(self.api_token("reviewer", "matrix-victim")["id"])
        # keyed by the path segment before the parameter
        return {"messages": message, "saved-searches": saved, "exports": export, "tokens": token,
                "users": "matrix-no-such-user", "tags": "matrix-tag", "policies": "matrix-no-such-policy",
                "holds": "matrix-no-such-hold", "purges": "p20990101-000000-000000"}

    def body_for(self, method, path):
        key = template_key(method, path)
        bodies = {
            ("POST", "/api/v1/auth/login"): {"name": self.users["auditor"]["name"],
                                             "password": self.users["auditor"]["password"]},
            ("POST", "/api/v1/users"): {"name": "matrix-%s" % secrets.token_hex(4), "role": "auditor",
                                        "password": secrets.token_hex(12)},
            ("PUT", "/api/v1/users/{}"): {"disabled": False},
            ("POST", "/api/v1/tokens"): {"label": "matrix", "expires_days": 1},
            ("POST", "/api/v1/search"): {"query": "*", "limit": 1},
            ("POST", "/api/v1/search/tags"): {"query": "tag:matrix-none", "add": ["matrix-bulk"]},
            ("POST", "/api/v1/saved-searches"): {"name": "matrix", "query": "*"},
            ("POST", "/api/v1/saved-searches/{}/run"): {"limit": 1},
            ("POST", "/api/v1/exports"): {"query": "tag:matrix-none", "format": "zip"},
            ("POST", "/api/v1/jobs"): {"kind": "verify", "sample": 1},
            # Safe to send again and again: the set becomes one tag policy (no retention or hold
            # to lock in), a what-if saves nothing, the lock is never confirmed (400 for the
            # allowed role) and every hold has a fresh name (on an address nobody uses).
            ("PUT", "/api/v1/policies"): {"policies": [{"name": "matrix-tag", "kind": "tag", "query": "subject:razor"}]},
            ("POST", "/api/v1/policies/what-if"): {"policies": [
                {"name": "matrix-30d", "kind": "retention", "keep": "30d", "action": "review"},
                {"name": "matrix-hold", "kind": "hold", "custodians": ["matrix@corp.test"]}]},
            ("POST", "/api/v1/policies/lock"): {"confirm": False},
            ("POST", "/api/v1/holds"): {"name": "matrix-hold-%s" % secrets.token_hex(4), "case": "matrix",
                                        "custodians": ["matrix@corp.test"]},
        }
        if key in bodies:
            return bodies[key]
        return {} if method in ("POST", "PUT") else None


def fill_path(path, values):
    segs = path.split("/")
    for k, s in enumerate(segs):
        if s.startswith("{") and s.endswith("}"):
            prev = segs[k - 1] if k else ""
            segs[k] = urllib.parse.quote(values.get(prev, "matrix-dummy"), safe="")
    return "/".join(segs)


def judge(op_roles, caller, resp):
    """None when resp is what the table says, else why not."""
    if "anonymous" in op_roles:
        if resp.status in (401, 403, 405) or resp.status >= 500:
            return "open route answered %s" % resp.brief()
        return None
    if caller.role is None:
        if resp.status != 401:
            return "expected 401, got %s" % resp.brief()
        if resp.slug() != "unauthenticated":
            return "401 without problem slug unauthenticated: %s" % resp.brief()
        if not (resp.header("www-authenticate") or "").startswith("Bearer"):
            return "401 without WWW-Authenticate: Bearer (got %r)" % resp.header("www-authenticate")
        return None
    if caller.role in op_roles:
        if resp.status in (401, 403, 405) or resp.status >= 500:
            return "allowed role answered %s" % resp.brief()
        return None
    if resp.status != 403:
        return "expected 403, got %s" % resp.brief()
    if resp.slug() != "forbidden":
        return "403 without problem slug forbidden: %s" % resp.brief()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", required=True)
    ap.add_argument("--openapi", required=True)
    ap.add_argument("--mailvault", help="the mailvault binary, to compare `api routes --json`")
    args = ap.parse_args()
    rep = Report()
    with open(args.env) as f:
        env = json.load(f)

    try:
        with open(args.openapi) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        rep.fail("read %s" % args.openapi, str(e))
        return 1
    table, problems = openapi_table(doc)
    for p in problems:
        rep.fail("openapi.yaml x-roles", p)
    compare_tables(rep, "SPEC.md's table", spec_table(), "docs/openapi.yaml", table)
    if args.mailvault:
        try:
            compare_tables(rep, "docs/openapi.yaml", table, "`mailvault api routes --json`", route_dump(args.mailvault))
        except (RuntimeError, ValueError, KeyError, TypeError, OSError, subprocess.SubprocessError) as e:
            rep.fail("`mailvault api routes --json`", str(e))

    m = Matrix(env, rep)
    try:
        bad, good = m.callers()
        values = m.fixtures()
    except (RuntimeError, KeyError, ValueError) as e:
        rep.fail("role matrix setup", str(e))
        return 1

    # DELETEs last, so that the objects they remove stay there for the other calls; logout uses a
    # fresh credential per caller, so that it revokes nothing the matrix still needs.
    ops = [(k[0], path, roles) for k, (path, roles) in table.items()]
    ops.sort(key=lambda o: o[0] == "DELETE")
    for method, path, roles in ops:
        url = fill_path(path, values)
        logout = template_key(method, path) == ("POST", "/api/v1/auth/logout")
        who = good if "anonymous" in roles else bad + good
        wrong = []
        for caller in who:
            token = caller.token
            if logout and caller.role is not None:
                token = m.login(caller.user) if caller.kind == "session" else m.api_token(caller.user)["token"]
            resp = m.api.call(method, url, token=token, body=m.body_for(method, path))
            why = judge(roles, caller, resp)
            if why:
                wrong.append((caller.label, why))
        if "anonymous" in roles:
            resp = m.api.call(method, url, body=m.body_for(method, path))
            why = judge(roles, Caller("anonymous"), resp)
            if why:
                wrong.append(("anonymous", why))
        allowed = "anonymous" if "anonymous" in roles else ", ".join(r for r in ROLES if r in roles)
        if not wrong:
            rep.ok("%s %s [%s]: all %d callers answered as the table says" % (method, path, allowed, len(who) + (
                "anonymous" in roles)))
        for label, why in wrong:
            rep.fail("%s %s [%s] as %s" % (method, path, allowed, label), why)
    print("%d check(s) failed" % rep.failures if rep.failures else "role matrix: all checks passed")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
