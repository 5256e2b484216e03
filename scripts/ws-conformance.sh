#!/usr/bin/env bash
# WebSocket (RFC 6455) conformance of the router's WebSocket transport, driven
# by the third-party suite kosoku (PyPI, pinned below; the Autobahn TestSuite
# case files with a native runner) in fuzzingclient mode. For shards 1 then 2:
# starts the router with its listener on 127.0.0.1:0, runs the cases chosen in
# tests/conformance/cases.json (tests/conformance/README.md says which and
# why), stops the router (SIGTERM, must exit 0). Reports go to
# target/ws-conformance/shardsN/ (index.html, per-case JSON, verdicts.json).
#
#   SWITCHYARD_BIN       router binary (default target/debug/switchyard)
#   WS_CONFORMANCE_CASES comma-separated case ids/globs to run instead of the
#                        chosen set, e.g. "3.*,7.1.1" (for debugging)
#   WS_CONFORMANCE_SHARDS shard counts to run under (default "1 2")
#
# Exits non-zero unless no case failed; the last line is
# "ws-conformance: N passed, M failed".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

kosoku_pin="kosoku==0.1.0"
bin="${SWITCHYARD_BIN:-$root/target/debug/switchyard}"
if [ ! -x "$bin" ]; then
    echo "ws-conformance: router binary not found at $bin (run 'cargo build' or set SWITCHYARD_BIN)" >&2
    exit 1
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

venv="$root/.venv-conformance"
python="$(command -v python3.11 || command -v python3)"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("kosoku") != sys.argv[1])' \
        "${kosoku_pin#kosoku==}" 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check "$kosoku_pin"
fi

reports="$root/target/ws-conformance"
mkdir -p "$reports"
counts="$(mktemp)"
trap 'rm -f "$counts"' EXIT

total_passed=0
total_failed=0
for shards in ${WS_CONFORMANCE_SHARDS:-1 2}; do
    printf '\n==> kosoku fuzzingclient against switchyard --shards %s (%s)\n' "$shards" "$bin"
    : >"$counts"
    set +e
    "$venv/bin/python" tests/conformance/ws_conformance.py \
        --bin "$bin" --shards "$shards" --outdir "$reports/shards$shards" \
        --counts-file "$counts" ${WS_CONFORMANCE_CASES:+--cases "$WS_CONFORMANCE_CASES"}
    rc=$?
    set -e
    read -r passed failed <"$counts" || { passed=0; failed=0; }
    # a driver that died without writing its counts is one failure
    if [ "$rc" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then failed=1; fi
    total_passed=$((total_passed + ${passed:-0}))
    total_failed=$((total_failed + ${failed:-0}))
done

echo "ws-conformance: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
