#!/usr/bin/env bash
# Fuzzes the HTTP API of a real cloacina-server from its own OpenAPI document with schemathesis.
#
#   bash scripts/fuzz.sh --short        CI's mode: a fixed seed, 25 examples per operation, one
#                                       worker (about 15 s on 2 cores once installed)
#   bash scripts/fuzz.sh --long         300 examples per operation, 20 minutes, a random seed
#   bash scripts/fuzz.sh --long --seed N --max-time S --examples N   (any of them)
#
# Checks on every answer: no 5xx (not_a_server_error), and every error (4xx/5xx) in the one JSON
# error shape {"error": "<non-empty>", "code": "<non-empty>"} and nothing else
# (json_error_shape, below). At the end the server must still be running and answer /health,
# and its log must hold no panic.
#
# Schemathesis (pinned below) is installed once into a virtualenv under target/fuzz-venv; the
# server runs on SQLite in target/fuzz/home with a bootstrap key made here, seeded with a tenant
# and (when the example packages were built, as the tests build them) the hello-orders package,
# so the fuzzer reaches past "not found". Reports: target/fuzz/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
MODE=short
SEED=""
MAX_TIME=""
EXAMPLES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ;;
        --long) MODE=long ;;
        --seed) SEED="$2"; shift ;;
        --max-time) MAX_TIME="$2"; shift ;;
        --examples) EXAMPLES="$2"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
    esac
    shift
done
# Short mode runs one worker: with two, the threads parse lambdas' source with `ast` at the same
# time, which this machine's CPython 3.11 can fail with "AST constructor recursion depth mismatch"
# (one run in five here, reported as a schemathesis runtime error); one worker is no slower here.
WORKERS=2
if [ "$MODE" = short ]; then
    SEED="${SEED:-20261203}"
    EXAMPLES="${EXAMPLES:-25}"
    WORKERS=1
else
    EXAMPLES="${EXAMPLES:-300}"
    MAX_TIME="${MAX_TIME:-1200}"
fi

WORK="target/fuzz"
VENV="target/fuzz-venv"
ST="$VENV/bin/schemathesis"

# --- schemathesis, once -----------------------------------------------------------------------
if [ ! -f "$VENV/.installed-$SCHEMATHESIS_VERSION" ]; then
    echo "fuzz.sh: installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get install -y -q python3-venv python3-pip >/dev/null
            rm -rf "$VENV"
            python3 -m venv "$VENV"
        else
            echo "fuzz.sh: python3 -m venv failed; install python3-venv" >&2
            exit 1
        fi
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    touch "$VENV/.installed-$SCHEMATHESIS_VERSION"
fi

# --- the server -------------------------------------------------------------------------------
SERVER="target/debug/cloacina-server"
if [ ! -x "$SERVER" ]; then
    cargo build --locked -q -p cloacina-server
fi
rm -rf "$WORK"
mkdir -p "$WORK/home"
HOME_DIR="$(pwd)/$WORK/home"
KEY="clk_$("$VENV/bin/python" -c 'import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))')"

SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

DATABASE_URL="sqlite://$HOME_DIR/cloacina.db" CLOACINA_BOOTSTRAP_KEY="$KEY" \
    "$SERVER" --home "$HOME_DIR" --bind 127.0.0.1:0 --shutdown-timeout-s 5 \
    >"$WORK/server.stdout" 2>"$WORK/server.stderr" &
SERVER_PID=$!
ADDR=""
for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "fuzz.sh: the server exited at start:" >&2; cat "$WORK/server.stderr" >&2; exit 1; }
    ADDR="$(sed -n 's/^addr=//p' "$HOME_DIR/server.pid" 2>/dev/null || true)"
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "fuzz.sh: the server did not start" >&2; cat "$WORK/server.stderr" >&2; exit 1; }
URL="http://$ADDR"

# --- seed data, the custom check and the configuration ----------------------------------------
cat >"$WORK/seed.py" <<'EOF'
"""A tenant and, when the tests built the example packages, hello-orders (packed uncompressed)."""
import io, json, os, subprocess, sys, tarfile, urllib.request

url, key = sys.argv[1], sys.argv[2]


def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(url + path, data=body, method=method)
    req.add_header("Authorization", "Bearer " + key)
    if body is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.read()


print("fuzz.sh: tenant 'fuzz':", call("POST", "/v1/tenants", json.dumps({"name": "fuzz"}).encode())[0])
library = "target/packages/debug/libhello_orders.so"
if not os.path.exists(library):
    print("fuzz.sh: no built example packages (run the tests first); fuzzing without a package")
    sys.exit(0)
host = [l.split()[1] for l in subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout.splitlines() if l.startswith("host:")][0]
src = "examples/packages/hello-orders"
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1, format=tarfile.GNU_FORMAT) as tar:
    for name in ["package.toml", "Cargo.toml", "src/lib.rs"]:
        tar.add(os.path.join(src, name), arcname=name)
    tar.add(library, arcname=f"lib/{host}/libhello_orders.so")
print("fuzz.sh: upload hello-orders:", call("POST", "/v1/tenants/public/workflows", buf.getvalue(), "application/octet-stream")[0])
EOF
"$VENV/bin/python" "$WORK/seed.py" "$URL" "$KEY"

cat >"$WORK/fuzz_checks.py" <<'EOF'
import json

import schemathesis


@schemathesis.check
def json_error_shape(ctx, response, case):
    """Every error answer is {"error": "<non-empty>", "code": "<non-empty>"} as JSON."""
    if response.status_code < 400:
        return None
    ctype = response.headers.get("content-type", [""])
    if isinstance(ctype, list):
        ctype = ctype[0] if ctype else ""
    if not ctype.startswith("application/json"):
        raise AssertionError(f"error {response.status_code} is not JSON (content-type {ctype!r})")
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"error {response.status_code}: the body is not JSON: {e}")
    if not isinstance(body, dict) or set(body) != {"error", "code"}:
        raise AssertionError(f"error {response.status_code}: the body is not exactly {{error, code}}: {body!r}")
    for field in ("error", "code"):
        if not isinstance(body[field], str) or not body[field]:
            raise AssertionError(f"error {response.status_code}: '{field}' is not a non-empty string: {body!r}")
    return None
EOF

cat >"$WORK/schemathesis.toml" <<'EOF'
# No state kept between runs (it would land in the working directory).
[cache]
enabled = false

# Known names, used part of the time, so requests reach past "not found".
[dictionaries.tenants]
values = ["public", "fuzz"]

[dictionaries.names]
values = ["hello", "orders", "hello-orders"]

[parameters]
"path.tenant" = { dictionary = "tenants", probability = 0.7 }
"path.name" = { dictionary = "names", probability = 0.5 }
"path.package_name" = { dictionary = "names", probability = 0.5 }
EOF

# --- fuzz ---------------------------------------------------------------------------------------
ARGS=(--config-file "$WORK/schemathesis.toml" run "$URL/v1/openapi.json"
    -H "Authorization: Bearer $KEY"
    --checks not_a_server_error,json_error_shape
    --max-examples "$EXAMPLES"
    --phases coverage,fuzzing,stateful
    --workers "$WORKERS"
    --request-timeout 30
    --suppress-health-check all
    --output-sanitize true)
[ -n "$SEED" ] && ARGS+=(--seed "$SEED")
# The package deletes run last, on their own: run first, they would unload hello-orders early
# and leave nothing to execute for the rest of the run.
DELETES=(--include-name "DELETE /v1/packages/{id}"
    --include-name "DELETE /v1/tenants/{tenant}/workflows/{package_name}/{version}")
EXCLUDE_DELETES=(--exclude-name "DELETE /v1/packages/{id}"
    --exclude-name "DELETE /v1/tenants/{tenant}/workflows/{package_name}/{version}")
echo "fuzz.sh: $MODE mode against $URL (examples $EXAMPLES${SEED:+, seed $SEED}${MAX_TIME:+, max time ${MAX_TIME}s})"
failed=0
run_schemathesis() { # REPORT ARGS...
    local report="$1"
    shift
    set +e
    SCHEMATHESIS_HOOKS=fuzz_checks PYTHONPATH="$WORK" timeout $(( ${MAX_TIME:-600} + 300 )) \
        "$ST" "$@" >"$report" 2>&1
    local status=$?
    set -e
    if [ "$status" -ne 0 ]; then
        echo "fuzz.sh: schemathesis reported failures (exit $status):"
        cat "$report"
        failed=1
    fi
}
run_schemathesis "$WORK/report.txt" "${ARGS[@]}" "${EXCLUDE_DELETES[@]}" ${MAX_TIME:+--max-time "$MAX_TIME"}
run_schemathesis "$WORK/report-deletes.txt" "${ARGS[@]}" "${DELETES[@]}"

# --- verdict --------------------------------------------------------------------------------------
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "fuzz.sh: the server died while being fuzzed:"
    tail -50 "$WORK/server.stderr"
    failed=1
elif ! "$VENV/bin/python" -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen(sys.argv[1] + '/health', timeout=10).status == 200 else 1)" "$URL"; then
    echo "fuzz.sh: the server no longer answers /health"
    failed=1
fi
if grep -q "panicked" "$WORK/server.stderr" "$HOME_DIR/logs/"* 2>/dev/null; then
    echo "fuzz.sh: the server's log holds a panic:"
    grep -h -A5 "panicked" "$WORK/server.stderr" "$HOME_DIR/logs/"* | head -40
    failed=1
fi
stop_server
count() { # WHAT: the sum over both reports
    local total=0 n
    for report in "$WORK/report.txt" "$WORK/report-deletes.txt"; do
        n="$(grep -E '^ *[0-9]+ generated' "$report" 2>/dev/null | tail -1 | sed -n "s/.* \([0-9]*\) $1.*/\1/p")"
        total=$(( total + ${n:-0} ))
    done
    echo "$total"
}
generated="$(count generated)"
passed="$(count passed)"
executions="$("$VENV/bin/python" -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from workflow_executions').fetchone()[0])" "$HOME_DIR/cloacina.db" 2>/dev/null || echo '?')"
echo "fuzz.sh: ${generated} requests generated, ${executions} executions started (reports: $WORK/report*.txt)"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: ${passed:-0} passed, 1 failed"
    exit 1
fi
echo "fuzz: ${passed:-0} passed, 0 failed"
