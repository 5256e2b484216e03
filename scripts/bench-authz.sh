#!/usr/bin/env bash
# Authorization cost: pub/sub and RPC through a realm without roles against
# the same realm whose sessions' role has 100 prefix rules (the one that
# matches sorted last among equals), side by side, RUNS times; prints medians.
#
#   ./scripts/bench-authz.sh [--runs N] [--duration S] [--out DIR]
#
# The router is pinned to CPU 0 (one shard), the load generator to CPU 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=5; out="$root/target/bench-authz"
. "$root/scripts/bench-lib.sh"
bench_args "$@"
bench_build
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet; }

config() { # $1: with rules (1) or not (0), $2: RawSocket port
    printf '[router]\nshards = 1\ncpus = "0"\nlog = "warn"\n[[realm]]\nname = "realm1"\n'
    if [ "$1" = 1 ]; then
        printf '[[realm.role]]\nname = "anonymous"\n'
        for i in $(seq 1 99); do
            printf '[[realm.role.permission]]\nuri = "com.example.area%d."\nmatch = "prefix"\nallow = ["call", "register", "publish", "subscribe"]\n' "$i"
        done
        printf '[[realm.role.permission]]\nuri = "loadtest."\nmatch = "prefix"\nallow = ["call", "register", "publish", "subscribe"]\n'
    fi
    printf '[[listener]]\ntype = "rawsocket"\nbind = "127.0.0.1:%s"\n' "$2"
}

for run in $(seq "$runs"); do
    echo "== run $run of $runs"
    for rules in 0 1; do
        rs=$(free_port)
        config "$rules" "$rs" > "$out/config-$rules.toml"
        "$router" --config "$out/config-$rules.toml" &
        pid=$!
        wait_port "$rs"
        L pubsub --url "rs://127.0.0.1:$rs" --payload 64 --window 1024 --json "$out/pubsub-$rules-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 16 --json "$out/rpc-$rules-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 1 --json "$out/rpc1-$rules-$run.json" >/dev/null
        kill "$pid"; wait "$pid" || true
    done
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys, os
out, runs = sys.argv[1], int(sys.argv[2])
def med(name, key, sub=None):
    v = [json.load(open(p)) for p in (os.path.join(out, f"{name}-{r}.json") for r in range(1, runs + 1)) if os.path.exists(p)]
    return statistics.median((x[sub][key] if sub else x[key]) for x in v) if v else None
rows = []
for label, name, key, sub in [("pub/sub events/s", "pubsub", "received_per_s", None),
                              ("RPC calls/s, 16 in flight", "rpc", "received_per_s", None),
                              ("RPC p50 us, 1 in flight", "rpc1", "p50_us", "latency")]:
    a, b = med(f"{name}-0", key, sub), med(f"{name}-1", key, sub)
    rows.append((label, a, b, b / a if a and b else None))
print(f"\nmedians of {runs} runs ({out})")
print(f"{'figure':32} {'no roles':>12} {'100 rules':>12} {'ratio':>7}")
for label, a, b, r in rows:
    print(f"{label:32} {a:12.1f} {b:12.1f} {r:7.3f}")
PY
