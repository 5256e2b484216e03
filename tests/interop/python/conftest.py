"""Fixtures that start a WAMP router as a subprocess for the interop tests.

Environment:
  ROUTER            "switchyard" (default) or "crossbar" (reference router).
  SWITCHYARD_BIN    path of the switchyard binary
                    (default: <repo>/target/debug/switchyard).
  INTEROP_SHARDS    comma-separated shard counts to run every test under
                    (default "1,2"; crossbar ignores it and runs once).
  CROSSBAR_BIN      path of the crossbar executable (default: "crossbar" on PATH,
                    then /tmp/crossbar-venv/bin/crossbar).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
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


def _two_free_ports():
    while True:
        a, b = _free_port(), _free_port()
        if a != b:
            return a, b


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


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

[[realm]]
name = "realm.disclosed"
caller_disclosure = "always"
publisher_disclosure = "always"

[[listener]]
type = "websocket"
bind = "127.0.0.1:{ws_port}"
path = "/ws"

[[listener]]
type = "rawsocket"
bind = "127.0.0.1:{rs_port}"
"""


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

    def __init__(self, kind, shards, proc, workdir, stdout_path, stderr_path, ws_port, rs_port):
        self.kind = kind
        self.shards = shards
        self.proc = proc
        self.workdir = workdir
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.ws_host = "127.0.0.1"
        self.ws_port = ws_port
        self.rawsocket_host = "127.0.0.1"
        self.rawsocket_port = rs_port
        self.ws_url = "ws://127.0.0.1:{}/ws".format(ws_port)
        # autobahn's RawSocket URL scheme: rs://host:port (rss:// for TLS). The serializer
        # is not part of the URL: it is chosen with WampRawSocketClientFactory(serializer=...)
        # (or ApplicationRunner(serializers=[MsgPackSerializer()])).
        self.rawsocket_url = "rs://127.0.0.1:{}".format(rs_port)

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


def _start_router(shards, tmp_path):
    ws_port, rs_port = _two_free_ports()
    stdout_path = tmp_path / "router.stdout"
    stderr_path = tmp_path / "router.stderr"

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
        config = tmp_path / "switchyard.toml"
        config.write_text(SWITCHYARD_CONFIG.format(shards=shards, ws_port=ws_port, rs_port=rs_port))
        argv = [str(exe), "--config", str(config)]

    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=str(tmp_path))
    router = RouterProcess(ROUTER, shards, proc, tmp_path, stdout_path, stderr_path,
                           ws_port, rs_port)

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail("router exited with code {} during startup\nargv: {}\n--- stderr ---\n{}"
                        "\n--- stdout ---\n{}".format(proc.returncode, argv,
                                                      _tail(router.stderr_text()),
                                                      _tail(stdout_path.read_text("utf-8", "replace"))))
        # switchyard logs "switchyard ready" once every shard has bound every
        # listener; a port can accept earlier, on the first shard alone.
        ready = ROUTER != "switchyard" or "switchyard ready" in router.stderr_text()
        if ready and _accepts(ws_port) and _accepts(rs_port):
            return router
        if time.monotonic() > deadline:
            _kill(proc)
            pytest.fail("router did not accept TCP on ports {} and {} within {} s\n--- stderr ---\n{}"
                        .format(ws_port, rs_port, STARTUP_TIMEOUT, _tail(router.stderr_text())))
        time.sleep(0.05)


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


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
    router = _start_router(request.param, tmp_path)
    try:
        yield router
    finally:
        _stop_router(router)


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
