"""Runs the kosoku WebSocket conformance cases against one switchyard router.

Used by scripts/ws-conformance.sh (run it there; this needs the kosoku venv):

    python ws_conformance.py --bin target/debug/switchyard --shards 1 \
        --outdir target/ws-conformance/shards1 --counts-file FILE

It starts the router (listener bound to 127.0.0.1:0, real port read from its
"switchyard ready" log line), puts the subprotocol relay in front of it, runs
the cases of cases.json with kosoku's fuzzingclient, stops the router with
SIGTERM (it must exit 0), judges every case, writes kosoku's HTML/JSON reports
plus verdicts.json to --outdir, prints one line per failed case and writes
"PASSED FAILED" to --counts-file. Exit status: 0 when nothing failed.

Judging (tests/conformance/README.md has the reasons):
  * a case passes when kosoku passes it (OK, NON-STRICT or INFORMATIONAL for
    both the message exchange and the close);
  * an *echo case* (one whose OK expectation contains an echoed message) that
    kosoku fails is judged by the WAMP rule instead: the events must be the OK
    expectation up to its first message, with that message replaced by a WAMP
    ABORT (the router must have reassembled and UTF-8-validated the message and
    found it is not WAMP), then nothing more, and the router must close the
    WebSocket itself with close code `abort_close_code` (1002).
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kosoku
from kosoku._report import write_reports

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subprotocol_relay import SubprotocolRelay  # noqa: E402

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
READY = re.compile(r"switchyard ready.*?listeners=\[([^\]]*)\]")
WS_ADDR = re.compile(r"Websocket (127\.0\.0\.1):(\d+)", re.IGNORECASE)

ROUTER_CONFIG = """\
[router]
shards = {shards}

[[realm]]
name = "realm1"

[[listener]]
type = "websocket"
bind = "127.0.0.1:0"
path = "{path}"

# permessage-deflate for sections 12 and 13; threshold 0 compresses even the
# ABORT that answers a non-WAMP message
[listener.deflate]
threshold = 0
"""


class RouterError(Exception):
    pass


def _tail(text, limit=4000):
    return text if len(text) <= limit else "...\n" + text[-limit:]


class Router:
    def __init__(self, binary, shards, path, workdir):
        self.workdir = Path(workdir)
        self.stderr_path = self.workdir / "router.stderr"
        config = self.workdir / "switchyard.toml"
        config.write_text(ROUTER_CONFIG.format(shards=shards, path=path))
        self.argv = [str(Path(binary).resolve()), "--config", str(config), "--log", "info"]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, cwd=str(self.workdir))
        self.host, self.port = self._wait_ready()

    def stderr_text(self):
        try:
            return ANSI.sub("", self.stderr_path.read_text("utf-8", "replace"))
        except OSError as e:
            return "<cannot read router stderr: {}>".format(e)

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            m = READY.search(self.stderr_text())
            if m:
                addr = WS_ADDR.search(m.group(1))
                if not addr:
                    self.kill()
                    raise RouterError("no WebSocket listener in the ready line: " + m.group(0))
                return addr.group(1), int(addr.group(2))
            if self.proc.poll() is not None:
                raise RouterError("router exited with code {} during startup\n{}".format(
                    self.proc.returncode, _tail(self.stderr_text())))
            if time.monotonic() > deadline:
                self.kill()
                raise RouterError("no 'switchyard ready' line within {} s\n{}".format(
                    STARTUP_TIMEOUT, _tail(self.stderr_text())))
            time.sleep(0.05)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM; returns None when it exited 0, else what went wrong."""
        if self.proc.poll() is not None:
            return "router died during the run (exit code {})".format(self.proc.returncode)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return "router did not exit within {} s of SIGTERM".format(SHUTDOWN_TIMEOUT)
        return None if rc == 0 else "router exited with code {} after SIGTERM".format(rc)


# -- judging -----------------------------------------------------------------

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")


def _short(event):
    event = tuple(event)
    if event and event[0] in ("message", "ping", "pong") and len(event) > 1:
        payload = event[1]
        if isinstance(payload, (bytes, bytearray)):
            payload = payload.decode("latin-1")
        if len(payload) > 40:
            payload = payload[:40] + "...({} chars)".format(len(payload))
        return (event[0], payload) + event[2:]
    return event


def _payload_bytes(payload):
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    try:
        return payload.encode("latin-1")  # kosoku hands binary payloads over as latin-1 text
    except UnicodeEncodeError:
        return payload.encode("utf-8")


def is_abort(event):
    """A received WAMP ABORT: JSON text [3, ...] or MessagePack array with first element 3."""
    event = tuple(event)
    if len(event) < 3 or event[0] != "message":
        return False
    payload, binary = event[1], event[2]
    if not binary:
        try:
            msg = json.loads(payload)
        except (ValueError, TypeError):
            return False
        return isinstance(msg, list) and len(msg) >= 1 and msg[0] == 3
    data = _payload_bytes(payload)
    return len(data) >= 2 and 0x91 <= data[0] <= 0x9F and data[1] == 0x03


def echo_prefix(result):
    """For an echo case: the OK expectation up to (not including) its first message, else None."""
    ok = (result.expected or {}).get("OK")
    if not ok:
        return None
    for i, event in enumerate(ok):
        if event[0] == "message":
            return [tuple(e) for e in ok[:i]]
    return None


DEFLATE_CASE = re.compile(r"^1[23]\.")
# kosoku's verdict on the router's (inflated) answer to its first message: a
# text ABORT of another length than a text echo, or text where a binary echo
# was due
INFLATED = re.compile(r"got length (\d+)|got binary False, expected binary True")


def judge_deflate(result, abort_close_code):
    """The WAMP rule for the permessage-deflate cases (12.x, 13.x), which
    check their echoes by length rather than by an expected event list: the
    router must have accepted one of kosoku's offers (kosoku checks the
    response parameters against its offer, and refuses a bad one), inflated
    the first compressed message (a router that cannot sends close 1007),
    answered with an ABORT that kosoku inflated in turn (it reports that
    message's length), and closed with `abort_close_code`."""
    problems = []
    response = result.http_response or ""
    if not re.search(r"(?im)^Sec-WebSocket-Extensions:\s*permessage-deflate", response):
        problems.append("no permessage-deflate in the response")
    got = INFLATED.search(result.result or "")
    if not got:
        problems.append("kosoku inflated no message from the router ({!r})".format(result.result))
    if result.remote_close_code != abort_close_code:
        problems.append("close code: expected {}, got {} (reason {!r})".format(
            abort_close_code, result.remote_close_code, result.remote_close_reason))
    if problems:
        return False, "wamp-abort-deflate", "; ".join(problems)
    return True, "wamp-abort-deflate", "compressed ABORT ({}) inflated by kosoku, router closed with {}".format(
        got.group(0), abort_close_code)


def judge(result, abort_close_code):
    """Returns (passed, how, detail)."""
    b, bc = result.behavior.value, result.behavior_close.value
    if result.passed or (b in PASSING and bc in PASSING):
        return True, "kosoku", "{} / {}".format(b, bc)
    if DEFLATE_CASE.match(result.case_id):
        return judge_deflate(result, abort_close_code)
    prefix = echo_prefix(result)
    if prefix is None:
        exp = result.expected_close or {}
        detail = ("kosoku: behavior={} ({}) close={} ({}); expected: events one of {}, close by {} "
                  "with code {}; got: events {}, close by {} with code {} reason {!r}").format(
            b, result.result, bc, result.result_close,
            {k: [_short(e) for e in v] for k, v in (result.expected or {}).items()},
            "kosoku" if exp.get("closedByMe") else "router", exp.get("closeCode"),
            [_short(e) for e in (result.received or [])],
            "kosoku" if result.closed_by_me else "router", result.remote_close_code,
            result.remote_close_reason)
        return False, "kosoku", detail
    got = [tuple(e) for e in (result.received or [])]
    problems = []
    if not (len(got) == len(prefix) + 1 and got[:len(prefix)] == prefix and is_abort(got[-1])):
        problems.append("events: expected {} + [ABORT], got {}".format(
            [_short(e) for e in prefix], [_short(e) for e in got]))
    if result.closed_by_me:
        problems.append("close: kosoku closed first; the router should close after its ABORT")
    if result.remote_close_code != abort_close_code:
        problems.append("close code: expected {}, got {} (reason {!r})".format(
            abort_close_code, result.remote_close_code, result.remote_close_reason))
    if problems:
        return False, "wamp-abort", "WAMP rule (kosoku: {} / {}): {}".format(b, bc, "; ".join(problems))
    return True, "wamp-abort", "ABORT instead of echo, router closed with {}".format(abort_close_code)


# -- run ---------------------------------------------------------------------

async def run_cases(url, include, exclude, parallelism, timeout):
    try:
        return await asyncio.wait_for(
            kosoku.run_fuzzingclient(url, include, exclude, concurrency=parallelism), timeout)
    except kosoku.FailureError as failure:
        return failure.results


async def main_async(args):
    cfg = json.loads((HERE / "cases.json").read_text())
    include = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else cfg["include"]
    exclude = [c for group in cfg["exclude"] for c in group["cases"]]
    outdir = Path(args.outdir)
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    tag = "shards={}".format(args.shards)

    workdir = tempfile.mkdtemp(prefix="ws-conformance-")
    failures = []  # lines to print
    infra_failed = 0  # router start/stop or run timeout: counted as one failure each
    results = []
    elapsed = 0.0
    try:
        router = Router(args.bin, args.shards, cfg["path"], workdir)
    except RouterError as e:
        print("FAIL {} router: {}".format(tag, e))
        shutil.rmtree(workdir, ignore_errors=True)
        return 0, 1
    relay = SubprotocolRelay(router.host, router.port, cfg["subprotocol"])
    try:
        await relay.start()
        url = "ws://127.0.0.1:{}{}".format(relay.port, cfg["path"])
        started = time.monotonic()
        try:
            results = await run_cases(url, include, exclude, cfg["parallelism"], cfg["run_timeout_s"])
        except asyncio.TimeoutError:
            failures.append("FAIL {} run: kosoku did not finish within {} s".format(tag, cfg["run_timeout_s"]))
            infra_failed += 1
        elapsed = time.monotonic() - started
    finally:
        await relay.close()
        stop_error = router.stop()
    if stop_error:
        failures.append("FAIL {} router: {}\n{}".format(tag, stop_error, _tail(router.stderr_text())))
        infra_failed += 1
    shutil.copy(router.stderr_path, outdir / "router.stderr")
    shutil.rmtree(workdir, ignore_errors=True)

    verdicts = {}
    passed = failed = 0
    by_how = {}
    for r in results:
        ok, how, detail = judge(r, cfg["abort_close_code"])
        verdicts[r.case_id] = {"passed": ok, "judged_by": how, "detail": detail,
                               "behavior": r.behavior.value, "behaviorClose": r.behavior_close.value,
                               "remoteCloseCode": r.remote_close_code}
        by_how.setdefault(how, [0, 0])[0 if ok else 1] += 1
        if ok:
            passed += 1
        else:
            failed += 1
            failures.append("FAIL {} {}: {}".format(tag, r.case_id, detail))
    if results:
        write_reports(results, str(outdir))
    (outdir / "verdicts.json").write_text(json.dumps(verdicts, indent=1, sort_keys=True))
    for line in failures:
        print(line)
    summary = ", ".join("{}: {} passed, {} failed".format(k, v[0], v[1]) for k, v in sorted(by_how.items()))
    print("{}: {} cases in {:.1f} s ({}); reports in {}".format(
        tag, len(results), elapsed, summary or "no results", outdir))
    return passed, failed + infra_failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="switchyard binary")
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--outdir", required=True, help="report directory (emptied first)")
    ap.add_argument("--counts-file", help="write 'PASSED FAILED' here")
    ap.add_argument("--cases", help="comma-separated case ids/globs to run instead of cases.json's include")
    args = ap.parse_args()
    passed, failed = asyncio.run(main_async(args))
    if args.counts_file:
        Path(args.counts_file).write_text("{} {}\n".format(passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
