#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test on SQLite and PostgreSQL.
# PostgreSQL comes from CLOACINA_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test);
# if it is local and not running, this script starts it. Under CI=true, PostgreSQL tests must run.
set -euo pipefail
cd "$(dirname "$0")/.."

export CLOACINA_TEST_POSTGRES_URL="${CLOACINA_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

ensure_postgres() {
    command -v pg_isready >/dev/null 2>&1 || { echo "test.sh: pg_isready not found; PostgreSQL tests will skip (or fail under CI=true)"; return 0; }
    if pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "test.sh: starting PostgreSQL"
        for v in $(ls /etc/postgresql); do
            pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
        done
        for _ in $(seq 1 30); do
            pg_isready -q -h 127.0.0.1 -p 5432 && return 0
            sleep 1
        done
    fi
    echo "test.sh: PostgreSQL is not reachable at 127.0.0.1:5432"
}
ensure_postgres

# HAProxy for the load-balancer tests (tests/tests/balancer.rs): installed with apt-get when
# missing. Without it those tests skip, or fail under CI=true.
bash scripts/haproxy.sh || echo "test.sh: haproxy is not available; the load-balancer tests will skip (or fail under CI=true)"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The end-to-end tests (tests/) run the real binaries; they are built here, never by a test.
echo "== cargo build (binaries for the end-to-end tests)"
cargo build --workspace --all-targets --locked

# With cargo-nextest installed (and no arguments for cargo test), the tests run under nextest:
# every test in a process of its own, four at a time across all the test binaries, with the
# end-to-end binaries that must run their tests one at a time (or alone) grouped as
# .config/nextest.toml says; the doc tests, which nextest does not run, follow under cargo test.
# Otherwise (or with CLOACINA_TEST_RUNNER=cargo) plain `cargo test`, one binary after the other.
echo "== cargo test"
if [ $# -eq 0 ] && [ "${CLOACINA_TEST_RUNNER:-}" != cargo ] && cargo nextest --version >/dev/null 2>&1; then
    status=0
    cargo nextest run --workspace --locked --no-fail-fast || status=$?
    cargo test --workspace --locked --no-fail-fast --doc || status=$?
    [ "$status" -eq 0 ] || exit "$status"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi

# The HTTP API fuzzed from its own OpenAPI document (schemathesis, installed by the script into
# target/fuzz-venv) in a short mode: no 5xx, every error in the JSON error shape, the server
# still up. The long mode and its figures: docs/reliability.md, "Hostile input".
echo "== fuzz the HTTP API (short mode)"
bash scripts/fuzz.sh --short

# The benchmark program in a short mode: proves every scenario runs on both backends and every
# workflow ends Completed with the right context (it exits non-zero otherwise). Timing is not
# checked here; see docs/performance.md.
echo "== cloacina-bench (short mode)"
# Run as built above: `cargo run -p cloacina-bench` would resolve features for that package alone
# and compile a second copy of cloacina and of a third of the dependencies first.
BENCH="${CARGO_TARGET_DIR:-target}/debug/cloacina-bench"
"$BENCH" --workflows 10 --history 2000 --rounds 2

# The load test in a short mode: 20 s per backend of clients mixing executes with the list
# endpoints against the real server; fails on any error or run that did not complete. Memory
# is only reported here (judged from 5 minutes up); the long run: docs/reliability.md, "Load".
echo "== load test (short mode)"
"$BENCH" --scenario load --duration 20
