#!/usr/bin/env bash
# Checks `loadtest report` by looking at the picture: two short real runs
# against a freshly started router (debug build, listening on 127.0.0.1 only,
# ports picked here, --router-pid), a report of both, rendered in headless
# Chromium (installed with apt-get if missing); tests/report/check_report.py
# asserts on the rendered DOM and on screenshots (see its docstring). Bad
# input to `loadtest report` must exit 2, not panic. Bounded in time: every
# step has a timeout, and the router is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v chromium >/dev/null 2>&1; then
    sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -q && $sudo_ apt-get install -y -q chromium
fi
cargo build -p switchyard -p loadtest
target="${CARGO_TARGET_DIR:-$root/target}"
router="$target/debug/switchyard"
load="$target/debug/loadtest"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ws=$(free_port); rs=$(free_port)
work=$(mktemp -d)
"$router" --shards 1 --websocket "127.0.0.1:$ws" --rawsocket "127.0.0.1:$rs" --log warn 2>"$work/router.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
ready=0
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$rs") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$ws") 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
[ $ready = 1 ] || { echo "FAIL router did not listen within 10 s"; cat "$work/router.log"; exit 1; }

fail=0
timeout 60 "$load" rpc --url "rs://127.0.0.1:$rs" --window 4 --duration 1.5 --warmup 0.3 --quiet \
    --router-pid "$pid" --label "A: rpc rawsocket msgpack" --json "$work/a.json" >/dev/null
timeout 60 "$load" pubsub --url "ws://127.0.0.1:$ws/ws" --serializer json --subscribers 2 --duration 1.5 --warmup 0.3 --quiet \
    --router-pid "$pid" --label "B: pubsub websocket json" --json "$work/b.json" >/dev/null
timeout 60 "$load" report "$work/a.json" "$work/b.json" --out "$work/report.html"
timeout 60 "$load" report "$work/a.json" "$work/b.json" --format svg --out "$work/report.svg"
grep -q "<polyline" "$work/report.svg" && echo "ok   --format svg writes an SVG with curves" || { echo "FAIL --format svg"; fail=1; }

# bad input: a clear error and exit status 2, never a panic
echo '{"hello": "world"}' >"$work/other.json"
for bad in "$work/missing.json" "$work/other.json" "$work/router.log"; do
    rc=0; out=$(timeout 30 "$load" report "$bad" --out "$work/bad.html" 2>&1) || rc=$?
    if [ $rc = 2 ] && ! grep -q panicked <<<"$out" && [ ! -e "$work/bad.html" ]; then
        echo "ok   bad input $(basename "$bad"): exit 2: $out"
    else
        echo "FAIL bad input $(basename "$bad"): exit $rc: $out"; fail=1
    fi
done

timeout 300 python3 tests/report/check_report.py --report "$work/report.html" --work "$work" "$work/a.json" "$work/b.json" || fail=1
if [ -n "${REPORT_KEEP:-}" ]; then
    mkdir -p "$REPORT_KEEP" && cp "$work"/*.json "$work"/report* "$REPORT_KEEP"/ && echo "kept the report and screenshots in $REPORT_KEEP"
fi
[ $fail -eq 0 ] && echo "report check: passed" || { cat "$work/router.log"; exit 1; }
