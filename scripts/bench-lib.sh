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
