#!/usr/bin/env bash
# Measures Switchyard against the physical ceiling (and, with --crossbar,
# against Crossbar.io) on this machine, side by side in one run, RUNS times,
# and prints the medians and ratios recorded in docs/PERFORMANCE.md.
#
#   ./scripts/bench-compare.sh [--runs N] [--duration S] [--crossbar] [--out DIR]
#
# The router (or the forwarder) is pinned to CPU 0, the load generator to CPU 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=5; crossbar=0; out="$root/target/bench-compare"
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --crossbar) crossbar=1; shift ;;
        --out) out="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
cargo build --release -p switchyard -p loadtest
router="$root/target/release/switchyard"
load="$root/target/release/loadtest"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
L() { "$load" "$@" --duration "$duration" --warmup 1 --cpus 1 --quiet; }

for run in $(seq "$runs"); do
    echo "== run $run of $runs"
    ws=$(free_port); rs=$(free_port)
    "$router" --shards 1 --cpus 0 --websocket "127.0.0.1:$ws" --rawsocket "127.0.0.1:$rs" --log warn &
    pid=$!
    wait_port "$rs"
    L pubsub --url "rs://127.0.0.1:$rs" --payload 64 --window 1024 --json "$out/sy-pubsub-$run.json" >/dev/null
    L ceiling --mode pubsub --forwarder-cpu 0 --payload 64 --window 1024 --json "$out/ceil-pubsub-$run.json" >/dev/null
    L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 1 --json "$out/sy-rpc-$run.json" >/dev/null
    L ceiling --mode pingpong --forwarder-cpu 0 --payload 64 --window 1 --json "$out/ceil-pingpong-$run.json" >/dev/null
    L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 512 --json "$out/sy-rpcmax-$run.json" >/dev/null
    L fanout --url "rs://127.0.0.1:$rs" --subscribers 1000 --payload 64 --json "$out/sy-fanout-$run.json" >/dev/null
    kill -TERM "$pid"; wait "$pid" || true
done

echo "== idle sessions: RSS at 10k sessions"
ws=$(free_port); rs=$(free_port)
"$router" --shards 1 --cpus 0 --websocket "127.0.0.1:$ws" --rawsocket "127.0.0.1:$rs" --log warn &
pid=$!
wait_port "$rs"
"$load" connect --url "rs://127.0.0.1:$rs" --sessions 10000 --pid "$pid" --duration 1 --cpus 1 --quiet --json "$out/sy-connect.json" >/dev/null
kill -TERM "$pid"; wait "$pid" || true

if [ "$crossbar" = 1 ]; then
    echo "== Crossbar.io"
    venv="$root/.venv-crossbar"
    [ -x "$venv/bin/crossbar" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q "crossbar==26.10.1" "numpy<2"; }
    cb=$(mktemp -d); ws=$(free_port); rs=$(free_port)
    mkdir -p "$cb/.crossbar"
    cat > "$cb/.crossbar/config.json" <<JSON
{"version": 2, "controller": {}, "workers": [{"type": "router",
  "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
    {"uri": "", "match": "prefix", "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
     "disclose": {"caller": false, "publisher": false}, "cache": true}]}]}],
  "transports": [
    {"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": $ws}, "serializers": ["json", "msgpack"]},
    {"type": "rawsocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": $rs}, "serializers": ["msgpack", "json"]}]}]}
JSON
    taskset -c 0 "$venv/bin/crossbar" start --cbdir "$cb/.crossbar" --loglevel warn >"$cb/log" 2>&1 &
    cbpid=$!
    wait_port "$rs"; sleep 3
    for run in $(seq "$runs"); do
        L pubsub --url "rs://127.0.0.1:$rs" --payload 64 --window 1024 --json "$out/cb-pubsub-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 1 --json "$out/cb-rpc-$run.json" >/dev/null
        L rpc --url "rs://127.0.0.1:$rs" --payload 64 --window 512 --json "$out/cb-rpcmax-$run.json" >/dev/null
    done
    kill -TERM "$cbpid"; wait "$cbpid" || true
    rm -rf "$cb"
fi

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys, os
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    vals = []
    for r in range(1, runs + 1):
        p = os.path.join(out, f"{name}-{r}.json")
        if os.path.exists(p):
            vals.append(json.load(open(p)))
    return vals
def med(name, key, sub=None):
    v = load(name)
    if not v: return None
    return statistics.median((x[sub][key] if sub else x[key]) for x in v)
sy_ev = med("sy-pubsub", "received_per_s"); ceil_fr = med("ceil-pubsub", "received_per_s")
sy_p50 = med("sy-rpc", "p50_us", "latency"); ceil_p50 = med("ceil-pingpong", "p50_us", "latency")
sy_calls = med("sy-rpc", "received_per_s"); fan = med("sy-fanout", "received_per_s")
rows = [
    ("pub/sub 1->1 events/s (switchyard)", sy_ev),
    ("ceiling frames/s", ceil_fr),
    ("ratio events/s over ceiling frames/s", sy_ev / ceil_fr if sy_ev and ceil_fr else None),
    ("RPC p50 us (switchyard, 1 in flight)", sy_p50),
    ("ceiling ping-pong p50 us", ceil_p50),
    ("ratio RPC p50 over ceiling p50", sy_p50 / ceil_p50 if sy_p50 and ceil_p50 else None),
    ("RPC calls/s (switchyard, 1 in flight)", sy_calls),
    ("RPC calls/s (switchyard, 512 in flight)", med("sy-rpcmax", "received_per_s")),
    ("fan-out 1->1000 deliveries/s", fan),
    ("ratio fan-out deliveries/s over 1->1 events/s", fan / sy_ev if fan and sy_ev else None),
]
c = os.path.join(out, "sy-connect.json")
if os.path.exists(c):
    rows.append(("RSS per idle session at 10k sessions (bytes)", json.load(open(c)).get("rss_per_session_bytes")))
cb_ev = med("cb-pubsub", "received_per_s"); cb_calls = med("cb-rpc", "received_per_s")
if cb_ev:
    rows += [("Crossbar pub/sub events/s", cb_ev), ("switchyard over Crossbar events/s", sy_ev / cb_ev),
             ("Crossbar RPC calls/s (1 in flight)", cb_calls), ("switchyard over Crossbar calls/s (1 in flight)", sy_calls / cb_calls if cb_calls else None),
             ("Crossbar RPC calls/s (512 in flight)", med("cb-rpcmax", "received_per_s")),
             ("switchyard over Crossbar calls/s (512 in flight)", med("sy-rpcmax", "received_per_s") / med("cb-rpcmax", "received_per_s") if med("cb-rpcmax", "received_per_s") else None),
             ("Crossbar RPC p50 us", med("cb-rpc", "p50_us", "latency"))]
print(f"\nmedians of {runs} runs ({out})")
for k, v in rows:
    print(f"  {k:50s} {v:14.2f}" if isinstance(v, (int, float)) else f"  {k:50s} {v}")
PY
