#!/usr/bin/env bash
# Cluster figures on this machine (docs/PERFORMANCE.md, "Cluster"): a
# nats-server and two nodes (one shard each, all on CPU 0; the load
# generator on CPU 1), and for each of RUNS rounds the same scenarios with
# the receivers on the senders' node and on the other node, side by side.
#
#   ./scripts/bench-cluster.sh [--runs N] [--duration S] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=5; out="$root/target/bench-cluster"
# shellcheck source=scripts/bench-lib.sh
source "$root/scripts/bench-lib.sh"
bench_args "$@"
rm -rf "${out:?}"/*
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
command -v nats-server >/dev/null || { echo "nats-server is needed (apt-get install nats-server)" >&2; exit 2; }
bench_build
bin="$router"
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet --settle-ms 500; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
np=$(free_port)
taskset -c 0 nats-server -a 127.0.0.1 -p "$np" >"$out/nats.log" 2>&1 &
pids+=($!)
wait_port "$np"
declare -A rs
for n in a b; do
    cfg="$out/$n.toml"
    rs[$n]=$(free_port); ws=$(free_port)
    cat >"$cfg" <<TOML
[router]
shards = 1
cpus = "0"
[cluster]
nats_url = "nats://127.0.0.1:$np"
name = "bench"
node = "$n"
[[realm]]
name = "realm1"
[[listener]]
type = "websocket"
bind = "127.0.0.1:$ws"
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:${rs[$n]}"
TOML
    "$bin" --config "$cfg" --log warn >"$out/$n.log" 2>&1 &
    pids+=($!)
    wait_port "${rs[$n]}"
done
sleep 1  # the nodes meet (one heartbeat)
a="rs://127.0.0.1:${rs[a]}"; b="rs://127.0.0.1:${rs[b]}"
for run in $(seq "$runs"); do
    for where in same cross; do
        rx="$a"; [ "$where" = cross ] && rx="$b"
        echo "== run $run of $runs: receivers on the $where node"
        L pubsub --url "$a" --receiver-url "$rx" --payload 64 --window 1024 --json "$out/$where-pubsub-$run.json" >/dev/null
        L rpc --url "$a" --receiver-url "$rx" --payload 64 --window 1 --json "$out/$where-rpc1-$run.json" >/dev/null
        L rpc --url "$a" --receiver-url "$rx" --payload 64 --window 16 --json "$out/$where-rpc16-$run.json" >/dev/null
    done
done

side_by_side "$out" "$runs" "same node" "other node" same cross \
    "pub/sub 1->1 events/s|pubsub|received_per_s|" \
    "pub/sub 1->1 p50 us|pubsub|p50_us|latency" \
    "pub/sub lost|pubsub|lost|" \
    "RPC 1 in flight calls/s|rpc1|received_per_s|" \
    "RPC 1 in flight p50 us|rpc1|p50_us|latency" \
    "RPC 16 in flight calls/s|rpc16|received_per_s|"
