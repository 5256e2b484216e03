#!/usr/bin/env bash
# Churn check: 10k sessions opened and closed in cycles against one router.
# After every cycle the sessions must be back to zero on every shard, and
# after the last one the router's RSS must have come back near its start
# (at most halfway between the start and the peak with every session open).
# Exits non-zero otherwise. Bounded: each cycle holds its sessions 1 s.
#
#   ./scripts/churn.sh [--release] [--sessions N] [--cycles N] [--shards N]
#
# The test command runs it on the debug build; docs/PERFORMANCE.md records a
# release run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile=debug; sessions=10000; cycles=3; shards=2
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=release; shift ;;
        --sessions) sessions="$2"; shift 2 ;;
        --cycles) cycles="$2"; shift 2 ;;
        --shards) shards="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
# The router and the load generator each need a socket per session (both
# raise their soft limit to the hard one themselves); stay within it.
files=$(ulimit -Hn)
if [ "$files" != unlimited ] && [ "$sessions" -gt $((files - 256)) ]; then
    echo "note: the open-file limit ($files) allows $((files - 256)) sessions, not $sessions; using that"
    sessions=$((files - 256))
fi
if [ "$profile" = release ]; then cargo build --release -p switchyard -p loadtest; else cargo build -p switchyard -p loadtest; fi
router="$root/target/$profile/switchyard"
load="$root/target/$profile/loadtest"
log=$(mktemp)
# Port 0: the router picks free ports and names them in its "ready" line.
"$router" --shards "$shards" --websocket 127.0.0.1:0 --rawsocket 127.0.0.1:0 --log "warn,switchyard::shard=info" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "switchyard ready" "$log" && break; sleep 0.1; done
ready=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep "switchyard ready") || { echo "router did not start:"; cat "$log"; exit 1; }
addr() { grep -o "\"$1 [^\"]*\"" <<<"$ready" | sed "s/\"$1 //; s/\"//"; }
ws=$(addr Websocket); rs=$(addr Rawsocket)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
metric_sum() { python3 - "$ws" "$1" <<'PY'
import sys, urllib.request
addr, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
print(sum(int(l.split()[-1]) for l in text.splitlines() if l.startswith(f"switchyard_{name}{{")))
PY
}

start=$(rss_kib); peak=$start
echo "router pid $pid, $shards shards, RSS at start $((start / 1024)) MiB"
for c in $(seq "$cycles"); do
    out=$("$load" connect --url "rs://$rs" --sessions "$sessions" --pid "$pid" --duration 1 --warmup 0 --quiet 2>&1) || {
        echo "FAIL cycle $c: loadtest failed"; echo "$out"; exit 1; }
    grep -q "^errors *0$" <<<"$out" || { echo "FAIL cycle $c: connect errors"; echo "$out"; exit 1; }
    open_kib=$(grep -o -- '-> [0-9.]* MiB' <<<"$out" | awk '{printf "%d", $2 * 1024}')
    [ "$open_kib" -gt "$peak" ] && peak=$open_kib
    left=1
    for _ in $(seq 200); do
        left=$(metric_sum sessions)
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    [ "$left" -eq 0 ] || { echo "FAIL cycle $c: $left sessions left after the clients went"; exit 1; }
    sleep 3 # the shards give freed memory back within a second or two
    echo "cycle $c: $sessions sessions, RSS with them open $((open_kib / 1024)) MiB, 3 s after they left $(($(rss_kib) / 1024)) MiB"
done
end=$(rss_kib)
limit=$((start + (peak - start) / 2))
if [ "$end" -gt "$limit" ]; then
    echo "FAIL: RSS $((end / 1024)) MiB after churn, more than halfway from the start ($((start / 1024)) MiB) to the peak ($((peak / 1024)) MiB)"
    exit 1
fi
echo "ok   churn: RSS $((start / 1024)) MiB -> peak $((peak / 1024)) MiB -> $((end / 1024)) MiB"
