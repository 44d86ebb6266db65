#!/usr/bin/env bash
# End-to-end test of the REST API (issue 5) over real HTTP on 127.0.0.1:
#   1. a vault with ~200 SpamAssassin corpus messages, half imported for custodian
#      alice@corp.test, half for bob@corp.test; `index run`;
#   2. users made with the CLI: one per role (compliance included), a reviewer scoped to alice, a
#      spare auditor, a second compliance officer;
#   3. `serve` with an [api] section (HTTPS, a self-signed certificate) and --smtp:
#      api_client.py --phase tls (login, backoff, tokens, search against tests/oracle/oracle.py,
#      raw bytes against the corpus files, scope, tags, saved searches, zip/mbox exports, metrics,
#      TLS versions, capture-to-search, the audit trail), then role_matrix.py (every operation of
#      docs/openapi.yaml as anonymous, bad credentials and each role);
#   4. SIGTERM; `audit verify` must exit 0;
#   6. hostile_http.py against the default (Beast) transport; 7. the plain checks again over the
#      cpprestsdk transport.
#   5. `serve --http 127.0.0.1:PORT` (plain): api_client.py --phase plain (search and raw again,
#      the audit chain across the restart: server.stop then server.start); `serve --http` on a
#      non-loopback address must be refused; SIGTERM; `audit verify` again.
#   8. the spec as a proxy: `serve --http` with two restore targets behind Stoplight Prism
#      (`prism proxy docs/openapi.yaml`; tests/api/install-prism.sh installs it): spec_proxy.py
#      replays a reviewer, auditor, admin/operator and compliance session through it (every
#      operation of the document, the job, restore, policy and hold routes included, and the 4xx
#      problems; the preservation lock is set last of all, in that vault only); every request and
#      every answer must conform to docs/openapi.yaml. Under a minute.
# Tampering with the audit log is tested by the C++ unit tests (tests/fixtures/format/audit-*).
# A missing tool is a failure, not a skip (scripts/install-deps.sh installs them).
#   tests/api/api_test.sh path/to/mailvault
# Corpus: ${MAILVAULT_CORPUS:-$HOME/.cache/mailvault/corpus/maildir}; sample size:
# MAILVAULT_API_SAMPLE (default 200). Prism: MAILVAULT_PRISM, else where tests/api/install-prism.sh
# puts it (${MAILVAULT_CACHE:-~/.cache/mailvault}/prism).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../capture/servers.sh
source "$root/tests/capture/servers.sh"
# shellcheck source=../lib.sh
source "$root/tests/lib.sh"

(($# == 1)) || { echo "usage: $0 path/to/mailvault" >&2; exit 2; }
mv_bin=$(realpath "$1")
corpus=$(test_corpus)
sample_size=${MAILVAULT_API_SAMPLE:-200}
for tool in openssl python3 curl; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (scripts/install-deps.sh installs it)"; exit 1; }
done
python3 -c 'import yaml' 2>/dev/null || { echo "FAIL: python3-yaml is not installed (role_matrix.py needs it)"; exit 1; }
[[ -x $mv_bin ]] || { echo "FAIL: $mv_bin is not executable"; exit 1; }
[[ -d $corpus/cur ]] || { echo "FAIL: no corpus Maildir at $corpus (scripts/fetch-corpus.sh fetches it)"; exit 1; }
[[ -f $root/docs/openapi.yaml ]] || { echo "FAIL: docs/openapi.yaml is missing (the role matrix reads x-roles there)"; exit 1; }

work=$(mktemp -d /tmp/mv-api.XXXXXX)
serve_pid="" prism_pid=""
cleanup() {
  [[ -n $serve_pid ]] && kill -9 "$serve_pid" 2>/dev/null
  [[ -n $prism_pid ]] && kill "$prism_pid" 2>/dev/null
  keep_or_remove_work "kept $work for inspection"
}
trap cleanup EXIT

# to_log LOG COMMAND...: COMMAND with its output in LOG (so that check's own "ok" line is not)
to_log() { local log=$1; shift; "$@" >"$log" 2>&1; }
# Runs a python checker, shows its ok/FAIL lines indented, counts it as one check.
run_py() { # run_py NAME LOG COMMAND...
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1
  local rc=$?
  grep -E "^(ok|FAIL)" "$log" | sed 's/^/     /'
  if ((rc == 0)); then
    pass "$name: $(grep -c '^ok' "$log") checks"
  else
    fail "$name (see $log)"
    # the summary line, or the whole end of the log when it stopped without a FAIL line
    if grep -q "^FAIL" "$log"; then tail -n 1 "$log"; else tail -n 15 "$log"; fi
  fi
}

vault=$work/vault key=$work/master.key
mvault init >/dev/null || { echo "FAIL: init"; exit 1; }

# ---- 1. the sample: every k-th corpus file, alternately alice's and bob's ----
mkdir -p "$work/sample/all/cur" "$work/sample/alice/"{cur,new,tmp} "$work/sample/bob/"{cur,new,tmp}
mapfile -t corpus_files < <(ls "$corpus/cur" | sort)
step=$((${#corpus_files[@]} / sample_size))
((step >= 1)) || { echo "FAIL: the corpus has fewer than $sample_size messages"; exit 1; }
for ((i = 0; i < sample_size; i++)); do
  f=${corpus_files[$((i * step))]}
  if ((i % 2 == 0)); then who=alice; else who=bob; fi
  cp "$corpus/cur/$f" "$work/sample/$who/cur/" && ln "$work/sample/$who/cur/$f" "$work/sample/all/cur/$f"
done

custodians=1
for who in alice bob; do
  mvault import -q --custodian "$who@corp.test" "$work/sample/$who" >"$work/import-$who.log" 2>&1
  rc=$?
  if ((rc != 0)) && grep -qi "custodian" "$work/import-$who.log"; then
    custodians=0
    fail "import --custodian is refused by this binary ($(head -n 1 "$work/import-$who.log")); importing without it, the scope checks will fail"
    mvault import -q "$work/sample/$who" >"$work/import-$who.log" 2>&1
    rc=$?
  fi
  check "import $who's $((sample_size / 2)) files: $(grep -m 1 '^imported' "$work/import-$who.log")" test "$rc" -eq 0
done
check "index run" to_log "$work/index.log" mvault index run -q

# ---- 2. users ----
declare -A user_name=([admin]=ada-admin [operator]=otto-operator [reviewer]=rita-reviewer
  [auditor]=audrey-auditor [compliance]=cleo-compliance [scoped]=alice-reviewer [spare]=sam-spare
  [spare_compliance]=spare-compliance)
declare -A user_role=([admin]=admin [operator]=operator [reviewer]=reviewer [auditor]=auditor
  [compliance]=compliance [scoped]=reviewer [spare]=auditor [spare_compliance]=compliance)
declare -A user_pass
user_keys=(admin operator reviewer auditor compliance scoped spare spare_compliance)
for k in "${user_keys[@]}"; do
  user_pass[$k]=$(openssl rand -hex 16)
  extra=()
  [[ $k == scoped ]] && extra=(--custodian alice@corp.test)
  echo "${user_pass[$k]}" | mvault user add "${user_name[$k]}" --role "${user_role[$k]}" "${extra[@]}" \
    >"$work/user-$k.log" 2>&1
  check "user add ${user_name[$k]} --role ${user_role[$k]}${extra[*]:+ ${extra[*]}}" test $? -eq 0
done
mvault user list --json >"$work/users.json" 2>"$work/users.err"
python3 - "$work/users.json" "${user_name[scoped]}" "${user_name[compliance]}" "${user_name[spare_compliance]}" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
users = d["users"] if isinstance(d, dict) else d
scoped = [u for u in users if u["name"] == sys.argv[2]]
assert len(users) == 8, users
assert scoped and scoped[0]["role"] == "reviewer" and scoped[0]["scope"]["custodians"] == ["alice@corp.test"], scoped
assert sorted(u["name"] for u in users if u["role"] == "compliance") == sorted(sys.argv[3:5]), users
EOF
check "user list --json: the 8 users, the scoped reviewer with custodians [alice@corp.test], the 2 compliance officers" \
  test $? -eq 0

# ---- 3. HTTPS serve ----
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$work/tls.key" -out "$work/tls.crt" >/dev/null 2>&1 || { echo "FAIL: openssl"; exit 1; }
api_port=$(free_port) smtp_port=$(free_port)
cat >"$work/mailvault.conf" <<EOF
[api]
listen = https://127.0.0.1:$api_port
tls-certificate = $work/tls.crt
tls-key = $work/tls.key
EOF

write_env() { # write_env BASE SMTP_PORT > ENV.json
  local k creds=()
  for k in "${user_keys[@]}"; do creds+=("${user_name[$k]}" "${user_pass[$k]}"); done
  python3 - "$1" "$2" "$work" "$custodians" "${creds[@]}" <<'EOF'
import json, sys
base, smtp, work, custodians = sys.argv[1:5]
creds = sys.argv[5:]
# the order of user_keys above
keys = ["admin", "operator", "reviewer", "auditor", "compliance", "scoped", "spare", "spare_compliance"]
roles = {"scoped": "reviewer", "spare": "auditor", "spare_compliance": "compliance"}
users = {k: {"name": creds[2 * i], "password": creds[2 * i + 1], "role": roles.get(k, k)} for i, k in enumerate(keys)}
json.dump({"base": base, "cafile": work + "/tls.crt", "tls_key": work + "/tls.key", "smtp_port": int(smtp),
           "users": users, "sample": work + "/sample/all",
           "custodians": {"alice@corp.test": work + "/sample/alice", "bob@corp.test": work + "/sample/bob"}
           if custodians == "1" else None}, sys.stdout, indent=1)
EOF
}

start_serve() { # start_serve LOG API_PORT SMTP_PORT ARGS...: serve in the background, wait for both ports
  local log=$1 port=$2 smtp=$3; shift 3
  "$mv_bin" --vault "$vault" --key-file "$key" "$@" serve --smtp "127.0.0.1:$smtp" "${serve_args[@]}" 2>>"$log" &
  serve_pid=$!
  wait_port "$port" 20 && wait_port "$smtp" 5 && mv__pid_alive "$serve_pid"
}
# SIGTERM, then up to 60 s (systemd's TimeoutStopSec) for a clean exit; true when it exits 0.
stop_serve() {
  local i rc
  kill -TERM "$serve_pid"
  for ((i = 0; i < 600; i++)); do mv__pid_alive "$serve_pid" || break; sleep 0.1; done
  if mv__pid_alive "$serve_pid"; then
    echo "serve did not exit within 60 s of SIGTERM; killing it"
    kill -9 "$serve_pid"
    wait "$serve_pid"
    serve_pid=""
    return 1
  fi
  wait "$serve_pid"
  rc=$?
  serve_pid=""
  return $rc
}

serve_args=()
if start_serve "$work/serve-tls.log" "$api_port" "$smtp_port" --config "$work/mailvault.conf"; then
  pass "serve with [api] listen = https://127.0.0.1:$api_port"
  write_env "https://127.0.0.1:$api_port" "$smtp_port" >"$work/env-tls.json"
  run_py "api_client.py --phase tls" "$work/client-tls.log" \
    python3 "$here/api_client.py" --env "$work/env-tls.json" --phase tls
  run_py "role_matrix.py (docs/openapi.yaml x-roles)" "$work/role-matrix.log" \
    python3 "$here/role_matrix.py" --env "$work/env-tls.json" --openapi "$root/docs/openapi.yaml" --mailvault "$mv_bin"
  check "SIGTERM: serve exits 0" stop_serve
else
  fail "serve did not start with the [api] section"; tail -n 20 "$work/serve-tls.log"
  [[ -n $serve_pid ]] && { kill -9 "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=""; }
fi
audit_verify() { # audit_verify LABEL: `audit verify` must exit 0
  mvault audit verify >"$work/verify-$1.log" 2>&1
  local rc=$?
  check "audit verify exits 0 after the $1 run: $(tail -n 1 "$work/verify-$1.log")" test "$rc" -eq 0
}
audit_verify HTTPS

# ---- 4. --http on a non-loopback address is refused ----
wild_port=$(free_port) wild_smtp=$(free_port)
"$mv_bin" --vault "$vault" --key-file "$key" serve --http "0.0.0.0:$wild_port" --smtp "127.0.0.1:$wild_smtp" \
  >"$work/serve-wild.log" 2>&1 &
wild_pid=$!
for _ in $(seq 1 100); do mv__pid_alive "$wild_pid" || break; sleep 0.1; done
if mv__pid_alive "$wild_pid"; then
  fail "serve --http 0.0.0.0:PORT (plain HTTP off loopback) is refused: it is still running after 10 s"
  kill -TERM "$wild_pid"; wait "$wild_pid"
else
  wait "$wild_pid"
  rc=$?
  check "serve --http 0.0.0.0:PORT (plain HTTP off loopback) is refused: exit $rc, $(head -n 1 "$work/serve-wild.log")" \
    test "$rc" -ne 0
fi

# ---- 5. plain HTTP serve on loopback, after a restart ----
http_port=$(free_port) smtp_port2=$(free_port)
serve_args=(--http "127.0.0.1:$http_port")
if start_serve "$work/serve-http.log" "$http_port" "$smtp_port2"; then
  pass "serve --http 127.0.0.1:$http_port"
  write_env "http://127.0.0.1:$http_port" "$smtp_port2" >"$work/env-http.json"
  run_py "api_client.py --phase plain" "$work/client-http.log" \
    python3 "$here/api_client.py" --env "$work/env-http.json" --phase plain
  check "SIGTERM: serve exits 0" stop_serve
else
  fail "serve --http did not start"; tail -n 20 "$work/serve-http.log"
  [[ -n $serve_pid ]] && { kill -9 "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=""; }
fi
audit_verify plain-HTTP

# ---- 6. hostile clients against the default (Beast) transport ----
hostile_port=$(free_port) smtp_port3=$(free_port)
serve_args=(--http "127.0.0.1:$hostile_port")
if start_serve "$work/serve-hostile.log" "$hostile_port" "$smtp_port3"; then
  token=$(curl -s -X POST "http://127.0.0.1:$hostile_port/api/v1/auth/login" \
    -d "{\"username\":\"${user_name[reviewer]}\",\"password\":\"${user_pass[reviewer]}\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
  # 20 s of slowloris: the server's 15 s request timeout must close every slow connection.
  run_py "hostile_http.py" "$work/hostile.log" \
    python3 "$here/hostile_http.py" --host 127.0.0.1 --port "$hostile_port" --reviewer-token "$token" \
    --pid "$serve_pid" --slowloris-secs 20
  check "SIGTERM after the hostile clients: serve exits 0" stop_serve
else
  fail "serve for the hostile clients did not start"; tail -n 20 "$work/serve-hostile.log"
  [[ -n $serve_pid ]] && { kill -9 "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=""; }
fi
audit_verify hostile

# ---- 7. the same functional checks over the cpprestsdk transport ([api] transport = cpprest) ----
cpp_port=$(free_port) smtp_port4=$(free_port)
printf '[api]\ntransport = cpprest\n' >"$work/cpprest.conf"
serve_args=(--http "127.0.0.1:$cpp_port")
if start_serve "$work/serve-cpprest.log" "$cpp_port" "$smtp_port4" --config "$work/cpprest.conf"; then
  pass "serve --http 127.0.0.1:$cpp_port with transport = cpprest"
  write_env "http://127.0.0.1:$cpp_port" "$smtp_port4" >"$work/env-cpprest.json"
  run_py "api_client.py --phase plain over cpprestsdk" "$work/client-cpprest.log" \
    python3 "$here/api_client.py" --env "$work/env-cpprest.json" --phase plain
  check "SIGTERM: serve (cpprest) exits 0" stop_serve
else
  fail "serve with transport = cpprest did not start"; tail -n 20 "$work/serve-cpprest.log"
  [[ -n $serve_pid ]] && { kill -9 "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=""; }
fi
audit_verify cpprest

# ---- 8. a reviewer/auditor/admin session through a validating proxy of docs/openapi.yaml ----
# Prism forwards every request to serve and validates the request and serve's answer against the
# document (spec_proxy.py's docstring says how, and why without --errors). Restore targets:
# "primary" is an IMAP port nobody listens on (a dry run answers at once, each mailbox with its
# error); "broken" names an auth file that does not exist, so its jobs fail at once (a job that
# ends quickly, to follow through events, pause, resume and cancel within the minute).
spec_proxy_phase() {
  local prism version port smtp pport conf started=$SECONDS
  prism=${MAILVAULT_PRISM:-$("$here/install-prism.sh" --path)}
  if [[ ! -x $prism ]]; then
    fail "Stoplight Prism is not installed at $prism (scripts/install-deps.sh installs it with tests/api/install-prism.sh)"
    return
  fi
  version=$("$prism" --version 2>&1) || { fail "$prism --version: $version"; return; }
  port=$(free_port) smtp=$(free_port) pport=$(free_port)
  conf=$work/spec-proxy.conf
  printf '* mvadmin %s\n' "$(openssl rand -hex 8)" >"$work/restore.auth"
  chmod 600 "$work/restore.auth"
  printf '%s\n' "[restore-target primary]" "url = imap://127.0.0.1:$(free_port)" \
    "auth-file = $work/restore.auth" "no-tls = yes" "timeout = 5" "" \
    "[restore-target broken]" "url = imap://127.0.0.1:$(free_port)" \
    "auth-file = $work/no-such-restore.auth" "no-tls = yes" >"$conf"
  serve_args=(--http "127.0.0.1:$port")
  if ! start_serve "$work/serve-spec-proxy.log" "$port" "$smtp" --config "$conf"; then
    fail "serve for the spec proxy did not start"; tail -n 20 "$work/serve-spec-proxy.log"
    [[ -n $serve_pid ]] && { kill -9 "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=""; }
    return
  fi
  # --errors=false: every request reaches serve (with --errors Prism answers a non-conforming
  # request itself); what does not conform comes back in the sl-violations header instead.
  "$prism" proxy "$root/docs/openapi.yaml" "http://127.0.0.1:$port" --host 127.0.0.1 --port "$pport" \
    --errors=false --validate-request --multiprocess=false >"$work/prism.log" 2>&1 &
  prism_pid=$!
  if wait_port "$pport" 30 && mv__pid_alive "$prism_pid"; then
    pass "prism $version proxy docs/openapi.yaml http://127.0.0.1:$port, on 127.0.0.1:$pport"
    write_env "http://127.0.0.1:$port" "$smtp" >"$work/env-spec-proxy.json"
    run_py "spec_proxy.py: a reviewer/auditor/admin/compliance session through Prism conforms to docs/openapi.yaml" \
      "$work/spec-proxy.log" python3 "$here/spec_proxy.py" --env "$work/env-spec-proxy.json" \
      --proxy "http://127.0.0.1:$pport" --openapi "$root/docs/openapi.yaml"
    grep -E "^spec_proxy: " "$work/spec-proxy.log" | sed 's/^/     /'
  else
    fail "prism proxy did not start (see $work/prism.log)"; tail -n 20 "$work/prism.log"
  fi
  kill "$prism_pid" 2>/dev/null; wait "$prism_pid" 2>/dev/null; prism_pid=""
  check "SIGTERM: serve (behind the spec proxy) exits 0" stop_serve
  audit_verify spec-proxy
  echo "     (the spec proxy phase took $((SECONDS - started)) s)"
}
spec_proxy_phase

if ((failures)); then echo "$failures check(s) failed"; exit 1; fi
echo "all API checks passed"
