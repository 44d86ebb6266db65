#!/usr/bin/env python3
"""Checks docs/openapi.yaml against the router's own route table.

    check_openapi.py OPENAPI_YAML ROUTES_JSON
    check_openapi.py --self-test

ROUTES_JSON holds the output of `mailvault-admin api routes --json`: a JSON array of
{"method": "GET", "path": "/api/v1/messages/{id}", "roles": ["reviewer"]} (anonymous routes
have roles ["anonymous"]). The router prints that table from the same data it dispatches on,
so comparing it with the document catches a route added or re-roled on one side only.

Reported, one difference per line:
  undocumented   a route the router serves that the document does not describe
  no-route       a documented operation the router does not serve
  roles          the operation's x-roles differ from the route's roles (compared as sets)
  param-names    the same route, but the path parameters are named differently
  x-roles        an operation without a (non-empty) x-roles list
  security       an anonymous operation without `security: []`, or a non-anonymous one with it
  summary        an operation without a non-empty summary
  no-2xx         an operation without a 2xx response
  duplicate      two routes, or two documented operations, for the same method and path

Exit status: 0 when everything matches (one summary line), 1 with differences, 2 when an input
cannot be read. --self-test runs the checker on small built-in documents that must fail in
known ways (and one that must pass), so a checker that silently reports nothing is caught.
"""

import argparse
import collections
import io
import json
import re
import sys

import yaml

# The operation keys of an OpenAPI path item; other keys (parameters, summary, ...) are not
# operations.
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ANONYMOUS = "anonymous"
PARAM = re.compile(r"\{[^}]*\}")

Difference = collections.namedtuple("Difference", "kind text")


class InputError(Exception):
    """An input that is not what the checker expects (exit 2, not a difference)."""


def route_key(method, path):
    """The key two descriptions of one route share: upper-case method, path with parameter names
    blanked. Blanking means /x/{id} vs /x/{name} shows up as one param-names difference instead of
    an undocumented route plus an unrelated no-route operation."""
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    return (method.upper(), PARAM.sub("{}", path))


def show_roles(roles):
    return "[" + ", ".join(sorted(roles)) + "]" if roles is not None else "(none)"


def load_spec_text(text, where="OPENAPI_YAML"):
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError("%s: not YAML: %s" % (where, e))
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise InputError("%s: no `paths` mapping; is this an OpenAPI document?" % where)
    return spec


def load_routes_text(text, where="ROUTES_JSON"):
    try:
        routes = json.loads(text)
    except ValueError as e:
        raise InputError("%s: not JSON: %s" % (where, e))
    if not isinstance(routes, list):
        raise InputError("%s: expected a JSON array of routes" % where)
    for i, r in enumerate(routes):
        ok = (isinstance(r, dict) and isinstance(r.get("method"), str) and isinstance(r.get("path"), str)
              and isinstance(r.get("roles"), list) and all(isinstance(x, str) for x in r["roles"]))
        if not ok:
            raise InputError('%s: entry %d is not {"method": str, "path": str, "roles": [str]}: %r'
                             % (where, i, r))
    return routes


def documented_operations(spec, diffs):
    """(method, path) key -> dict(path, op) for every operation in the document."""
    ops = {}
    for path, item in spec["paths"].items():
        if not isinstance(item, dict):
            continue
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            key = route_key(method, path)
            name = "%s %s" % (method.upper(), path)
            if key in ops:
                diffs.append(Difference("duplicate", "%s: documented twice (also as %s %s)"
                                        % (name, key[0], ops[key]["path"])))
                continue
            ops[key] = {"path": path, "name": name, "op": op if isinstance(op, dict) else {}}
    return ops


def x_roles(op):
    """The operation's x-roles as a set, or None when missing or malformed."""
    roles = op.get("x-roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        return None
    return set(roles)


def check_operation(spec, entry, diffs):
    """Checks on one documented operation that need no route: summary, 2xx, x-roles, security."""
    op, name = entry["op"], entry["name"]
    summary = op.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        diffs.append(Difference("summary", "%s: no summary" % name))
    # YAML reads an unquoted 200 as an int, so compare the text; "2XX" is a legal range key.
    responses = op.get("responses") if isinstance(op.get("responses"), dict) else {}
    if not any(re.fullmatch(r"2(\d\d|XX)", str(code)) for code in responses):
        diffs.append(Difference("no-2xx", "%s: no 2xx response" % name))
    roles = x_roles(op)
    if roles is None:
        diffs.append(Difference("x-roles", "%s: no x-roles list" % name))
        return
    # The document's security must agree with x-roles, or generated clients would send (or
    # withhold) a token the server does not expect.
    security = op["security"] if "security" in op else spec.get("security", [])
    open_to_all = security == [] or {} in (security or [])
    if roles == {ANONYMOUS} and not open_to_all:
        diffs.append(Difference("security", "%s: x-roles is [anonymous] but the operation needs a credential "
                                "(add `security: []`)" % name))
    elif ANONYMOUS not in roles and open_to_all:
        diffs.append(Difference("security", "%s: x-roles %s but the operation allows no credential"
                                % (name, show_roles(roles))))


def check(spec, routes):
    """All differences between the document and the route table, as a list of Difference."""
    diffs = []
    ops = documented_operations(spec, diffs)

    served = {}
    for r in routes:
        key = route_key(r["method"], r["path"])
        if key in served:
            diffs.append(Difference("duplicate", "%s %s: listed twice in the route table" % (r["method"].upper(), r["path"])))
            continue
        served[key] = r

    for key in sorted(ops):
        check_operation(spec, ops[key], diffs)

    for key in sorted(served):
        r = served[key]
        name = "%s %s" % (r["method"].upper(), r["path"])
        if key not in ops:
            diffs.append(Difference("undocumented", "%s: served with roles %s but not in the document"
                                    % (name, show_roles(r["roles"]))))
            continue
        entry = ops[key]
        if PARAM.findall(entry["path"]) != PARAM.findall(r["path"]):
            diffs.append(Difference("param-names", "%s: documented as %s" % (name, entry["path"])))
        documented = x_roles(entry["op"])
        if documented is not None and documented != set(r["roles"]):
            diffs.append(Difference("roles", "%s: route roles %s, documented x-roles %s"
                                    % (name, show_roles(r["roles"]), show_roles(documented))))

    for key in sorted(ops):
        if key not in served:
            diffs.append(Difference("no-route", "%s: documented with x-roles %s but no route serves it"
                                    % (ops[key]["name"], show_roles(x_roles(ops[key]["op"])))))
    return diffs, len(ops), len(served)


def report(diffs, n_ops, n_routes, out):
    """Prints the outcome; returns the exit status."""
    if diffs:
        for d in diffs:
            out.write("%s: %s\n" % (d.kind, d.text))
        out.write("check_openapi: FAIL, %d difference(s) between %d documented operations and %d routes\n"
                  % (len(diffs), n_ops, n_routes))
        return 1
    out.write("check_openapi: ok, %d documented operations match %d routes (roles, summaries, 2xx responses, "
              "security)\n" % (n_ops, n_routes))
    return 0


# ---------------------------------------------------------------- self-test

SELF_TEST_YAML = """
openapi: 3.0.3
info: {title: t, version: "1"}
security:
  - bearerAuth: []
paths:
  /healthz:
    get:
      summary: Liveness
      security: []
      x-roles: [anonymous]
      responses:
        200: {description: ok}
  /api/v1/users:
    get:
      summary: List users
      x-roles: [admin, auditor]
      responses:
        "200": {description: ok}
  /api/v1/messages/{id}:
    get:
      summary: One message
      x-roles: [reviewer]
      x-scoped: true
      responses:
        "200": {description: ok}
        "404": {description: missing}
"""

SELF_TEST_ROUTES = """[
  {"method": "GET", "path": "/healthz", "roles": ["anonymous"]},
  {"method": "GET", "path": "/api/v1/users", "roles": ["auditor", "admin"]},
  {"method": "GET", "path": "/api/v1/messages/{id}", "roles": ["reviewer"]}
]"""


class SelfTestFailure(Exception):
    pass


def expect(cond, what, diffs=()):
    # Not `assert`: python -O would strip it, and a self-test that cannot fail proves nothing.
    if not cond:
        listing = "".join("\n    %s: %s" % d for d in diffs)
        raise SelfTestFailure(what + (listing and "\n  differences were:" + listing))


def run_text(yaml_text, routes_json):
    diffs, n_ops, n_routes = check(load_spec_text(yaml_text), load_routes_text(routes_json))
    out = io.StringIO()
    status = report(diffs, n_ops, n_routes, out)
    return diffs, status, out.getvalue()


def self_test():
    # 1. A matching pair passes (the role lists are in different orders: sets, not lists).
    diffs, status, out = run_text(SELF_TEST_YAML, SELF_TEST_ROUTES)
    expect(not diffs and status == 0, "a matching pair should pass", diffs)
    expect(out.count("\n") == 1 and out.startswith("check_openapi: ok"), "a pass prints one summary line")

    # 2. One route missing from the document, one documented operation without a route, one
    #    role mismatch: exactly these three, each on its own line, exit 1.
    routes = json.loads(SELF_TEST_ROUTES)
    routes.append({"method": "POST", "path": "/api/v1/search", "roles": ["reviewer"]})  # undocumented
    routes = [r for r in routes if r["path"] != "/api/v1/messages/{id}"]                # -> no-route
    routes[1]["roles"] = ["admin"]                                                      # roles differ
    diffs, status, out = run_text(SELF_TEST_YAML, json.dumps(routes))
    kinds = collections.Counter(d.kind for d in diffs)
    expect(kinds == {"undocumented": 1, "no-route": 1, "roles": 1},
           "expected one undocumented, one no-route and one roles difference", diffs)
    by_kind = {d.kind: d.text for d in diffs}
    expect(by_kind["undocumented"].startswith("POST /api/v1/search:"), "undocumented names the route", diffs)
    expect(by_kind["no-route"].startswith("GET /api/v1/messages/{id}:"), "no-route names the operation", diffs)
    expect(by_kind["roles"].startswith("GET /api/v1/users:"), "roles names the route", diffs)
    expect(status == 1, "differences must exit 1")
    lines = out.splitlines()
    expect(len(lines) == 4 and all(any(d.text in ln for ln in lines[:3]) for d in diffs)
           and lines[3].startswith("check_openapi: FAIL"), "each difference on its own line, then a summary:\n" + out)

    # 3. The document-only checks: no summary, no 2xx, no x-roles, anonymous without security: [].
    spec = load_spec_text(SELF_TEST_YAML)
    spec["paths"]["/healthz"]["get"].pop("security")
    spec["paths"]["/api/v1/users"]["get"]["summary"] = "  "
    spec["paths"]["/api/v1/users"]["get"]["responses"] = {"403": {"description": "no"}}
    spec["paths"]["/api/v1/messages/{id}"]["get"].pop("x-roles")
    diffs, _, _ = check(spec, load_routes_text(SELF_TEST_ROUTES))
    kinds = collections.Counter(d.kind for d in diffs)
    expect(kinds == {"security": 1, "summary": 1, "no-2xx": 1, "x-roles": 1},
           "expected security, summary, no-2xx and x-roles differences", diffs)

    # 4. A renamed path parameter is one param-names difference, not a missing + extra pair.
    diffs, status, _ = run_text(SELF_TEST_YAML, SELF_TEST_ROUTES.replace("{id}", "{message_id}"))
    expect([d.kind for d in diffs] == ["param-names"] and status == 1,
           "a renamed path parameter should be one param-names difference", diffs)

    print("check_openapi self-test: ok (a matching pair passes; missing, extra, role, param-name, summary, "
          "2xx, x-roles and security differences are reported)")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("openapi", nargs="?", metavar="OPENAPI_YAML")
    ap.add_argument("routes", nargs="?", metavar="ROUTES_JSON",
                    help="output of `mailvault-admin api routes --json`")
    ap.add_argument("--self-test", action="store_true", help="check the checker on built-in examples")
    args = ap.parse_args()

    if args.self_test:
        try:
            return self_test()
        except SelfTestFailure as e:
            sys.stderr.write("check_openapi self-test: FAILED: %s\n" % e)
            return 1
    if not args.openapi or not args.routes:
        ap.error("OPENAPI_YAML and ROUTES_JSON are required (or --self-test)")

    try:
        with open(args.openapi, encoding="utf-8") as f:
            spec = load_spec_text(f.read(), args.openapi)
        with open(args.routes, encoding="utf-8") as f:
            routes = load_routes_text(f.read(), args.routes)
    except (OSError, InputError) as e:
        sys.stderr.write("check_openapi: %s\n" % e)
        return 2
    diffs, n_ops, n_routes = check(spec, routes)
    return report(diffs, n_ops, n_routes, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
