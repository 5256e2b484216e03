#!/usr/bin/env bash
# How cluster throughput grows from 1 to 3 nodes on this machine
# (docs/PERFORMANCE.md, "Cluster: 1 to 3 nodes"). For N = 1, 2, 3: a
# nats-server and N nodes (one shard each, all on CPU 0), and N load
# generators at once on CPU 1, one per node, each a 1->1 pub/sub stream:
#   local: publisher and subscriber on node i;
#   cross: publisher on node i, subscriber on node i+1 (mod N; with N = 1
#          the stream stays local).
# Prints, per N, the median over RUNS of the summed events/s, and how busy
# each CPU was during the runs (from /proc/stat).
#
#   ./scripts/bench-cluster-scale.sh [--runs N] [--duration S] [--out DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; duration=3; out="$root/target/bench-cluster-scale"
# shellcheck source=scripts/bench-lib.sh
source "$root/scripts/bench-lib.sh"
bench_args "$@"
rm -rf "${out:?}"/*
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
command -v nats-server >/dev/null || { echo "nats-server is needed (apt-get install nats-server)" >&2; exit 2; }
bench_build

pids=()
stop_all() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT

# busy jiffies and all jiffies of cpu0 and cpu1
cpu_sample() { awk '/^cpu[01] /{busy=$2+$3+$4+$7+$8; all=busy+$5+$6; printf "%s %s ", busy, all}' /proc/stat; }

for nodes in 1 2 3; do
    np=$(free_port)
    taskset -c 0 nats-server -a 127.0.0.1 -p "$np" >"$out/nats-$nodes.log" 2>&1 &
    pids+=($!)
    wait_port "$np"
    urls=()
    for i in $(seq "$nodes"); do
        cfg="$out/n$nodes-$i.toml"
        rs=$(free_port); ws=$(free_port)
        node_toml "$np" scale "n$i" "$rs" "$ws" >"$cfg"
        "$router" --config "$cfg" --log warn >"$out/n$nodes-$i.log" 2>&1 &
        pids+=($!)
        wait_port "$rs"
        urls+=("rs://127.0.0.1:$rs")
    done
    sleep 1  # the nodes meet (one heartbeat)
    for run in $(seq "$runs"); do
        for where in local cross; do
            echo "== $nodes node(s), run $run of $runs: $where streams"
            before=$(cpu_sample)
            streams=()
            for i in $(seq 0 $((nodes - 1))); do
                rx=$i; [ "$where" = cross ] && rx=$(((i + 1) % nodes))
                "$load" pubsub --url "${urls[$i]}" --receiver-url "${urls[$rx]}" --payload 64 --window 256 \
                    --uri-prefix "scale.s$i" --duration "$duration" --warmup 1 --cpus 1 --quiet --settle-ms 500 \
                    --json "$out/$where-$nodes-$run-$i.json" >/dev/null &
                streams+=($!)
            done
            wait "${streams[@]}"
            echo "$before $(cpu_sample)" >"$out/$where-$nodes-$run.cpu"
        done
    done
    stop_all
done

python3 - "$out" "$runs" <<'PY'
import glob, json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
print(f"\nmedians of {runs} runs ({out}); events/s summed over the streams")
print(f"  {'nodes':>5s} {'local events/s':>15s} {'cross events/s':>15s} {'lost':>6s} {'cpu0 %':>7s} {'cpu1 %':>7s}")
for n in (1, 2, 3):
    row, lost, cpu = {}, 0, []
    for where in ("local", "cross"):
        totals = []
        for r in range(1, runs + 1):
            files = glob.glob(os.path.join(out, f"{where}-{n}-{r}-*.json"))
            if len(files) != n:
                continue
            xs = [json.load(open(f)) for f in files]
            totals.append(sum(x["received_per_s"] for x in xs))
            lost += sum(x["lost"] for x in xs)
            c = os.path.join(out, f"{where}-{n}-{r}.cpu")
            if os.path.exists(c):
                v = [int(t) for t in open(c).read().split()]
                b0, a0, b1, a1, B0, A0, B1, A1 = v
                cpu.append((100 * (B0 - b0) / max(1, A0 - a0), 100 * (B1 - b1) / max(1, A1 - a1)))
        row[where] = statistics.median(totals) if totals else float("nan")
    c0 = statistics.median([c[0] for c in cpu]) if cpu else float("nan")
    c1 = statistics.median([c[1] for c in cpu]) if cpu else float("nan")
    print(f"  {n:5d} {row['local']:15.0f} {row['cross']:15.0f} {lost:6d} {c0:7.0f} {c1:7.0f}")
PY
