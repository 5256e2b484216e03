#!/usr/bin/env bash
# Transports and serializers side by side in one run, RUNS times; prints
# medians and ratios against RawSocket MessagePack (docs/PERFORMANCE.md):
# pub/sub events/s (window 1024), RPC calls/s (16 in flight) and RPC p50
# (1 in flight) for RawSocket MessagePack and CBOR, WebSocket JSON,
# MessagePack and CBOR, each plain and batched, and WebSocket JSON with
# permessage-deflate, at PAYLOAD bytes of padding.
#
#   ./scripts/bench-transports.sh [--runs N] [--duration S] [--out DIR] [--payload B]
#
# One shard on CPU 0, the load generator on CPU 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=4; out="$root/target/bench-transports"; payload=64
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --payload) payload="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
. "$root/scripts/bench-lib.sh"
bench_args "${args[@]}"
bench_build
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet --payload "$payload"; }

rs=$(free_port); ws=$(free_port); wsz=$(free_port)
cat > "$out/switchyard.toml" <<TOML
[router]
shards = 1
cpus = "0"
log = "warn"
[[realm]]
name = "realm1"
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:$rs"
[[listener]]
type = "websocket"
bind = "127.0.0.1:$ws"
[[listener]]
type = "websocket"
bind = "127.0.0.1:$wsz"
[listener.deflate]
threshold = 0
TOML
"$router" --config "$out/switchyard.toml" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
wait_port "$rs"; wait_port "$ws"; wait_port "$wsz"

# name URL SERIALIZER [extra loadtest flags]
configs=(
    "rs-msgpack rs://127.0.0.1:$rs msgpack"
    "rs-cbor rs://127.0.0.1:$rs cbor"
    "ws-json ws://127.0.0.1:$ws/ws json"
    "ws-json-batched ws://127.0.0.1:$ws/ws json --batched"
    "ws-msgpack ws://127.0.0.1:$ws/ws msgpack"
    "ws-msgpack-batched ws://127.0.0.1:$ws/ws msgpack --batched"
    "ws-cbor ws://127.0.0.1:$ws/ws cbor"
    "ws-cbor-batched ws://127.0.0.1:$ws/ws cbor --batched"
)
for run in $(seq "$runs"); do
    echo "== run $run of $runs"
    for c in "${configs[@]}"; do
        read -r name url ser extra <<<"$c"
        L pubsub --url "$url" --serializer "$ser" $extra --window 1024 --json "$out/pubsub-$name-$run.json" >/dev/null
        L rpc --url "$url" --serializer "$ser" $extra --window 16 --json "$out/rpc16-$name-$run.json" >/dev/null
        L rpc --url "$url" --serializer "$ser" $extra --window 1 --json "$out/rpc1-$name-$run.json" >/dev/null
    done
done
kill "$pid"; wait "$pid" || true
trap - EXIT

python3 - "$out" "$runs" "${configs[@]}" <<'PY'
import json, statistics, sys
out, runs, configs = sys.argv[1], int(sys.argv[2]), [c.split()[0] for c in sys.argv[3:]]
def med(kind, name, key):
    vals = []
    for r in range(1, runs + 1):
        d = json.load(open(f"{out}/{kind}-{name}-{r}.json"))
        vals.append(d["latency"]["p50_us"] if key == "p50" else d[key])
    return statistics.median(vals)
key = {"pubsub": "received_per_s", "rpc16": "received_per_s", "rpc1": "p50"}
base = {k: med(k, "rs-msgpack", key[k]) for k in key}
print(f"| transport | pub/sub events/s | ratio | RPC calls/s, 16 in flight | ratio | RPC p50, 1 in flight | ratio |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for n in configs:
    ev = med("pubsub", n, "received_per_s"); c16 = med("rpc16", n, "received_per_s"); p50 = med("rpc1", n, "p50")
    print(f"| {n} | {ev:,.0f} | {ev / base['pubsub']:.3f} | {c16:,.0f} | {c16 / base['rpc16']:.3f} | {p50:.1f} µs | {p50 / base['rpc1']:.3f} |")
PY
