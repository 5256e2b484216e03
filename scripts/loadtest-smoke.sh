#!/usr/bin/env bash
# Smoke run of the load generator against a freshly started router (debug
# build, 2 shards, ports picked here): every scenario runs briefly and must
# finish with no errors and no lost events. Asserts behaviour, never timing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build -p switchyard -p loadtest
router="$root/target/debug/switchyard"
load="$root/target/debug/loadtest"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ws=$(free_port); rs=$(free_port)
log=$(mktemp)
"$router" --shards 2 --websocket "127.0.0.1:$ws" --rawsocket "127.0.0.1:$rs" --log warn 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$rs") 2>/dev/null && break
    sleep 0.1
done

fail=0
check() {
    local name="$1"; shift
    local out
    if ! out=$("$load" "$@" --duration 0.5 --warmup 0.2 --quiet 2>&1); then
        echo "FAIL $name: loadtest exited non-zero"; echo "$out"; fail=1; return
    fi
    if ! grep -q "^errors *0$" <<<"$out"; then echo "FAIL $name: errors"; echo "$out"; fail=1; return; fi
    if grep -q "^lost" <<<"$out" && ! grep -q "^lost *0$" <<<"$out"; then echo "FAIL $name: lost events"; echo "$out"; fail=1; return; fi
    if ! grep -q "^out of order *0$" <<<"$out"; then echo "FAIL $name: out of order"; echo "$out"; fail=1; return; fi
    if grep -q "^received *0 " <<<"$out"; then echo "FAIL $name: nothing received"; echo "$out"; fail=1; return; fi
    echo "ok   $name"
}
check "pubsub rawsocket msgpack" pubsub --url "rs://127.0.0.1:$rs" --publishers 2 --subscribers 4 --topics 2
check "pubsub websocket json" pubsub --url "ws://127.0.0.1:$ws/ws" --serializer json --subscribers 2
check "pubsub rawsocket cbor" pubsub --url "rs://127.0.0.1:$rs" --serializer cbor --subscribers 2
check "pubsub websocket json batched" pubsub --url "ws://127.0.0.1:$ws/ws" --serializer json --batched --subscribers 2
check "rpc websocket cbor batched" rpc --url "ws://127.0.0.1:$ws/ws" --serializer cbor --batched --window 8
check "fanout" fanout --url "rs://127.0.0.1:$rs" --subscribers 20
check "rpc closed loop" rpc --url "rs://127.0.0.1:$rs" --callers 2 --callees 2 --window 4
check "rpc open loop" rpc --url "ws://127.0.0.1:$ws/ws" --rate 500
check "pubsub open loop" pubsub --url "rs://127.0.0.1:$rs" --rate 2000 --subscribers 2
check "connect" connect --url "rs://127.0.0.1:$rs" --sessions 200 --pid "$pid"
check "ceiling pubsub" ceiling --mode pubsub
check "ceiling pingpong" ceiling --mode pingpong
check "ceiling rpc, 16 in flight" ceiling --mode rpc --inflight 16
check "ceiling rpc, blocking reference client" ceiling --mode rpc --client blocking
check "ceiling rpc, blocking client and forwarder" ceiling --mode rpc --client blocking --forwarder blocking --inflight 4
check "rpc, spinning load thread" rpc --url "rs://127.0.0.1:$rs" --window 2 --spin-us 20
if out=$("$load" ceiling --mode pubsub --client blocking --quiet 2>&1); then
    echo "FAIL ceiling pubsub with a blocking client accepted"; fail=1
else
    echo "ok   ceiling pubsub with a blocking client: $(tail -1 <<<"$out")"
fi
# an unreachable router is a clear error, not a panic
port=$(free_port)
if out=$("$load" pubsub --url "rs://127.0.0.1:$port" --duration 0.2 --quiet 2>&1); then
    echo "FAIL unreachable router: exit 0"; fail=1
elif grep -q panicked <<<"$out"; then
    echo "FAIL unreachable router: panic"; echo "$out"; fail=1
else
    echo "ok   unreachable router: $(tail -1 <<<"$out")"
fi
if out=$("$load" pubsub --url "http://x" --quiet 2>&1); then echo "FAIL bad url accepted"; fail=1; else echo "ok   bad url: $out"; fi
kill -TERM $pid
wait $pid || { echo "FAIL router exit status $?"; fail=1; }
[ $fail -eq 0 ] && echo "loadtest smoke: all scenarios passed" || { cat "$log"; exit 1; }
