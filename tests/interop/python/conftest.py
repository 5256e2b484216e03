"""Fixtures that start a WAMP router as a subprocess for the interop tests.

Environment:
  ROUTER            "switchyard" (default) or "crossbar" (reference router).
  SWITCHYARD_BIN    path of the switchyard binary
                    (default: <repo>/target/debug/switchyard).
  INTEROP_SHARDS    comma-separated shard counts to run every test under
                    (default "1,2"; crossbar ignores it and runs once).
  CROSSBAR_BIN      path of the crossbar executable (default: "crossbar" on PATH,
                    then /tmp/crossbar-venv/bin/crossbar).

A test module may define ``switchyard_config(setup)``: it gets a RouterSetup
and returns the TOML its router runs with instead of SWITCHYARD_CONFIG
(test_auth.py does, for its principals, roles and TLS listeners).

Besides its WebSocket and RawSocket TCP listeners, the default config's router
has a RawSocket listener on a Unix socket (in a short temp dir of its own,
file mode UNIX_MODE) and a universal listener (RawSocket, WebSocket on /ws and
HTTP on one port): harness.ALL_TRANSPORTS reaches them. A module's own config
gets them with RouterSetup.transport_listeners().
"""

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import TRANSPORTS  # noqa: E402

REPO_ROOT = HERE.parents[2]  # tests/interop/python -> repo root
ROUTER = os.environ.get("ROUTER", "switchyard").strip().lower()
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0

if ROUTER not in ("switchyard", "crossbar"):
    raise pytest.UsageError("ROUTER must be 'switchyard' or 'crossbar', not {!r}".format(ROUTER))

if ROUTER == "crossbar":
    SHARDS = [1]
else:
    SHARDS = [int(x) for x in os.environ.get("INTEROP_SHARDS", "1,2").split(",") if x.strip()]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n):
    """n distinct free ports on 127.0.0.1."""
    while True:
        ports = [_free_port() for _ in range(n)]
        if len(set(ports)) == n:
            return ports


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _accepts_unix(path):
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(path)
            return True
    except OSError:
        return False


# the file mode the default config gives the Unix socket (listener `mode`)
UNIX_MODE = 0o660


def _unix_dir():
    """A fresh directory with a short path for a router's Unix socket: a socket
    path has at most 107 bytes (sun_path), and pytest's tmp dirs can be long."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    return tempfile.mkdtemp(prefix="sy-", dir=base)


def _switchyard_bin():
    path = os.environ.get("SWITCHYARD_BIN")
    if path:
        return Path(path)
    return REPO_ROOT / "target" / "debug" / "switchyard"


def _crossbar_bin():
    path = os.environ.get("CROSSBAR_BIN") or shutil.which("crossbar")
    if path:
        return path
    fallback = Path("/tmp/crossbar-venv/bin/crossbar")
    return str(fallback) if fallback.exists() else None


def switchyard_secret(method, password, *args):
    """What `switchyard secret METHOD ARGS...` prints for password (given on its
    stdin): one TOML line, such as `ticket = "$argon2id$..."`."""
    exe = _switchyard_bin()
    if not exe.exists():
        pytest.fail("switchyard binary not found at {} (build it with `cargo build`, or set "
                    "SWITCHYARD_BIN)".format(exe))
    proc = subprocess.run([str(exe), "secret", method, *args], input=password + "\n",
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.fail("switchyard secret {} {} exited with {}: {}".format(
            method, " ".join(args), proc.returncode, proc.stderr))
    line = proc.stdout.strip()
    assert line.startswith(method + " = "), \
        "unexpected `switchyard secret` output {!r}".format(line)
    return line


# The WAMP-Ticket of the default config's principals: random for each run
# (nothing secret is committed); the config keeps its hash only, made with
# `switchyard secret ticket` when the first router starts.
TICKET = secrets.token_urlsafe(18)

# Principals of the default config, for the tests that need sessions with
# authids they choose (an anonymous session's authid is the router's
# "anonymous-<session>"): they log in with WAMP-Ticket (harness.ticket_auth)
# and have the role "anonymous", so the tests' authrole checks and realm1's
# meta_admin_roles hold for them as for anonymous sessions.
PRINCIPALS = ["alice", "bob", "carol", "joiner", "pub-1"] + ["twin-" + t for t in TRANSPORTS]


@functools.lru_cache(maxsize=None)
def _ticket_line():
    # argon2 at its cheapest: these principals log in often
    return switchyard_secret("ticket", TICKET, "--memory", "64", "--iterations", "1")


def _principals():
    return "".join(
        '\n[[realm.principal]]\nauthid = "{}"\nrole = "anonymous"\n{}\n'.format(a, _ticket_line())
        for a in PRINCIPALS)


class RouterSetup:
    """What a test module's ``switchyard_config(setup)`` writes its config with."""

    def __init__(self, shards, workdir, ports, unix_path):
        self.shards = shards
        self.workdir = workdir  # the router's cwd; files the config names can go here
        # listeners the config must have: "ws" (WebSocket, path /ws) and "rs"
        # (RawSocket), both plain; "wss" and "rss" are free for TLS ones; "uni"
        # is the universal listener's of transport_listeners()
        self.ports = ports
        self.unix_path = unix_path  # transport_listeners()' Unix socket
        self.secret = switchyard_secret
        # more ports for listeners of the module's own (port(name)); the router
        # waits for them to accept and tells them as router.extra_ports
        self.extra_ports = {}

    def port(self, name):
        """A free 127.0.0.1 port, the same for the same name, for a listener of the
        module's own; the test finds it as router.extra_ports[name]."""
        if name not in self.extra_ports:
            taken = set(self.ports.values()) | set(self.extra_ports.values())
            while True:
                p = _free_port()
                if p not in taken:
                    break
            self.extra_ports[name] = p
        return self.extra_ports[name]

    def plain_listeners(self):
        """The two plain listeners every module's config has ("ws", "rs")."""
        return PLAIN_LISTENERS.format(ws=self.ports["ws"], rs=self.ports["rs"])

    def transport_listeners(self):
        """The Unix-socket RawSocket listener and the universal listener (optional;
        the default config has them, harness.ALL_TRANSPORTS needs them)."""
        return TRANSPORT_LISTENERS.format(unix=self.unix_path, mode="{:o}".format(UNIX_MODE),
                                          uni=self.ports["uni"])


PLAIN_LISTENERS = """\
[[listener]]
type = "websocket"
bind = "127.0.0.1:{ws}"
path = "/ws"

[[listener]]
type = "rawsocket"
bind = "127.0.0.1:{rs}"
"""

TRANSPORT_LISTENERS = """\
[[listener]]
type = "rawsocket"
bind = "unix:{unix}"
mode = "{mode}"

[[listener]]
type = "universal"
bind = "127.0.0.1:{uni}"
path = "/ws"
"""


SWITCHYARD_CONFIG = """\
[router]
shards = {shards}

[[realm]]
name = "realm1"
meta_admin_roles = ["anonymous"]  # test_registration_revocation removes callees

[[realm.history]]                 # test_event_history
uri = "com.example.history."
match = "prefix"
limit = 5
{principals}
[[realm]]
name = "realm.disclosed"
caller_disclosure = "always"
publisher_disclosure = "always"
{principals}
[[listener]]
type = "websocket"
bind = "127.0.0.1:{ws_port}"
path = "/ws"

[[listener]]
type = "rawsocket"
bind = "127.0.0.1:{rs_port}"

{transport_listeners}"""


def _crossbar_config(ws_port, rs_port):
    all_allowed = {
        "uri": "",
        "match": "prefix",
        "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
        "disclose": {"caller": False, "publisher": False},
        "cache": True,
    }
    return {
        "version": 2,
        "controller": {},
        "workers": [{
            "type": "router",
            "realms": [{
                "name": "realm1",
                "roles": [{"name": "anonymous", "permissions": [all_allowed]}],
            }],
            "transports": [
                {
                    "type": "websocket",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ws_port},
                    "url": "ws://127.0.0.1:{}/ws".format(ws_port),
                    "serializers": ["json", "msgpack"],
                },
                {
                    "type": "rawsocket",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs_port},
                    "serializers": ["msgpack", "json"],
                },
            ],
        }],
    }


class RouterProcess:
    """A running router subprocess and the URLs to reach it."""

    def __init__(self, kind, shards, proc, workdir, stdout_path, stderr_path, ports,
                 unix_path=None, universal=False, extra_ports=None):
        self.kind = kind
        self.shards = shards
        self.proc = proc
        self.workdir = workdir
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.ws_host = "127.0.0.1"
        self.ws_port = ports["ws"]
        self.rawsocket_host = "127.0.0.1"
        self.rawsocket_port = ports["rs"]
        self.ws_url = "ws://127.0.0.1:{}/ws".format(self.ws_port)
        # autobahn's RawSocket URL scheme: rs://host:port (rss:// for TLS). The serializer
        # is not part of the URL: it is chosen with WampRawSocketClientFactory(serializer=...)
        # (or ApplicationRunner(serializers=[MsgPackSerializer()])).
        self.rawsocket_url = "rs://127.0.0.1:{}".format(self.rawsocket_port)
        # the TLS listeners, where the module's switchyard_config has them
        # (harness.Harness.open(..., tls=...) connects to these)
        self.wss_port = ports["wss"]
        self.wss_url = "wss://127.0.0.1:{}/ws".format(self.wss_port)
        self.rss_port = ports["rss"]
        # the default config's principals log in with this ticket (harness.ticket_auth)
        self.ticket = TICKET if kind == "switchyard" else None
        # the Unix-socket RawSocket listener and the universal listener, where the
        # config has them (None where not)
        self.unix_path = unix_path
        self.unix_mode = UNIX_MODE if unix_path is not None else None
        self.universal_port = ports["uni"] if universal else None
        self.universal_ws_url = ("ws://127.0.0.1:{}/ws".format(self.universal_port)
                                 if universal else None)
        self.unix_dir = None  # removed after the router stopped
        # the ports of the module's own listeners (RouterSetup.port(name))
        self.extra_ports = dict(extra_ports or {})

    def __repr__(self):
        return "<{} shards={} ws={} rs={}>".format(self.kind, self.shards, self.ws_url,
                                                   self.rawsocket_url)

    def stderr_text(self, start=0):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(start)
                return f.read().decode("utf-8", "replace")
        except OSError as e:
            return "<cannot read router stderr: {}>".format(e)

    def stderr_size(self):
        try:
            return os.path.getsize(self.stderr_path)
        except OSError:
            return 0

    def alive(self):
        return self.proc.poll() is None


def _tail(text, limit=20000):
    return text if len(text) <= limit else "...[{} bytes cut]...\n".format(len(text) - limit) + \
        text[-limit:]


def _start_router(shards, tmp_path, module=None, extra_config=""):
    """Starts a router with shards shards in tmp_path (its cwd and log dir) and
    waits until it accepts. Switchyard's config is the module's
    switchyard_config(setup), or SWITCHYARD_CONFIG, with extra_config (TOML,
    e.g. a [cluster] section) after it."""
    ports = dict(zip(("ws", "rs", "wss", "rss", "uni"), _free_ports(5)))
    ws_port, rs_port = ports["ws"], ports["rs"]
    stdout_path = tmp_path / "router.stdout"
    stderr_path = tmp_path / "router.stderr"
    unix_dir = unix_path = None
    universal = False
    extra_ports = {}

    if ROUTER == "crossbar":
        exe = _crossbar_bin()
        if not exe:
            pytest.fail("ROUTER=crossbar but no crossbar executable found (set CROSSBAR_BIN)")
        cbdir = tmp_path / ".crossbar"
        cbdir.mkdir()
        (cbdir / "config.json").write_text(json.dumps(_crossbar_config(ws_port, rs_port), indent=2))
        argv = [exe, "start", "--cbdir", str(cbdir), "--loglevel", "info"]
    else:
        exe = _switchyard_bin()
        if not exe.exists():
            pytest.fail("switchyard binary not found at {} (build it with `cargo build`, or set "
                        "SWITCHYARD_BIN, or run with ROUTER=crossbar)".format(exe))
        unix_dir = _unix_dir()
        unix_path = os.path.join(unix_dir, "rs.sock")
        assert len(unix_path.encode()) < 100, unix_path
        setup = RouterSetup(shards, tmp_path, ports, unix_path)
        custom = getattr(module, "switchyard_config", None)
        if custom is not None:
            text = custom(setup)
        else:
            text = SWITCHYARD_CONFIG.format(shards=shards, ws_port=ws_port, rs_port=rs_port,
                                            principals=_principals(),
                                            transport_listeners=setup.transport_listeners())
        # the optional listeners, where the config has them
        if '"unix:{}"'.format(unix_path) not in text:
            unix_path = None
        universal = '"127.0.0.1:{}"'.format(ports["uni"]) in text
        extra_ports = setup.extra_ports
        if extra_config:
            text = text.rstrip("\n") + "\n\n" + extra_config
        config = tmp_path / "switchyard.toml"
        config.write_text(text)
        argv = [str(exe), "--config", str(config)]

    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=str(tmp_path))
    router = RouterProcess(ROUTER, shards, proc, tmp_path, stdout_path, stderr_path, ports,
                           unix_path=unix_path, universal=universal, extra_ports=extra_ports)
    router.unix_dir = unix_dir

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            _remove_unix_dir(router)
            pytest.fail("router exited with code {} during startup\nargv: {}\n--- stderr ---\n{}"
                        "\n--- stdout ---\n{}".format(proc.returncode, argv,
                                                      _tail(router.stderr_text()),
                                                      _tail(stdout_path.read_text("utf-8", "replace"))))
        # switchyard logs "switchyard ready" once every shard has bound every
        # listener; a port can accept earlier, on the first shard alone.
        ready = ROUTER != "switchyard" or "switchyard ready" in router.stderr_text()
        if ready and _accepts(ws_port) and _accepts(rs_port) \
                and (unix_path is None or _accepts_unix(unix_path)) \
                and (not universal or _accepts(ports["uni"])) \
                and all(_accepts(p) for p in extra_ports.values()):
            return router
        if time.monotonic() > deadline:
            _kill(proc)
            _remove_unix_dir(router)
            pytest.fail("router did not accept TCP on ports {} and {} within {} s\n--- stderr ---\n{}"
                        .format(ws_port, rs_port, STARTUP_TIMEOUT, _tail(router.stderr_text())))
        time.sleep(0.05)


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _remove_unix_dir(router):
    if router.unix_dir is not None:
        shutil.rmtree(router.unix_dir, ignore_errors=True)
        router.unix_dir = None


def _stop_router(router):
    proc = router.proc
    if proc.poll() is not None:
        pytest.fail("router {} had already exited with code {} before teardown\n--- stderr ---\n{}"
                    .format(router, proc.returncode, _tail(router.stderr_text())))
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill(proc)
        pytest.fail("router {} did not exit within {} s of SIGTERM\n--- stderr ---\n{}".format(
            router, SHUTDOWN_TIMEOUT, _tail(router.stderr_text())))
    # switchyard must shut down gracefully with 0; crossbar's node exits 1 on SIGTERM
    expected = (0, 1) if router.kind == "crossbar" else (0,)
    if rc not in expected:
        pytest.fail("router {} exited with code {} after SIGTERM (expected 0)\n--- stderr ---\n{}"
                    .format(router, rc, _tail(router.stderr_text())))


@pytest.fixture(scope="module", params=SHARDS, ids=lambda n: "shards{}".format(n))
def router_process(request, tmp_path_factory):
    """One router per test module and shard count; SIGTERM + exit code 0 at teardown."""
    tmp_path = tmp_path_factory.mktemp("router-shards{}-".format(request.param))
    router = _start_router(request.param, tmp_path, request.module)
    try:
        yield router
    finally:
        try:
            _stop_router(router)
        finally:
            _remove_unix_dir(router)


@pytest.fixture
def router(router_process, request):
    """Per-test view of the module's router: checks it survived, shows its log on failure."""
    start = router_process.stderr_size()
    assert router_process.alive(), "router {} is not running (exit code {})\n{}".format(
        router_process, router_process.proc.returncode, _tail(router_process.stderr_text()))
    yield router_process
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if not router_process.alive():
        pytest.fail("router {} died during the test with exit code {}\n--- stderr ---\n{}".format(
            router_process, router_process.proc.returncode, _tail(router_process.stderr_text())))
    if failed:
        log = router_process.stderr_text(start)
        print("--- router {} stderr during this test ---\n{}".format(router_process,
                                                                     _tail(log) or "<empty>"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    """One of ws-json, ws-msgpack, rs-msgpack."""
    return request.param
