#!/usr/bin/env bash
# Cross-shard figures (docs/PERFORMANCE.md, "Cross-shard"): a router with 2
# shards, both on CPU 0 (the load generator on CPU 1), and a RawSocket
# listener per shard (`listener.shards`), so that each client's shard is
# the one its port names. For each of RUNS rounds, the same scenarios with
# the receivers on the senders' shard and on the other shard, side by side.
#
#   ./scripts/bench-cross-shard.sh [--runs N] [--duration S] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=5; out="$root/target/bench-cross-shard"
# shellcheck source=scripts/bench-lib.sh
source "$root/scripts/bench-lib.sh"
bench_args "$@"
rm -rf "${out:?}"/*
bench_build
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet; }

p0=$(free_port); p1=$(free_port); ws=$(free_port)
cat >"$out/router.toml" <<TOML
[router]
shards = 2
cpus = "0"
[[realm]]
name = "realm1"
[[listener]]
type = "websocket"
bind = "127.0.0.1:$ws"
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:$p0"
shards = [0]
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:$p1"
shards = [1]
TOML
"$router" --config "$out/router.toml" --log warn >"$out/router.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
wait_port "$p0"; wait_port "$p1"
s0="rs://127.0.0.1:$p0"; s1="rs://127.0.0.1:$p1"
for run in $(seq "$runs"); do
    for where in same cross; do
        rx="$s0"; [ "$where" = cross ] && rx="$s1"
        echo "== run $run of $runs: receivers on the $where shard"
        L pubsub --url "$s0" --receiver-url "$rx" --payload 64 --window 1024 --json "$out/$where-pubsub-$run.json" >/dev/null
        L pubsub --url "$s0" --receiver-url "$rx" --payload 64 --rate 2000 --json "$out/$where-pubsub2k-$run.json" >/dev/null
        L rpc --url "$s0" --receiver-url "$rx" --payload 64 --window 1 --json "$out/$where-rpc1-$run.json" >/dev/null
        L rpc --url "$s0" --receiver-url "$rx" --payload 64 --window 16 --json "$out/$where-rpc16-$run.json" >/dev/null
    done
done

side_by_side "$out" "$runs" "same shard" "other shard" same cross \
    "pub/sub 1->1 events/s|pubsub|received_per_s|" \
    "pub/sub lost|pubsub|lost|" \
    "pub/sub at 2,000/s p50 us|pubsub2k|p50_us|latency" \
    "pub/sub at 2,000/s p99 us|pubsub2k|p99_us|latency" \
    "RPC 1 in flight calls/s|rpc1|received_per_s|" \
    "RPC 1 in flight p50 us|rpc1|p50_us|latency" \
    "RPC 16 in flight calls/s|rpc16|received_per_s|"
