#!/usr/bin/env bash
# Measures what the per-core knobs trade (docs/TUNING.md): for each setting,
# pub/sub throughput, RPC round-trip latency (1 call in flight) and the
# router's CPU use, with the load generator pinned to CPU 1.
#
#   ./scripts/bench-tuning.sh [--duration S] [--runs N] [--only SECTION]
#
# SECTION: spin, preempt, shards, mesh or wake (default: all of them).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration=4; runs=3; only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --only) only="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --release -p switchyard -p loadtest
router="$root/target/release/switchyard"
load="$root/target/release/loadtest"
tmp=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# measure NAME "router.key = value ..." SHARDS CPUS
measure() {
    local name="$1" knobs="$2" shards="$3" cpus="$4"
    local rs; rs=$(free_port)
    printf '[router]\nshards = %s\ncpus = "%s"\nlog = "warn"\n%b\n[[realm]]\nname = "realm1"\n[[listener]]\ntype = "rawsocket"\nbind = "127.0.0.1:%s"\n' \
        "$shards" "$cpus" "$knobs" "$rs" > "$tmp/c.toml"
    "$router" --config "$tmp/c.toml" &
    local pid=$!
    wait_port "$rs"
    # idle: router CPU seconds per wall second with no client at all
    local i0; i0=$(cpu_ticks "$pid"); sleep 3; local i1; i1=$(cpu_ticks "$pid")
    local idle; idle=$(python3 -c "print(($i1-$i0)/$(getconf CLK_TCK)/3)")
    local ev=() p50=() cpu=()
    for r in $(seq "$runs"); do
        "$load" pubsub --url "rs://127.0.0.1:$rs" --publishers 2 --subscribers 4 --topics 2 --duration "$duration" --warmup 1 --cpus 1 --quiet --json "$tmp/p.json" >/dev/null
        ev+=("$(python3 -c "import json;print(json.load(open('$tmp/p.json'))['received_per_s'])")")
        local t0; t0=$(cpu_ticks "$pid")
        "$load" rpc --url "rs://127.0.0.1:$rs" --window 1 --duration "$duration" --warmup 1 --cpus 1 --quiet --json "$tmp/r.json" >/dev/null
        local t1; t1=$(cpu_ticks "$pid")
        p50+=("$(python3 -c "import json;print(json.load(open('$tmp/r.json'))['latency']['p50_us'])")")
        # router CPU seconds per wall second during the RPC run (1 call in flight)
        cpu+=("$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/($duration+1))")")
    done
    kill -TERM "$pid"; wait "$pid" || true
    python3 - "$name" "$idle" "${ev[*]}" "${p50[*]}" "${cpu[*]}" <<'PY'
import statistics, sys
name, idle, (ev, p50, cpu) = sys.argv[1], float(sys.argv[2]), [list(map(float, a.split())) for a in sys.argv[3:]]
print(f"{name:42s} pubsub {statistics.median(ev):>10.0f} ev/s   rpc p50 {statistics.median(p50):>8.1f} us   "
      f"router CPU at 1 call in flight {statistics.median(cpu):5.2f}   idle {idle:5.3f}")
PY
}

want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
if want spin; then
    echo "== spin before park (1 shard on CPU 0)"
    for spin in 0 50 200; do measure "spin_before_park_us = $spin" "spin_before_park_us = $spin" 1 0; done
fi
if want preempt; then
    echo "== preempt timer (1 shard on CPU 0)"
    for p in 100 500 5000; do measure "preempt_timer_us = $p" "preempt_timer_us = $p" 1 0; done
fi
if want shards; then
    echo "== shard count (load generator shares CPU 1 with shard 1 when shards = 2)"
    measure "shards = 1 (CPU 0)" "" 1 0
    measure "shards = 2 (CPUs 0,1)" "" 2 "0-1"
fi
if want mesh; then
    echo "== cross-shard queues (2 shards)"
    for q in 64 8192; do measure "mesh_queue_capacity = $q" "mesh_queue_capacity = $q" 2 "0-1"; done
    for s in 0 20 200; do measure "mesh_spin_us = $s" "mesh_spin_us = $s" 2 "0-1"; done
fi
if want wake; then
    echo "== wake-up watchdog (1 shard on CPU 0)"
    for w in 0 10 100; do measure "wake_interval_ms = $w" "wake_interval_ms = $w" 1 0; done
fi
rm -rf "$tmp"
