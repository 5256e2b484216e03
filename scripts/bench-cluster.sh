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
    node_toml "$np" bench "$n" "${rs[$n]}" "$ws" >"$cfg"
    "$bin" --config "$cfg" --log warn >"$out/$n.log" 2>&1 &
    pids+=($!)
    wait_port "${rs[$n]}"
done
sleep 1  # the nodes meet (one heartbeat)
a="rs://127.0.0.1:${rs[a]}"; b="rs://127.0.0.1:${rs[b]}"
two_sides "$out" "$runs" "$a" "$a" "$b" --settle-ms 500
two_sides_table "$out" "$runs" "same node" "other node"
