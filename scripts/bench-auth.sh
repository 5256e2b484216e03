#!/usr/bin/env bash
# Authentication and TLS costs, side by side in one run, RUNS times; prints
# medians (recorded in docs/PERFORMANCE.md):
#  - pub/sub and RPC over RawSocket/TLS against plain RawSocket;
#  - RPC latency of an established session alone, and while 100 clients at
#    once log in with WAMP-Ticket against argon2id hashes (argon2's default
#    cost), with the logins' own rate and latency.
#
#   ./scripts/bench-auth.sh [--runs N] [--duration S] [--out DIR]
#
# One shard on CPU 0, one authentication thread, the load generators on CPU 1.
# A self-signed certificate is made for the run with openssl.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=5; out="$root/target/bench-auth"
# logins in the storm: enough to outlast the probe at one argon2 thread
# (about 45 logins/s here)
storm_sessions=400
. "$root/scripts/bench-lib.sh"
bench_args "$@"
bench_build
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
hash=$(echo 'storm-ticket' | "$router" secret ticket)
rs=$(free_port); rss=$(free_port)
cat > "$out/switchyard.toml" <<TOML
[router]
shards = 1
cpus = "0"
log = "warn"
auth_threads = 1
[[realm]]
name = "realm1"
[[realm.principal]]
authid = "storm"
role = "user"
$hash
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:$rs"
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:$rss"
[listener.tls]
certificate = "$out/cert.pem"
key = "$out/key.pem"
[limits]
auth_failures_before_backoff = 1000000
TOML
"$router" --config "$out/switchyard.toml" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
wait_port "$rs"

for run in $(seq "$runs"); do
    echo "== run $run of $runs"
    for mode in plain tls; do
        if [ "$mode" = plain ]; then url="rs://127.0.0.1:$rs"; else url="rss://localhost:$rss"; fi
        L pubsub --url "$url" --ca "$out/cert.pem" --payload 64 --window 1024 --json "$out/pubsub-$mode-$run.json" >/dev/null
        L rpc --url "$url" --ca "$out/cert.pem" --payload 64 --window 16 --json "$out/rpc16-$mode-$run.json" >/dev/null
        L rpc --url "$url" --ca "$out/cert.pem" --payload 64 --window 1 --json "$out/rpc1-$mode-$run.json" >/dev/null
    done
done
kill "$pid"; wait "$pid" || true
trap - EXIT

# The probe alone, then beside 100 clients logging in at once: with the
# authentication thread where the kernel puts it, and pinned to CPU 1 (off
# the shard's CPU, beside the load generator: this machine has two).
for pin in free cpu1; do
    sed -e "s/^auth_threads = 1$/auth_threads = 1\nauth_cpus = \"$([ $pin = cpu1 ] && echo 1)\"/" "$out/switchyard.toml" > "$out/storm-$pin.toml"
    "$router" --config "$out/storm-$pin.toml" &
    pid=$!
    trap 'kill $pid 2>/dev/null || true' EXIT
    wait_port "$rs"
    for run in $(seq "$runs"); do
        echo "== login storm ($pin), run $run of $runs"
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 1 --json "$out/probe-alone-$pin-$run.json" >/dev/null
        t0=$(date +%s.%N)
        "$load" connect --url "rs://127.0.0.1:$rs" --authid storm --ticket storm-ticket --sessions "$storm_sessions" \
            --concurrency 100 --duration 0.1 --cpus 1 --quiet --json "$out/storm-$pin-$run.json" >/dev/null &
        storm=$!
        sleep 0.5
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 1 --json "$out/probe-storm-$pin-$run.json" >/dev/null
        wait "$storm"
        t1=$(date +%s.%N)
        python3 -c "import json; d=json.load(open('$out/storm-$pin-$run.json')); d['wall_s']=$t1-$t0; json.dump(d, open('$out/storm-$pin-$run.json','w'))"
    done
    kill "$pid"; wait "$pid" || true
    trap - EXIT
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys, os
out, runs = sys.argv[1], int(sys.argv[2])
def med(name, key, sub=None):
    v = [json.load(open(p)) for p in (os.path.join(out, f"{name}-{r}.json") for r in range(1, runs + 1)) if os.path.exists(p)]
    return statistics.median((x[sub][key] if sub else x[key]) for x in v) if v else None
print(f"\nmedians of {runs} runs ({out})")
print(f"{'figure':34} {'plain':>12} {'TLS':>12} {'ratio':>7}")
for label, name, key, sub in [("pub/sub events/s", "pubsub", "received_per_s", None),
                              ("RPC calls/s, 16 in flight", "rpc16", "received_per_s", None),
                              ("RPC p50 us, 1 in flight", "rpc1", "p50_us", "latency")]:
    a, b = med(f"{name}-plain", key, sub), med(f"{name}-tls", key, sub)
    print(f"{label:34} {a:12.1f} {b:12.1f} {b / a:7.3f}")
for pin in ("free", "cpu1"):
    print(f"\n{'probe RPC, 1 in flight (' + pin + ')':34} {'alone':>12} {'100 logins':>12} {'ratio':>7}")
    for key in ("p50_us", "p99_us"):
        a, b = med(f"probe-alone-{pin}", key, "latency"), med(f"probe-storm-{pin}", key, "latency")
        print(f"{key:34} {a:12.1f} {b:12.1f} {b / a:7.3f}")
    st = [json.load(open(os.path.join(out, f"storm-{pin}-{r}.json"))) for r in range(1, runs + 1)]
    rate = statistics.median(x["received"] / x["wall_s"] for x in st)
    p50 = statistics.median(x["latency"]["p50_us"] for x in st) / 1000
    errors = sum(x.get("errors", 0) for x in st)
    print(f"storm ({pin}): {rate:.1f} logins/s (median), login p50 {p50:.0f} ms with 100 at once, {errors} errors")
PY
