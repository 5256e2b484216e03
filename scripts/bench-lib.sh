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
