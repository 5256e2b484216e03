#!/usr/bin/env bash
# The latency floor, side by side in one run (docs/PERFORMANCE.md, "The
# latency floor"): the ping-pong through the null forwarder with every mix
# of the reference blocking-socket client and forwarder and loadtest's
# glommio ones, and RPC through the router, at 1, 16 and 256 calls in
# flight next to the ceiling at the same window. The router and the
# forwarder on CPU 0, the load generator on CPU 1; RUNS rounds, medians.
#
#   ./scripts/bench-floor.sh [--runs N] [--duration S] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=3; out="$root/target/bench-floor"
source "$root/scripts/bench-lib.sh"
bench_args "$@"
bench_build
L() { "$load" "$@" --duration "$duration" --warmup 0.5 --cpus 1 --quiet; }

for run in $(seq "$runs"); do
    echo "== run $run of $runs"
    for c in blocking glommio; do
        for f in blocking glommio; do
            L ceiling --mode rpc --client "$c" --forwarder "$f" --forwarder-cpu 0 --payload 64 --inflight 1 \
                --json "$out/ceil-$c-$f-$run.json" >/dev/null
        done
    done
    rs=$(free_port)
    "$router" --shards 1 --cpus 0 --rawsocket "127.0.0.1:$rs" --log warn &
    pid=$!
    wait_port "$rs"
    for n in 1 16 256; do
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --inflight "$n" --router-pid "$pid" --json "$out/rpc-$n-$run.json" >/dev/null
        [ "$n" = 1 ] || L ceiling --mode rpc --forwarder-cpu 0 --payload 64 --inflight "$n" --json "$out/ceil-glommio-glommio-$n-$run.json" >/dev/null
    done
    kill -TERM "$pid"; wait "$pid" || true
done

python3 - "$out" "$runs" <<'PY'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def med(name, f):
    vals = []
    for r in range(1, runs + 1):
        p = os.path.join(out, f"{name}-{r}.json")
        if os.path.exists(p):
            vals.append(f(json.load(open(p))))
    return statistics.median(vals) if vals else None
p50 = lambda x: x["latency"]["p50_us"]
p99 = lambda x: x["latency"]["p99_us"]
rate = lambda x: x["received_per_s"]
cpu_per_call = lambda x: x["router"]["cpu_pct_mean"] / 100 / x["received_per_s"] * 1e6
print(f"\nmedians of {runs} runs ({out})")
print("ping-pong through the null forwarder, 1 in flight:")
print(f"  {'client / forwarder':28s} {'p50 us':>9s} {'p99 us':>9s} {'round trips/s':>14s}")
for c in ("blocking", "glommio"):
    for f in ("blocking", "glommio"):
        n = f"ceil-{c}-{f}"
        print(f"  {c + ' / ' + f:28s} {med(n, p50):9.1f} {med(n, p99):9.1f} {med(n, rate):14.0f}")
floor = med("ceil-blocking-blocking", p50)
print("RPC through the router (one shard), against the ceiling at the same window:")
print(f"  {'in flight':10s} {'calls/s':>10s} {'p50 us':>9s} {'router us CPU/call':>19s} {'ceiling/s':>10s} {'ratio':>6s}")
for n in (1, 16, 256):
    ceil = med("ceil-glommio-glommio" if n == 1 else f"ceil-glommio-glommio-{n}", rate)
    r = med(f"rpc-{n}", rate)
    print(f"  {n:<10d} {r:10.0f} {med(f'rpc-{n}', p50):9.1f} {med(f'rpc-{n}', cpu_per_call):19.2f} {ceil:10.0f} {r / ceil:6.2f}")
print(f"RPC p50 at 1 in flight over the blocking floor: {med('rpc-1', p50) / floor:.2f}")
PY
