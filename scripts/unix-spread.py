#!/usr/bin/env python3
"""How connections on a Unix-socket listener spread over shards, next to TCP
(SO_REUSEPORT). Starts target/release/switchyard (or $SWITCHYARD_BIN) with
SHARDS shards, opens N RawSocket JSON sessions one after the other (handshake,
HELLO, WELCOME) over the Unix socket (or TCP with a third argument "tcp"),
holds them all, and prints how many each shard serves (the unix_accepted
counter and the sessions gauge of GET /metrics).

    python3 scripts/unix-spread.py SHARDS N [tcp]
"""
import os
import tempfile
import json, re, socket, struct, subprocess, sys, time, urllib.request
work = tempfile.mkdtemp(prefix="sy-spread-")
path = os.path.join(work, "rs.sock")
cfg_path = os.path.join(work, "c.toml")
log_path = os.path.join(work, "router.log")
bin_path = os.environ.get("SWITCHYARD_BIN", "target/release/switchyard")
cfg = f"""[router]
shards = {sys.argv[1]}
[[realm]]
name = "realm1"
[[listener]]
type = "rawsocket"
bind = "unix:{path}"
[[listener]]
type = "websocket"
bind = "127.0.0.1:0"
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:0"
[limits]
max_connections = 200000
"""
open(cfg_path, "w").write(cfg)
p = subprocess.Popen([bin_path, "--config", cfg_path], stderr=open(log_path, "w"))
for _ in range(100):
    time.sleep(0.05)
    log = open(log_path).read()
    m = re.search(r"Websocket 127\.0\.0\.1:(\d+)", log)
    if m: break
port = int(m.group(1))
rsport = int(re.search(r"Rawsocket 127\.0\.0\.1:(\d+)", log).group(1))
tcp = len(sys.argv) > 3
hello = json.dumps([1,"realm1",{"roles":{"subscriber":{}}}]).encode()
N = int(sys.argv[2])
socks = []
t0 = time.perf_counter()
for i in range(N):
    if tcp:
        s = socket.create_connection(("127.0.0.1", rsport))
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
    s.sendall(bytes([0x7f, 0xf1, 0, 0]))
    assert s.recv(4)[0] == 0x7f
    s.sendall(struct.pack(">I", len(hello)) + hello)
    h = s.recv(4); n = struct.unpack(">I", b"\0"+h[1:])[0]
    body = b""
    while len(body) < n: body += s.recv(n-len(body))
    assert json.loads(body)[0] == 2
    socks.append(s)
dt = time.perf_counter() - t0
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
def metric(name):
    return [int(v) for v in re.findall(r"switchyard_%s\{shard=\"\d+\"\} (\d+)" % name, text)]
print(("tcp " if tcp else "unix ") + f"shards={sys.argv[1]} sessions={N} in {dt:.2f}s ({N/dt:.0f}/s, one client, sequential) unix_accepted={metric('unix_accepted')} sessions={metric('sessions')}")
for s in socks: s.close()
p.terminate(); p.wait()
