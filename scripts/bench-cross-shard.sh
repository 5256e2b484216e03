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
two_sides "$out" "$runs" "$s0" "$s0" "$s1"
two_sides_table "$out" "$runs" "same shard" "other shard"
