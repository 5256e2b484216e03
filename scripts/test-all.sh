#!/usr/bin/env bash
# Runs every test suite of Switchyard on a fresh machine, installing what the
# tests need: Rust unit and integration tests, bench smoke runs, a short run
# of every fuzz target (cargo-fuzz, AddressSanitizer), WebSocket conformance
# with the kosoku suite (Autobahn TestSuite cases, PyPI, pinned), and interop
# with real third-party WAMP clients (autobahn-python from PyPI, autobahn-js
# from npm, both pinned). Exits non-zero if anything fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "system packages the tests use (openssl: the JS suite's TLS certificates; curl: the Python suite's long-poll and HTTP bridge clients; nats-server: the cluster tests; installed with apt-get if missing)"
missing=""
for pkg in openssl curl nats-server; do
    command -v "$pkg" >/dev/null 2>&1 || [ -x "/usr/sbin/$pkg" ] || missing="$missing $pkg"
done
# Debian puts nats-server in /usr/sbin, which a user's PATH may lack
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
if [ -n "$missing" ]; then
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    # shellcheck disable=SC2086  # one word per package
    $sudo_ apt-get update -q && $sudo_ apt-get install -y -q $missing
fi

step "cargo test (unit + black-box integration tests)"
cargo test --workspace

step "bench smoke run (each criterion bench once, no timing)"
cargo bench --workspace -- --test

step "fuzz smoke run (every cargo-fuzz target on its corpus, then ${FUZZ_SECONDS:-20} s of new inputs; installs cargo-fuzz)"
./scripts/fuzz-smoke.sh

step "loadtest smoke run (every scenario briefly against a 2-shard router)"
./scripts/loadtest-smoke.sh

step "loadtest report: two short runs, a report of both, checked in headless Chromium (installed with apt-get if missing): labels, curves, axes, table figures, screenshot"
./scripts/report-check.sh

step "churn: 10k sessions opened and closed 3 times; sessions back to zero, RSS back near its start"
./scripts/churn.sh

step "build the router for the interop suites"
cargo build --bin switchyard
export SWITCHYARD_BIN="$root/target/debug/switchyard"

step "WebSocket conformance: kosoku (Autobahn TestSuite cases) against the router (1 and 2 shards)"
./scripts/ws-conformance.sh

step "interop: autobahn-python (WebSocket, batched WebSocket, RawSocket over TCP and Unix sockets, the universal port; JSON/MessagePack/CBOR; permessage-deflate; long-poll over HTTP; the HTTP bridge with requests and curl; 1 and 2 shards)"
python="$(command -v python3.11 || command -v python3)"
venv="$root/.venv-interop"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/interop/python/requirements.txt
"$venv/bin/pytest" tests/interop/python -q

step "interop: autobahn-js (WebSocket JSON/MessagePack/CBOR, RawSocket JSON over TCP and Unix sockets, long-poll) and wampy (WebSocket JSON/MessagePack/CBOR); dedicated and universal listeners; 1 and 2 shards"
(cd tests/interop/js && npm ci --no-audit --no-fund --loglevel=error && npm test)

step "all suites passed"
