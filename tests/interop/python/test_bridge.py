"""The HTTP bridge (`[listener.bridge]`, `[[realm.bridge_key]]`) with real HTTP
clients: Python's `requests` and Debian's `curl`, against autobahn-python
WebSocket and RawSocket sessions on the other end.

The module's router has, besides the plain WebSocket and RawSocket listeners,
two listeners of its own (conftest's RouterSetup.port):

  br      websocket (path /ws) with `[listener.bridge]` at its default path
          /http, call_timeout_ms 5000, replay_window_s 60
  br-uni  universal (path /ws) with `[listener.bridge]` path "/api/bridge/"
          (the trailing '/' is dropped), and GET /metrics

and three realms:

  realm1   no roles (every session may do everything); bridge keys "svc"
           (bearer token, its token_sha256 as `switchyard secret bearer`
           prints it; role "service") and "signer" (hmac_secret; role "signer")
  guarded  roles: "backend" (the anonymous role: register, subscribe, publish
           on com.guarded.) and "reader" (call, subscribe on com.guarded.);
           bridge key "limited" (bearer, role "reader")

Checked: publish (200 with the publication ID subscribers see, args and kwargs
exact across JSON and MessagePack subscribers, options passed on: disclose_me,
eligible; 202 unacknowledged), call (args/kwargs round trip, the caller's
identity disclosed, an ApplicationError as 502, no callee 404, a timeout 504
that interrupts the callee, roles 403), progressive results streamed as SSE
and NDJSON while the callee is still running (it finishes only once the HTTP
client has read its progressive results), signed requests (HMAC-SHA256 made
here, hex and base64, with a query in the target) and their replays, stale
timestamps and bad signatures (401, counted on /metrics), bad bodies (400
naming the field), and the same with curl (publish, call, a signed call, and
`curl -N` reading an SSE stream).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import time

import conftest
import pytest
import requests
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, PublishOptions, RegisterOptions, SubscribeOptions

from harness import SENTINEL, WAIT, EventSink, Harness, assert_same, run, until_sentinel

pytestmark = pytest.mark.skipif(
    os.environ.get("ROUTER", "switchyard").strip().lower() != "switchyard",
    reason="the HTTP bridge ([listener.bridge], [[realm.bridge_key]]) is Switchyard's")

ACK = PublishOptions(acknowledge=True)
DETAILS = SubscribeOptions(details=True)

# credentials: random for each run, nothing secret is committed
TOKEN = secrets.token_urlsafe(24)           # key "svc" of realm1
LIMITED_TOKEN = secrets.token_urlsafe(24)   # key "limited" of guarded
SECRET = secrets.token_hex(24)              # key "signer" of realm1 (hmac_secret)

DEFAULT_PATH = "/http"       # br: [listener.bridge] without path
UNI_PATH = "/api/bridge"     # br-uni: path = "/api/bridge/"
CALL_TIMEOUT_MS = 5000
REPLAY_WINDOW_S = 60

# JSON payloads that must come through exactly: unicode, 64-bit integers,
# floats (2.0 stays a float), null, booleans, empty and nested containers
ARGS = [
    "grüße 世界 🚀",
    2 ** 53,
    2 ** 63 - 1,
    -2 ** 63,
    0,
    -1,
    3.14159,
    2.0,
    -0.5,
    None,
    True,
    False,
    "",
    [],
    {},
    [1, [2, [3, "x"]], {"a": {"b": [None, True, 1.5, "ключ"]}}],
]
KWARGS = {
    "unicode": "grüße",
    "big": 2 ** 63 - 1,
    "small": -2 ** 63,
    "float": 2.5,
    "none": None,
    "t": True,
    "nested": {"list": [1, 2.5, "three", None], "dict": {"k": "v"}},
    "emoji🚀": "value",
}

CONFIG = """\
[router]
shards = {shards}

[[realm]]
name = "realm1"

[[realm.bridge_key]]
authid = "svc"
role = "service"
{svc_token}

[[realm.bridge_key]]
authid = "signer"
role = "signer"
hmac_secret = "{secret}"

[[realm]]
name = "guarded"
anonymous_role = "backend"

[[realm.role]]
name = "backend"
[[realm.role.permission]]
uri = "com.guarded."
match = "prefix"
allow = ["register", "subscribe", "publish"]

[[realm.role]]
name = "reader"
[[realm.role.permission]]
uri = "com.guarded."
match = "prefix"
allow = ["call", "subscribe"]

[[realm.bridge_key]]
authid = "limited"
role = "reader"
token_sha256 = "{limited_sha}"

{plain}
[[listener]]
type = "websocket"
bind = "127.0.0.1:{br}"
path = "/ws"
[listener.bridge]
call_timeout_ms = {call_timeout}
replay_window_s = {window}

[[listener]]
type = "universal"
bind = "127.0.0.1:{br_uni}"
path = "/ws"
[listener.bridge]
path = "{uni_path}/"
call_timeout_ms = {call_timeout}
replay_window_s = {window}
"""


BINARY = b"\x00\x01\xff"


def b64bin(data):
    """bytes as WAMP's JSON carries them: NUL, then base64."""
    return "\u0000" + base64.b64encode(data).decode()


def _sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def _secret_bearer(token):
    """What `switchyard secret bearer` prints for token (on its stdin)."""
    exe = conftest._switchyard_bin()
    proc = subprocess.run([str(exe), "secret", "bearer"], input=token + "\n",
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return proc.stdout.strip()


def switchyard_config(setup):
    """The router of this module (conftest's RouterSetup hook)."""
    return CONFIG.format(shards=setup.shards, plain=setup.plain_listeners(),
                         svc_token=_secret_bearer(TOKEN), secret=SECRET,
                         limited_sha=_sha256_hex(LIMITED_TOKEN),
                         br=setup.port("br"), br_uni=setup.port("br-uni"), uni_path=UNI_PATH,
                         call_timeout=CALL_TIMEOUT_MS, window=REPLAY_WINDOW_S)


# ---------------------------------------------------------------------------
# HTTP helpers


def _base(router, listener="br"):
    path = DEFAULT_PATH if listener == "br" else UNI_PATH
    return "http://127.0.0.1:{}{}".format(router.extra_ports[listener], path)


def _bearer(token=TOKEN):
    return {"Authorization": "Bearer " + token}


def _encode(body):
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _post(url, body, headers=None, timeout=WAIT):
    """requests.post of body (a dict as JSON, or bytes as they are)."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return requests.post(url, data=_encode(body), headers=h, timeout=timeout)


async def post(url, body, headers=None):
    """_post in a thread: the loop goes on serving the autobahn sessions
    (a callee answers the call while the HTTP client waits)."""
    return await asyncio.to_thread(_post, url, body, headers)


def _sign(secret, target, body, ts=None, nonce=None, key="signer", encoding="hex"):
    """The X-Switchyard-* headers of a signed request: HMAC-SHA256(secret,
    f"{ts}\\n{nonce}\\nPOST\\n{target}\\n" + body)."""
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_hex(16) if nonce is None else nonce
    mac = hmac.new(secret.encode(), "{}\n{}\nPOST\n{}\n".format(ts, nonce, target).encode()
                   + body, hashlib.sha256).digest()
    sig = mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()
    return {"X-Switchyard-Key": key, "X-Switchyard-Timestamp": str(ts),
            "X-Switchyard-Nonce": nonce, "X-Switchyard-Signature": sig}


def _json_of(resp):
    assert resp.headers.get("Content-Type") == "application/json", \
        (resp.status_code, resp.headers, resp.text)
    return resp.json()


def _expect(resp, status):
    """The JSON body of resp, which must have this status."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    return _json_of(resp)


def _metrics(port):
    """GET /metrics on the universal listener: {counter: sum over shards}."""
    resp = requests.get("http://127.0.0.1:{}/metrics".format(port), timeout=WAIT)
    assert resp.status_code == 200, (resp.status_code, resp.text)
    out = {}
    for m in re.finditer(r'^switchyard_(\w+)\{shard="\d+"\} (-?\d+)$', resp.text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


async def metrics(router):
    return await asyncio.to_thread(_metrics, router.extra_ports["br-uni"])


def _parse_sse(lines):
    """(event, data) of each server-sent event in an iterator of text lines
    (data parsed as JSON)."""
    event, data = None, []
    for line in lines:
        if line == "":
            if event is not None or data:
                yield event, json.loads("\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    assert event is None and not data, "the stream ended inside an event: {!r} {!r}".format(
        event, data)


def _parse_ndjson(lines):
    for line in lines:
        if line:
            item = json.loads(line)
            yield ("progress" if item.pop("progress", False) is True else "final"), item


def _stream(url, body, headers, on_item):
    """POSTs with requests (stream=True) and reads the response line by line as
    it comes: (status, content type, [(kind, data)]); on_item(kind, data) is
    called for each item as soon as it is read. SSE or NDJSON by its content
    type; anything else is read whole."""
    h = {"Content-Type": "application/json"}
    h.update(headers)
    with requests.post(url, data=_encode(body), headers=h, stream=True, timeout=WAIT) as resp:
        ctype = resp.headers.get("Content-Type")
        if resp.status_code != 200 or ctype not in ("text/event-stream", "application/x-ndjson"):
            return resp.status_code, ctype, resp.content
        # chunk_size=1: nothing waits for a buffer to fill (the response has no
        # Content-Length; it ends when the router closes the connection)
        lines = (line.decode("utf-8") for line in resp.iter_lines(chunk_size=1))
        parse = _parse_sse if ctype == "text/event-stream" else _parse_ndjson
        items = []
        for kind, data in parse(lines):
            items.append((kind, data))
            on_item(kind, data)
        return resp.status_code, ctype, items


class Counter:
    """A callee whose progressive results wait for the HTTP client: it sends
    `n` progressive results (args [i], kwargs {"step": i}), then waits until
    `release()` (the client read them all), then answers ("done", total=n) or
    raises `fail`."""

    def __init__(self):
        self.go = asyncio.Event()
        self.seen = []  # CallDetails.progress of each invocation (None: not asked)

    def release(self, *_):
        self.go.set()

    async def __call__(self, n, fail=None, details=None):
        self.seen.append(details.progress)
        if details.progress is not None:
            for i in range(n):
                details.progress(i, step=i)
            await asyncio.wait_for(self.go.wait(), WAIT)
            self.go.clear()
        if fail:
            raise ApplicationError(fail, "stopped at", n, why="asked")
        return CallResult("done", total=n)


# ---------------------------------------------------------------------------
# the key's token


def test_secret_bearer_prints_the_tokens_sha256():
    """`switchyard secret bearer` prints the hex SHA-256 of the token it reads,
    as a `token_sha256 = "..."` line (realm1's "svc" key is configured with
    it, and its requests are accepted below)."""
    assert _secret_bearer(TOKEN) == 'token_sha256 = "{}"'.format(_sha256_hex(TOKEN))


# ---------------------------------------------------------------------------
# publish (requests)


def test_publish_reaches_subscribers(router):
    """POST /http/realm1/publish: 200 {"publication": id}; subscribers over
    WebSocket JSON (on the bridge's own listener too), WebSocket MessagePack
    and RawSocket MessagePack get the event with that publication ID and the
    args and kwargs exactly; the publisher is not disclosed unless options
    say disclose_me, and then it is the key's authid and role."""
    topic = "com.example.bridge.news"
    url = _base(router) + "/realm1/publish"
    ws_br = "ws://127.0.0.1:{}/ws".format(router.extra_ports["br"])

    async def main():
        async with Harness(router) as h:
            subs = [await h.open("ws-json", name="sub-br", url=ws_br)]
            subs += [await h.open(t, name="sub-" + t) for t in ("ws-json", "ws-msgpack",
                                                                 "rs-msgpack")]
            sinks = [EventSink() for _ in subs]
            for s, sink in zip(subs, sinks):
                await s.subscribe(sink.handler, topic, options=DETAILS)

            resp = await post(url, {"topic": topic, "args": ARGS, "kwargs": KWARGS}, _bearer())
            body = _expect(resp, 200)
            assert set(body) == {"publication"}, body
            publication = body["publication"]
            assert type(publication) is int and 1 <= publication <= 2 ** 53, body
            for sink in sinks:
                await sink.wait_for(1)
                args, kwargs, details = sink.events[0]
                assert details.publication == publication, (details, publication)
                assert details.publisher is None, details
                assert_same(ARGS, args, "event.args")
                assert_same(KWARGS, kwargs, "event.kwargs")

            # options go to the PUBLISH: disclose_me names the key's identity
            resp = await post(url, {"topic": topic, "args": ["disclosed"],
                                    "options": {"disclose_me": True}}, _bearer())
            publication = _expect(resp, 200)["publication"]
            for sink in sinks:
                await sink.wait_for(2)
                args, kwargs, details = sink.events[1]
                assert (args, kwargs) == (["disclosed"], {}), (args, kwargs)
                assert details.publication == publication
                assert type(details.publisher) is int, details
                assert (details.publisher_authid, details.publisher_authrole) == \
                    ("svc", "service"), details

            # not acknowledged: 202 at once, and the event still goes out
            resp = await post(url, {"topic": topic, "args": ["unacked"], "kwargs": {"n": 1},
                                    "options": {"acknowledge": False}}, _bearer())
            assert _expect(resp, 202) == {}, resp.text
            for sink in sinks:
                await sink.wait_for(3)
                assert sink.events[2][:2] == (["unacked"], {"n": 1}), sink.events[2]

            # binary as WAMP's JSON carries it (a string of NUL, then base64):
            # bytes to every subscriber, MessagePack ones included
            resp = await post(url, {"topic": topic, "args": [b64bin(BINARY)],
                                    "kwargs": {"bin": b64bin(b"")}}, _bearer())
            _expect(resp, 200)
            for sink in sinks:
                await sink.wait_for(4)
                assert_same([BINARY], sink.events[3][0], "event.args")
                assert_same({"bin": b""}, sink.events[3][1], "event.kwargs")

    run(main())


def test_publish_options_eligible(router):
    """options.eligible: only the eligible subscriber gets the event; the others
    get the later sentinel only."""
    topic = "com.example.bridge.eligible"
    url = _base(router) + "/realm1/publish"

    async def main():
        async with Harness(router) as h:
            subs = [await h.open(t) for t in ("ws-json", "ws-msgpack", "rs-msgpack")]
            sinks = [EventSink() for _ in subs]
            for s, sink in zip(subs, sinks):
                await s.subscribe(sink.handler, topic)
            chosen = subs[1].session_id
            resp = await post(url, {"topic": topic, "args": ["only you"],
                                    "options": {"eligible": [chosen]}}, _bearer())
            _expect(resp, 200)
            await sinks[1].wait_for(1)
            assert sinks[1].events[0][0] == ["only you"]
            # the sentinel from an autobahn publisher on the same shard set
            pub = await h.open("ws-json", name="pub")
            await pub.publish(topic, SENTINEL, options=ACK)
            for i in (0, 2):
                before, _ = await until_sentinel(sinks[i])
                assert before == [], before

    run(main())


def test_publish_refusals(router):
    """A role that may not publish: 403 wamp.error.not_authorized (and no
    event); an invalid topic URI: 400; no credentials, a wrong token, another
    realm's token: 401 with WWW-Authenticate; an unknown realm or action: 404;
    bad bodies: 400 naming the field."""
    base = _base(router)

    async def main():
        async with Harness(router) as h:
            # guarded: anonymous sessions are "backend"s
            sub = await h.open("ws-msgpack", realm="guarded", name="backend-sub")
            sink = EventSink()
            await sub.subscribe(sink.handler, "com.guarded.news")

            resp = await post(base + "/guarded/publish", {"topic": "com.guarded.news",
                                                          "args": ["forbidden"]},
                              _bearer(LIMITED_TOKEN))
            body = _expect(resp, 403)
            assert body["error"] == "wamp.error.not_authorized", body
            # the same refused without acknowledge: the client is told nothing
            # (202), and still no event goes out
            resp = await post(base + "/guarded/publish",
                              {"topic": "com.guarded.news", "args": ["forbidden, unacked"],
                               "options": {"acknowledge": False}}, _bearer(LIMITED_TOKEN))
            assert resp.status_code == 202, (resp.status_code, resp.text)
            pub = await h.open("ws-json", realm="guarded", name="backend-pub")
            await pub.publish("com.guarded.news", SENTINEL, options=ACK)
            before, _ = await until_sentinel(sink)
            assert before == [], before

            # the router's own URI check
            body = _expect(await post(base + "/realm1/publish", {"topic": "not a uri!"},
                                      _bearer()), 400)
            assert body["error"] == "wamp.error.invalid_uri", body

            # credentials
            for headers in ({}, _bearer("wrong"), _bearer(LIMITED_TOKEN),
                            {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}):
                resp = await post(base + "/realm1/publish", {"topic": "com.example.x"}, headers)
                assert resp.status_code == 401, (headers, resp.status_code, resp.text)
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), \
                    resp.headers
                assert _json_of(resp)["error"], resp.text

            # where
            for path in ("/nowhere/publish", "/realm1/subscribe", "/realm1", "/realm1/call/x"):
                resp = await post(base + path, {"topic": "com.example.x"}, _bearer())
                assert resp.status_code == 404, (path, resp.status_code, resp.text)
                assert _json_of(resp)["error"], resp.text

            # bodies
            cases = [
                ("/realm1/publish", b"not json", "(body)"),
                ("/realm1/publish", b"[1, 2]", "(body)"),
                ("/realm1/publish", b"", "(body)"),
                ("/realm1/publish", {}, "topic"),
                ("/realm1/publish", {"topic": 7}, "topic"),
                ("/realm1/publish", {"topic": "com.example.x", "args": {"a": 1}}, "args"),
                ("/realm1/publish", {"topic": "com.example.x", "kwargs": [1]}, "kwargs"),
                ("/realm1/publish", {"topic": "com.example.x", "options": []}, "options"),
                ("/realm1/publish", {"topic": "com.example.x", "procedure": "a"}, "procedure"),
                ("/realm1/call", {"topic": "com.example.x"}, "topic"),
                ("/realm1/call", {"args": []}, "procedure"),
                ("/realm1/call", {"procedure": "com.example.x",
                                  "options": {"timeout": "soon"}}, "options"),
            ]
            for path, body, field in cases:
                resp = await post(base + path, body, _bearer())
                got = _expect(resp, 400)
                assert got.get("field") == field and got.get("error"), (path, body, got)

    run(main())


# ---------------------------------------------------------------------------
# call (requests)


def test_call_answered_by_autobahn_callee(router):
    """POST /http/realm1/call: an autobahn callee's result comes back as
    {"args", "kwargs"} exactly; a single value as args [v]; disclose_me names
    the key's identity to the callee; the universal listener's bridge (its own
    path) answers the same."""
    proc = "com.example.bridge.echo"

    async def main():
        async with Harness(router) as h:
            callee = await h.open("ws-msgpack", name="callee")
            seen, got = [], []

            def echo(*args, details=None, **kwargs):
                seen.append(details)
                got.append(list(args))
                return CallResult(*args, **kwargs)

            await callee.register(echo, proc, options=RegisterOptions(details_arg="details"))
            await callee.register(lambda x: x * 2, "com.example.bridge.double")
            # (a None return is YIELD args [None] in autobahn; CallResult() is no payload)
            await callee.register(lambda: CallResult(), "com.example.bridge.nothing")

            for listener in ("br", "br-uni"):
                url = _base(router, listener) + "/realm1/call"
                resp = await post(url, {"procedure": proc, "args": ARGS, "kwargs": KWARGS},
                                  _bearer())
                body = _expect(resp, 200)
                assert set(body) == {"args", "kwargs"}, body
                assert_same(ARGS, body["args"], "result.args")
                assert_same(KWARGS, body["kwargs"], "result.kwargs")
                assert seen[-1].caller is None, seen[-1]

            url = _base(router) + "/realm1/call"
            resp = await post(url, {"procedure": proc, "args": [1],
                                    "options": {"disclose_me": True}}, _bearer())
            assert _expect(resp, 200) == {"args": [1]}, resp.text
            d = seen[-1]
            assert type(d.caller) is int and (d.caller_authid, d.caller_authrole) == \
                ("svc", "service"), d

            resp = await post(url, {"procedure": "com.example.bridge.double", "args": [21]},
                              _bearer())
            assert _expect(resp, 200) == {"args": [42]}, resp.text
            # bytes both ways, as WAMP's JSON carries them
            resp = await post(url, {"procedure": proc, "args": [b64bin(BINARY)]}, _bearer())
            assert _expect(resp, 200) == {"args": [b64bin(BINARY)]}, resp.text
            assert_same([BINARY], got[-1], "invocation.args")  # a MessagePack callee
            # no result payload: an empty answer (no args, no kwargs)
            resp = await post(url, {"procedure": "com.example.bridge.nothing"}, _bearer())
            body = _expect(resp, 200)
            assert body.get("args", []) == [] and body.get("kwargs", {}) == {}, body

    run(main())


def test_call_errors(router):
    """An ApplicationError the callee raises: 502 with its URI, args and kwargs;
    no callee: 404 wamp.error.no_such_procedure; a callee that does not answer
    within options.timeout: 504 wamp.error.timeout, and the callee's
    invocation is cancelled (INTERRUPT); a role that may not call: 403, one
    that may: 200."""
    base = _base(router)

    async def main():
        async with Harness(router) as h:
            callee = await h.open("rs-msgpack", name="callee")
            loop = asyncio.get_running_loop()
            cancelled = loop.create_future()

            def fail(*args, **kwargs):
                raise ApplicationError("com.example.bridge.out_of_stock", "none left", *args,
                                       sku="x-1", **kwargs)

            async def hang():
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    if not cancelled.done():
                        cancelled.set_result(True)
                    raise

            await callee.register(fail, "com.example.bridge.fail")
            await callee.register(hang, "com.example.bridge.hang")

            resp = await post(base + "/realm1/call", {"procedure": "com.example.bridge.fail",
                                                      "args": [3], "kwargs": {"n": 2 ** 60}},
                              _bearer())
            assert _expect(resp, 502) == {"error": "com.example.bridge.out_of_stock",
                                          "args": ["none left", 3],
                                          "kwargs": {"sku": "x-1", "n": 2 ** 60}}, resp.text

            resp = await post(base + "/realm1/call", {"procedure": "com.example.bridge.nobody"},
                              _bearer())
            assert _expect(resp, 404)["error"] == "wamp.error.no_such_procedure", resp.text

            resp = await post(base + "/realm1/call", {"procedure": "com.example.bridge.hang",
                                                      "options": {"timeout": 300}}, _bearer())
            assert _expect(resp, 504)["error"] == "wamp.error.timeout", resp.text
            assert await asyncio.wait_for(cancelled, WAIT) is True

            # guarded: a backend callee; the reader key may call com.guarded.*
            backend = await h.open("ws-json", realm="guarded", name="backend")
            await backend.register(lambda a, b: a + b, "com.guarded.add")
            resp = await post(base + "/guarded/call", {"procedure": "com.guarded.add",
                                                       "args": [2, 3]}, _bearer(LIMITED_TOKEN))
            assert _expect(resp, 200) == {"args": [5]}, resp.text
            resp = await post(base + "/guarded/call", {"procedure": "com.other.add",
                                                       "args": [2, 3]}, _bearer(LIMITED_TOKEN))
            assert _expect(resp, 403)["error"] == "wamp.error.not_authorized", resp.text

    run(main())


# ---------------------------------------------------------------------------
# progressive results (requests, stream=True)


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_progressive_results_stream(router, accept):
    """options.receive_progress with Accept: text/event-stream (SSE events
    `progress` then `result`) or application/x-ndjson (lines, progressive ones
    with "progress": true): the HTTP client reads the progressive results
    while the autobahn callee is still running (it answers only once the
    client has read them all); an error after progressive results ends the
    stream with an `error` item."""
    url = _base(router) + "/realm1/call"
    final = "result" if accept == "text/event-stream" else "final"

    async def main():
        async with Harness(router) as h:
            callee = await h.open("ws-msgpack", name="callee")
            counter = Counter()
            await callee.register(counter, "com.example.bridge.count",
                                  options=RegisterOptions(details_arg="details"))
            loop = asyncio.get_running_loop()
            headers = dict(_bearer(), Accept=accept)

            def release_after(n):
                got = []

                def on_item(kind, data):
                    got.append(kind)
                    if got.count("progress") == n:
                        loop.call_soon_threadsafe(counter.release)
                return on_item

            status, ctype, items = await asyncio.to_thread(
                _stream, url, {"procedure": "com.example.bridge.count", "args": [3],
                               "options": {"receive_progress": True}}, headers, release_after(3))
            assert (status, ctype) == (200, accept), (status, ctype, items)
            assert items == [("progress", {"args": [0], "kwargs": {"step": 0}}),
                             ("progress", {"args": [1], "kwargs": {"step": 1}}),
                             ("progress", {"args": [2], "kwargs": {"step": 2}}),
                             (final, {"args": ["done"], "kwargs": {"total": 3}})], items
            assert callable(counter.seen[-1])

            # an error after two progressive results
            status, ctype, items = await asyncio.to_thread(
                _stream, url, {"procedure": "com.example.bridge.count",
                               "args": [2, "com.example.bridge.broken"],
                               "options": {"receive_progress": True}}, headers, release_after(2))
            assert (status, ctype) == (200, accept), (status, ctype, items)
            error = {"error": "com.example.bridge.broken", "args": ["stopped at", 2],
                     "kwargs": {"why": "asked"}}
            assert items == [("progress", {"args": [0], "kwargs": {"step": 0}}),
                             ("progress", {"args": [1], "kwargs": {"step": 1}}),
                             ("error" if accept == "text/event-stream" else "final", error)], \
                items

            # a callee that sends no progressive result: the final one alone
            await callee.register(lambda: CallResult("at once"), "com.example.bridge.quick")
            status, ctype, items = await asyncio.to_thread(
                _stream, url, {"procedure": "com.example.bridge.quick",
                               "options": {"receive_progress": True}}, headers, lambda *a: None)
            assert (status, ctype, items) == (200, accept, [(final, {"args": ["at once"]})]), \
                (status, ctype, items)

    run(main())


def test_progressive_call_without_streaming(router):
    """receive_progress without a streaming Accept, or a streaming Accept
    without receive_progress: one JSON response with the final result, and the
    callee is not asked for progressive results."""
    url = _base(router) + "/realm1/call"

    async def main():
        async with Harness(router) as h:
            callee = await h.open("ws-json", name="callee")
            counter = Counter()
            await callee.register(counter, "com.example.bridge.count2",
                                  options=RegisterOptions(details_arg="details"))
            cases = [({"Accept": "application/json"}, {"receive_progress": True}),
                     ({}, {"receive_progress": True}),
                     ({"Accept": "text/event-stream"}, {}),
                     ({"Accept": "application/x-ndjson"}, {"receive_progress": False})]
            for accept, options in cases:
                resp = await post(url, {"procedure": "com.example.bridge.count2", "args": [2],
                                        "options": options}, dict(_bearer(), **accept))
                assert _expect(resp, 200) == {"args": ["done"], "kwargs": {"total": 2}}, \
                    (accept, options, resp.text)
                assert counter.seen[-1] is None, (accept, options)
            assert len(counter.seen) == len(cases)

    run(main())


# ---------------------------------------------------------------------------
# signed requests (requests)


def test_signed_requests_and_replays(router):
    """HMAC-SHA256 signed requests (the signature made here over timestamp,
    nonce, method, the target as sent with its query, and the body; hex or
    base64): accepted as key "signer"; the same request again (to any shard)
    401 as a replay; a stale or future timestamp 401; a signature over another
    body or target, another secret, an unknown key: 401, and the nonce is not
    spent by them; counted on /metrics."""
    topic = "com.example.bridge.signed"
    port = router.extra_ports["br"]

    async def main():
        async with Harness(router) as h:
            sub = await h.open("ws-msgpack", name="sub")
            sink = EventSink()
            await sub.subscribe(sink.handler, topic, options=DETAILS)
            callee = await h.open("rs-msgpack", name="callee")
            callers = []

            def whoami(details=None):
                callers.append(details)
                return [details.caller_authid, details.caller_authrole]

            await callee.register(whoami, "com.example.bridge.whoami",
                                  options=RegisterOptions(details_arg="details"))
            before = await metrics(router)

            target = DEFAULT_PATH + "/realm1/publish?source=python&n=1"
            url = "http://127.0.0.1:{}{}".format(port, target)
            # the target is what requests sends
            assert requests.Request("POST", url).prepare().path_url == target
            body = json.dumps({"topic": topic, "args": ["signed"], "kwargs": {"k": 1},
                               "options": {"disclose_me": True}}).encode()
            signed = _sign(SECRET, target, body)
            resp = await post(url, body, signed)
            publication = _expect(resp, 200)["publication"]
            await sink.wait_for(1)
            args, kwargs, details = sink.events[0]
            assert (args, kwargs, details.publication) == (["signed"], {"k": 1}, publication)
            assert (details.publisher_authid, details.publisher_authrole) == \
                ("signer", "signer"), details

            # replays: the same request again, over fresh connections (either shard)
            for _ in range(3):
                resp = await post(url, body, signed)
                got = _expect(resp, 401)
                assert "nonce" in got["error"], got
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")

            now = int(time.time())
            refused = [
                # stale, and from the future
                (body, _sign(SECRET, target, body, ts=now - 2 * REPLAY_WINDOW_S), "replay window"),
                (body, _sign(SECRET, target, body, ts=now + 2 * REPLAY_WINDOW_S), "replay window"),
            ]
            nonce = secrets.token_hex(8)
            other = json.dumps({"topic": topic, "args": ["other"]}).encode()
            refused += [
                # signed over another body, another target (no query), with another secret
                (body, _sign(SECRET, target, other, nonce=nonce), "bad signature"),
                (body, _sign(SECRET, target.split("?")[0], body, nonce=nonce), "bad signature"),
                (body, _sign("not-the-secret", target, body, nonce=nonce), "bad signature"),
                (body, _sign(SECRET, target, body, nonce=nonce, key="nobody"), "unknown key"),
                (body, _sign(SECRET, target, body, nonce="n" * 129), "Nonce"),
                (body, dict(_sign(SECRET, target, body, nonce=nonce),
                            **{"X-Switchyard-Timestamp": "yesterday"}), "Timestamp"),
            ]
            missing = _sign(SECRET, target, body, nonce=nonce)
            del missing["X-Switchyard-Signature"]
            refused.append((body, missing, "X-Switchyard-Signature"))
            for b, headers, why in refused:
                resp = await post(url, b, headers)
                got = _expect(resp, 401)
                assert why in got["error"], (why, got)

            # the nonce those refusals used is still unspent: signed right (base64 this
            # time, over a call), it is accepted
            call_target = DEFAULT_PATH + "/realm1/call?trace=1"
            call_body = json.dumps({"procedure": "com.example.bridge.whoami",
                                    "options": {"disclose_me": True}}).encode()
            resp = await post("http://127.0.0.1:{}{}".format(port, call_target), call_body,
                              _sign(SECRET, call_target, call_body, nonce=nonce,
                                    encoding="base64"))
            assert _expect(resp, 200) == {"args": [["signer", "signer"]]}, resp.text
            # and only once
            resp = await post("http://127.0.0.1:{}{}".format(port, call_target), call_body,
                              _sign(SECRET, call_target, call_body, nonce=nonce,
                                    encoding="base64"))
            assert "nonce" in _expect(resp, 401)["error"], resp.text
            assert len(callers) == 1

            after = await metrics(router)
            # 3 + 1 replays (a used nonce), 2 timestamps outside the window
            assert after["bridge_replays"] - before["bridge_replays"] == 6, (before, after)
            assert after["bridge_unauthorized"] - before["bridge_unauthorized"] >= \
                3 + 1 + len(refused), (before, after)
            assert after["bridge_requests"] - before["bridge_requests"] >= \
                2 + 3 + 1 + len(refused), (before, after)

    run(main())


# ---------------------------------------------------------------------------
# curl

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="no curl binary on this machine "
                                                     "(scripts/test-all.sh installs it)")


def _curl(url, body, headers=()):
    """curl -sS -X POST -H ... --data-binary @- url, the body on its stdin:
    (status, body bytes)."""
    argv = [CURL, "-sS", "-X", "POST", "--max-time", "15", "-o", "-", "-w", "\n%{http_code}"]
    for h in headers:
        argv += ["-H", h]
    argv += ["--data-binary", "@-", url]
    proc = subprocess.run(argv, input=_encode(body), capture_output=True, timeout=20)
    assert proc.returncode == 0, (argv, proc.returncode, proc.stderr)
    out, _, code = proc.stdout.rpartition(b"\n")
    return int(code), out


async def curl(url, body, headers=()):
    return await asyncio.to_thread(_curl, url, body, headers)


@needs_curl
def test_curl_publish_and_call(router):
    """curl publishes (an autobahn subscriber gets the event with the
    publication ID curl was answered) and calls an autobahn callee (args and
    kwargs back; its ApplicationError as 502); a signed call with the HMAC
    made here."""
    base = _base(router)
    bearer = ["Authorization: Bearer " + TOKEN]
    topic = "com.example.bridge.curl"

    async def main():
        async with Harness(router) as h:
            sub = await h.open("rs-msgpack", name="sub")
            sink = EventSink()
            await sub.subscribe(sink.handler, topic, options=DETAILS)
            callee = await h.open("ws-json", name="callee")

            def add(a, b, scale=1):
                return CallResult(a + b, scaled=(a + b) * scale)

            def fail():
                raise ApplicationError("com.example.bridge.curl_failed", "from curl", code=7)

            await callee.register(add, "com.example.bridge.add")
            await callee.register(fail, "com.example.bridge.curl_fail")

            status, out = await curl(base + "/realm1/publish",
                                     {"topic": topic, "args": ["grüße", 2 ** 63 - 1],
                                      "kwargs": {"from": "curl"}}, bearer)
            assert status == 200, (status, out)
            publication = json.loads(out)["publication"]
            await sink.wait_for(1)
            args, kwargs, details = sink.events[0]
            assert (args, kwargs, details.publication) == \
                (["grüße", 2 ** 63 - 1], {"from": "curl"}, publication), sink.events[0]

            status, out = await curl(base + "/realm1/call",
                                     {"procedure": "com.example.bridge.add", "args": [2, 3],
                                      "kwargs": {"scale": 10}},
                                     bearer + ["Content-Type: application/json"])
            assert (status, json.loads(out)) == (200, {"args": [5], "kwargs": {"scaled": 50}}), \
                (status, out)

            status, out = await curl(base + "/realm1/call",
                                     {"procedure": "com.example.bridge.curl_fail"}, bearer)
            assert (status, json.loads(out)) == (502, {"error": "com.example.bridge.curl_failed",
                                                       "args": ["from curl"],
                                                       "kwargs": {"code": 7}}), (status, out)

            status, out = await curl(base + "/realm1/call",
                                     {"procedure": "com.example.bridge.nobody"}, bearer)
            assert status == 404 and json.loads(out)["error"] == "wamp.error.no_such_procedure", \
                (status, out)

            # signed, on the universal listener's bridge
            target = UNI_PATH + "/realm1/call"
            body = json.dumps({"procedure": "com.example.bridge.add", "args": [1, 1]}).encode()
            headers = ["{}: {}".format(k, v) for k, v in _sign(SECRET, target, body).items()]
            url = "http://127.0.0.1:{}{}".format(router.extra_ports["br-uni"], target)
            status, out = await curl(url, body, headers)
            assert (status, json.loads(out)) == (200, {"args": [2], "kwargs": {"scaled": 2}}), \
                (status, out)
            status, out = await curl(url, body, headers)  # replayed
            assert status == 401 and "nonce" in json.loads(out)["error"], (status, out)

    run(main())


@needs_curl
def test_curl_sse_stream(router):
    """curl -N reads the SSE stream of a progressive call as it comes: the
    callee finishes only once curl has printed its progressive results."""
    url = _base(router) + "/realm1/call"

    async def main():
        async with Harness(router) as h:
            callee = await h.open("ws-msgpack", name="callee")
            counter = Counter()
            await callee.register(counter, "com.example.bridge.curl_count",
                                  options=RegisterOptions(details_arg="details"))
            proc = await asyncio.create_subprocess_exec(
                CURL, "-sS", "-N", "-i", "--max-time", "15", "-X", "POST",
                "-H", "Authorization: Bearer " + TOKEN, "-H", "Accept: text/event-stream",
                "--data-binary", "@-", url,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                proc.stdin.write(json.dumps({"procedure": "com.example.bridge.curl_count",
                                             "args": [2],
                                             "options": {"receive_progress": True}}).encode())
                await proc.stdin.drain()
                proc.stdin.close()

                async def line():
                    raw = await asyncio.wait_for(proc.stdout.readline(), WAIT)
                    return raw.decode("utf-8")

                status = await line()
                assert status.startswith("HTTP/1.1 200"), status
                headers = {}
                while True:
                    l = (await line()).rstrip("\r\n")
                    if not l:
                        break
                    k, _, v = l.partition(":")
                    headers[k.strip().lower()] = v.strip()
                assert headers.get("content-type") == "text/event-stream", headers
                assert "content-length" not in headers, headers

                async def lines():
                    while True:
                        raw = await asyncio.wait_for(proc.stdout.readline(), WAIT)
                        if not raw:
                            return
                        yield raw.decode("utf-8").rstrip("\n")

                events, event, data = [], None, []
                async for l in lines():
                    if l.startswith("event: "):
                        event = l[len("event: "):]
                    elif l.startswith("data: "):
                        data.append(l[len("data: "):])
                    elif l == "":
                        events.append((event, json.loads("\n".join(data))))
                        event, data = None, []
                        if [e for e, _ in events] == ["progress", "progress"]:
                            counter.release()
                    else:
                        raise AssertionError("unexpected SSE line {!r}".format(l))
                assert (event, data) == (None, []), (event, data)
                assert events == [("progress", {"args": [0], "kwargs": {"step": 0}}),
                                  ("progress", {"args": [1], "kwargs": {"step": 1}}),
                                  ("result", {"args": ["done"], "kwargs": {"total": 2}})], \
                    events
                rc = await asyncio.wait_for(proc.wait(), WAIT)
                err = await proc.stderr.read()
                assert rc == 0, (rc, err)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    run(main())
