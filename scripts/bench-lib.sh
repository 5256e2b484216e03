# Shared by the bench scripts (sourced): the common flags, free ports, and
# waiting for a router to listen. Expects `root` and defaults for `runs`,
# `duration` and `out` to be set before `bench_args "$@"`.

# --runs N, --duration S, --out DIR; anything else is an error.
bench_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --runs) runs="$2"; shift 2 ;;
            --duration) duration="$2"; shift 2 ;;
            --out) out="$2"; shift 2 ;;
            *) echo "unknown argument $1" >&2; exit 2 ;;
        esac
    done
    mkdir -p "$out"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# The router and load generator, built once in release mode.
bench_build() {
    cargo build --release -p switchyard -p loadtest
    router="$root/target/release/switchyard"
    load="$root/target/release/loadtest"
}

# A one-shard cluster node on CPU 0: node_toml NATS_PORT CLUSTER NODE RS_PORT WS_PORT
node_toml() {
    cat <<TOML
[router]
shards = 1
cpus = "0"
[cluster]
nats_url = "nats://127.0.0.1:$1"
name = "$2"
node = "$3"
[[realm]]
name = "realm1"
[[listener]]
type = "websocket"
bind = "127.0.0.1:$5"
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:$4"
TOML
}

# The side-by-side scenarios, RUNS rounds, senders on SENDER, receivers on
# SAME and then OTHER in each round (OUT/same-<name>-<run>.json and
# OUT/cross-...): pub/sub at full load and at 2,000/s, RPC at 1 and 16 in
# flight. Expects `load`, `duration`; extra loadtest flags after the URLs.
#   two_sides OUT RUNS SENDER SAME OTHER [FLAGS...]
two_sides() {
    local out="$1" runs="$2" tx="$3" same="$4" other="$5"
    shift 5
    local L=("$load" --duration "$duration" --warmup 1 --cpus 1 --quiet "$@")
    for run in $(seq "$runs"); do
        for where in same cross; do
            local rx="$same"; [ "$where" = cross ] && rx="$other"
            echo "== run $run of $runs: receivers on the $where side"
            "${L[0]}" pubsub "${L[@]:1}" --url "$tx" --receiver-url "$rx" --payload 64 --window 1024 --json "$out/$where-pubsub-$run.json" >/dev/null
            "${L[0]}" pubsub "${L[@]:1}" --url "$tx" --receiver-url "$rx" --payload 64 --rate 2000 --json "$out/$where-pubsub2k-$run.json" >/dev/null
            "${L[0]}" rpc "${L[@]:1}" --url "$tx" --receiver-url "$rx" --payload 64 --window 1 --json "$out/$where-rpc1-$run.json" >/dev/null
            "${L[0]}" rpc "${L[@]:1}" --url "$tx" --receiver-url "$rx" --payload 64 --window 16 --json "$out/$where-rpc16-$run.json" >/dev/null
        done
    done
}

# two_sides' figures side by side: two_sides_table OUT RUNS "A title" "B title"
two_sides_table() {
    side_by_side "$1" "$2" "$3" "$4" same cross \
        "pub/sub 1->1 events/s|pubsub|received_per_s|" \
        "pub/sub 1->1 p50 us|pubsub|p50_us|latency" \
        "pub/sub lost|pubsub|lost|" \
        "pub/sub at 2,000/s p50 us|pubsub2k|p50_us|latency" \
        "pub/sub at 2,000/s p99 us|pubsub2k|p99_us|latency" \
        "RPC 1 in flight calls/s|rpc1|received_per_s|" \
        "RPC 1 in flight p50 us|rpc1|p50_us|latency" \
        "RPC 16 in flight calls/s|rpc16|received_per_s|"
}

# Medians of two sides measured in the same runs, and their ratio:
#   side_by_side OUT RUNS "A title" "B title" A_PREFIX B_PREFIX \
#       "label|name|key|sub" ...
# reads OUT/<prefix>-<name>-<run>.json for runs 1..RUNS; `sub` is the JSON
# object holding `key` ("" for the top level).
side_by_side() {
    python3 - "$@" <<'PY'
import json, os, statistics, sys
out, runs, ta, tb, pa, pb = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
rows = [r.split("|") for r in sys.argv[7:]]
def med(side, name, key, sub):
    vals = []
    for r in range(1, runs + 1):
        p = os.path.join(out, f"{side}-{name}-{r}.json")
        if os.path.exists(p):
            x = json.load(open(p))
            vals.append(x[sub][key] if sub else x[key])
    return statistics.median(vals) if vals else None
print(f"\nmedians of {runs} runs ({out})")
print(f"  {'':32s} {ta:>14s} {tb:>14s} {'ratio':>8s}")
for label, name, key, sub in rows:
    va, vb = med(pa, name, key, sub), med(pb, name, key, sub)
    ratio = f"{vb / va:8.3f}" if va and vb else "       -"
    fa = f"{va:14.1f}" if va is not None else f"{'-':>14s}"
    fb = f"{vb:14.1f}" if vb is not None else f"{'-':>14s}"
    print(f"  {label:32s} {fa} {fb} {ratio}")
PY
}
