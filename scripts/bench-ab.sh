#!/usr/bin/env bash
# A/B comparison of two router binaries on this machine, side by side in one
# run: for each of RUNS rounds, binary A then binary B (one shard, pinned to
# CPU 0; the load generator of this checkout on CPU 1) through the same
# scenarios; prints the medians and the B/A ratios (docs/PERFORMANCE.md).
#
#   ./scripts/bench-ab.sh A_BIN B_BIN [--runs N] [--duration S] [--out DIR]
#
# Typical use: A = a build of the commit before a change, B = this build:
#   git worktree add /tmp/before <commit>
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before/target cargo build --release -p switchyard)
#   ./scripts/bench-ab.sh /tmp/before/target/release/switchyard target/release/switchyard
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ $# -ge 2 ] || { echo "usage: $0 A_BIN B_BIN [--runs N] [--duration S] [--out DIR]" >&2; exit 2; }
a="$1"; b="$2"; shift 2
runs=5; duration=5; out="$root/target/bench-ab"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
rm -rf "$out"; mkdir -p "$out"
cargo build --release -p loadtest
load="$root/target/release/loadtest"
# shellcheck source=scripts/bench-lib.sh
source "$root/scripts/bench-lib.sh"
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet; }

for run in $(seq "$runs"); do
    for side in a b; do
        bin="$a"; [ "$side" = b ] && bin="$b"
        echo "== run $run of $runs: $side ($bin)"
        ws=$(free_port); rs=$(free_port)
        "$bin" --shards 1 --cpus 0 --websocket "127.0.0.1:$ws" --rawsocket "127.0.0.1:$rs" --log warn &
        pid=$!
        wait_port "$rs"
        L pubsub --url "rs://127.0.0.1:$rs" --payload 64 --window 1024 --json "$out/$side-pubsub-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 1 --json "$out/$side-rpc1-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 16 --json "$out/$side-rpc16-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 512 --json "$out/$side-rpc512-$run.json" >/dev/null
        L fanout --url "rs://127.0.0.1:$rs" --subscribers 100 --payload 64 --json "$out/$side-fanout-$run.json" >/dev/null
        kill -TERM "$pid"; wait "$pid" || true
    done
done

side_by_side "$out" "$runs" A B a b \
    "pub/sub 1->1 events/s|pubsub|received_per_s|" \
    "RPC 1 in flight calls/s|rpc1|received_per_s|" \
    "RPC 1 in flight p50 us|rpc1|p50_us|latency" \
    "RPC 16 in flight calls/s|rpc16|received_per_s|" \
    "RPC 512 in flight calls/s|rpc512|received_per_s|" \
    "fan-out 1->100 deliveries/s|fanout|received_per_s|"
