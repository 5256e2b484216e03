"""WebSocket compression (permessage-deflate, RFC 7692) and the HTTP long-poll
transport, with real clients.

The module's router has, besides the plain WebSocket and RawSocket listeners
(no compression), listeners of its own (conftest's RouterSetup.port):

  dfl      websocket, [listener.deflate] threshold 256, max_window_bits 15,
           context takeover
  dfl-nct  universal, [listener.deflate] threshold 0, max_window_bits 10,
           context_takeover = false (server_ and client_no_context_takeover)
  lp       websocket, [listener.longpoll] path /lp, poll_timeout_ms 1000
  lp-short websocket, [listener.longpoll] poll_timeout_ms 200, session_timeout_ms 600

permessage-deflate: autobahn-python is the client (its
perMessageCompressionOffers / perMessageCompressionAccept options); it
compresses everything it sends, and the router what reaches its threshold.
Checked: the extension as autobahn negotiated it (websocket_extensions_in_use),
WELCOME.details.transport.compression, which messages come compressed (the
RSV1 bit of each message's first frame, as autobahn reads it), context
takeover seen on the wire (a repeated message compresses to a few bytes only
where the router keeps its context), a 10-bit window (a payload that repeats
after 4 KB: a compressor with a larger window than it announced would make
data autobahn's zlib.decompressobj(-10) refuses), payloads exact in JSON,
MessagePack and CBOR, and switchyard_deflate_messages on GET /metrics.

Long-poll: a plain HTTP client (urllib, and Debian's curl) speaks the
transport of the spec (transport_http_longpoll.md) in every protocol,
batched or not, to autobahn-python WebSocket sessions.
"""

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import time
import urllib.error
import urllib.request

import cbor2
import msgpack
import conftest
import pytest
from autobahn.wamp.types import CallResult, PublishOptions
from autobahn.websocket.compress import (PerMessageDeflate, PerMessageDeflateOffer,
                                         PerMessageDeflateResponse,
                                         PerMessageDeflateResponseAccept)

from harness import (PAYLOAD_ARGS, PAYLOAD_KWARGS, SENTINEL, WAIT, EventSink, Harness,
                     assert_same, expect_app_error, normalize_result, run, until_sentinel)

pytestmark = pytest.mark.skipif(
    os.environ.get("ROUTER", "switchyard").strip().lower() != "switchyard",
    reason="[listener.deflate] and [listener.longpoll] are Switchyard's configuration")

ACK = PublishOptions(acknowledge=True)
LP_PATH = "/lp"
POLL_TIMEOUT_MS = 1000
THRESHOLD = 256
NCT_WINDOW_BITS = 10
SHORT_SESSION_MS = 600  # the lp-short listener's session_timeout_ms

CONFIG = """\
[router]
shards = {shards}

[[realm]]
name = "realm1"

{plain}
[[listener]]
type = "websocket"
bind = "127.0.0.1:{dfl}"
path = "/ws"
[listener.deflate]
threshold = {threshold}
max_window_bits = 15
context_takeover = true

[[listener]]
type = "universal"
bind = "127.0.0.1:{dfl_nct}"
path = "/ws"
[listener.deflate]
threshold = 0
max_window_bits = {nct_bits}
context_takeover = false

[[listener]]
type = "websocket"
bind = "127.0.0.1:{lp}"
path = "/ws"
[listener.longpoll]
path = "{lp_path}"
poll_timeout_ms = {poll}
session_timeout_ms = 20000

[[listener]]
type = "websocket"
bind = "127.0.0.1:{lp_short}"
path = "/ws"
[listener.longpoll]
path = "{lp_path}"
poll_timeout_ms = 200
session_timeout_ms = {short_session}
"""


def switchyard_config(setup):
    """The router of this module (conftest's RouterSetup hook)."""
    return CONFIG.format(shards=setup.shards, plain=setup.plain_listeners(),
                         dfl=setup.port("dfl"), dfl_nct=setup.port("dfl-nct"),
                         lp=setup.port("lp"), threshold=THRESHOLD, nct_bits=NCT_WINDOW_BITS,
                         lp_path=LP_PATH, poll=POLL_TIMEOUT_MS, lp_short=setup.port("lp-short"),
                         short_session=SHORT_SESSION_MS)


# ---------------------------------------------------------------------------
# HTTP helpers


def _http(method, url, body=None, timeout=15):
    """(status, headers, body bytes) of one plain HTTP request."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _metrics(port):
    """GET /metrics: {counter name: {shard: value}}."""
    status, headers, body = _http("GET", "http://127.0.0.1:{}/metrics".format(port))
    assert status == 200, (status, body)
    out = {}
    for m in re.finditer(r'^switchyard_(\w+)\{shard="(\d+)"\} (-?\d+)$', body.decode(), re.M):
        out.setdefault(m.group(1), {})[int(m.group(2))] = int(m.group(3))
    return out


async def metric_sum(port, name):
    m = await asyncio.to_thread(_metrics, port)
    assert name in m, "no switchyard_{} on /metrics: {}".format(name, sorted(m))
    return sum(m[name].values())


# ---------------------------------------------------------------------------
# permessage-deflate

DEFLATE_SERIALIZERS = ["ws-json", "ws-msgpack", "ws-cbor"]

# What autobahn offers: "takeover" lets the router keep its compression
# context (permessage-deflate; client_max_window_bits), "no-takeover" asks it
# not to (...; client_no_context_takeover; server_no_context_takeover).
OFFERS = {
    "takeover": dict(accept_no_context_takeover=False, accept_max_window_bits=True),
    "no-takeover": dict(accept_no_context_takeover=True, accept_max_window_bits=True,
                        request_no_context_takeover=True),
}


def _accept(response):
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None


def deflate_options(offer):
    return {
        "perMessageCompressionOffers": [PerMessageDeflateOffer(**OFFERS[offer])],
        "perMessageCompressionAccept": _accept,
    }


def watch_frames(session):
    """A list that gets (compressed, wire length) for each data message the
    session receives from now on: the RSV1 bit and payload length of its
    first frame as autobahn reads them (the router sends each message as one
    frame)."""
    proto = session.proto
    seen = []
    begin = proto.onFrameBegin

    def on_frame_begin():
        f = proto.current_frame
        if f.opcode in (1, 2) and not proto.inside_message:
            seen.append((f.rsv == 4, f.length))
        return begin()

    proto.onFrameBegin = on_frame_begin
    return seen


def big_text(n=20000):
    """About n characters of very compressible text."""
    line = "the quick brown fox jumps over the lazy dog 0123456789 grüße 🚀\n"
    return (line * (n // len(line) + 1))[:n]


def repeated_block():
    """3 x the same 4 KB of random hex: its repeats lie 4 KB back, out of a
    10-bit (1 KB) window's reach; within one message, so they also show
    whether the compressor keeps to the window it announced."""
    block = secrets.token_hex(2048)
    return block * 3


def _extension(session):
    exts = session.proto.websocket_extensions_in_use
    assert len(exts) == 1 and isinstance(exts[0], PerMessageDeflate), exts
    return exts[0]


def _transport_details(session):
    w = session.raw_welcome
    assert w is not None and w[0] == 2, w
    return w[2].get("transport")


def _expected_extension(listener, offer):
    """(server_no_context_takeover, client_no_context_takeover,
    server_max_window_bits, client_max_window_bits) autobahn should end up
    with."""
    if listener == "dfl-nct":
        return (True, True, NCT_WINDOW_BITS, NCT_WINDOW_BITS)
    # the router keeps to what the client asked for; a client that offered
    # client_no_context_takeover may be told to keep to it
    return (offer == "no-takeover", None, 15, 15)


@pytest.mark.parametrize("listener", ["dfl", "dfl-nct"])
@pytest.mark.parametrize("offer", sorted(OFFERS))
@pytest.mark.parametrize("transport", DEFLATE_SERIALIZERS)
def test_deflate_pubsub_and_rpc(router, transport, offer, listener):
    """Two autobahn sessions with permessage-deflate on a compressing listener
    (and a plain one without) do pub/sub and RPC with small and large
    payloads: what autobahn negotiated, WELCOME's transport details, which
    messages the router compressed, context takeover, payloads exact, the
    router's deflate counter."""
    port = router.extra_ports[listener]
    url = "ws://127.0.0.1:{}/ws".format(port)
    opts = deflate_options(offer)
    topic = "com.example.deflate.{}.{}.{}".format(transport.replace("-", "_"),
                                                    offer.replace("-", "_"), listener.replace("-", "_"))
    proc = topic + ".echo"
    big = big_text()
    blocks = repeated_block()
    small_args, small_kwargs = ["hi", 1], {"k": True}
    big_args, big_kwargs = [big, PAYLOAD_ARGS], {"text": big, "more": PAYLOAD_KWARGS}

    async def main():
        async with Harness(router) as h:
            before = await metric_sum(router.ws_port, "deflate_messages")
            sub = await h.open(transport, url=url, ws_options=opts, name="sub")
            peer = await h.open(transport, url=url, ws_options=opts, name="peer")
            plain = await h.open(transport, ws_options=opts, name="plain")  # no [listener.deflate]

            # what was negotiated, and what the router says of it
            want = _expected_extension(listener, offer)
            for s in (sub, peer):
                assert s.proto.websocket_protocol_in_use == s.spec.subprotocol
                ext = _extension(s)
                got = (ext.server_no_context_takeover, ext.client_no_context_takeover,
                       ext.server_max_window_bits, ext.client_max_window_bits)
                assert got[0] == want[0] and got[2:] == want[2:], (got, want, ext)
                if want[1] is not None:
                    assert got[1] == want[1], (got, want, ext)
                t = _transport_details(s)
                assert t is not None, s.raw_welcome
                assert t.get("type") == "websocket", t
                assert t.get("protocol") == s.spec.subprotocol, t
                assert t.get("compression") == "permessage-deflate", t
            assert plain.proto.websocket_extensions_in_use == [], \
                plain.proto.websocket_extensions_in_use
            t = _transport_details(plain)
            assert t is not None and t.get("type") == "websocket", plain.raw_welcome
            assert "compression" not in t, t
            info = await sub.call("wamp.session.get", sub.session_id)
            assert info["transport"].get("compression") == "permessage-deflate", info

            # pub/sub: small, large, a repeating one twice, sentinel
            sink, plain_sink = EventSink(), EventSink()
            await sub.subscribe(sink.handler, topic)
            await plain.subscribe(plain_sink.handler, topic)
            frames = watch_frames(sub)
            sent0 = peer.proto.trafficStats.outgoingOctetsAppLevel, \
                peer.proto.trafficStats.outgoingOctetsWebSocketLevel
            published = [(small_args, small_kwargs), (big_args, big_kwargs),
                         ([blocks], {}), ([blocks], {})]
            for args, kwargs in published:
                await peer.publish(topic, *args, options=ACK, **kwargs)
            await peer.publish(topic, SENTINEL, options=ACK)
            for s in (sink, plain_sink):
                before_sentinel, _ = await until_sentinel(s)
                assert len(before_sentinel) == len(published), before_sentinel
                for (args, kwargs), (a, k, _) in zip(published, s.events):
                    assert_same(args, a)
                    assert_same(kwargs, k)
            # autobahn compressed what it sent (every message)
            app = peer.proto.trafficStats.outgoingOctetsAppLevel - sent0[0]
            wire = peer.proto.trafficStats.outgoingOctetsWebSocketLevel - sent0[1]
            assert app > 2 * len(big) and wire < app / 2, (app, wire)

            # the subscriber's EVENTs: compressed where they reach the threshold
            assert len(frames) == len(published) + 1, frames
            (c_small, _), (c_big, n_big), (c_rep1, n_rep1), (c_rep2, n_rep2), _ = frames
            assert c_small == (listener == "dfl-nct"), frames  # threshold 256 vs 0
            assert c_big and c_rep1 and c_rep2, frames
            assert n_big < len(big) / 2, frames
            if want[0]:
                # no context takeover: the repeat compresses as well as the first, no better
                assert n_rep2 > n_rep1 * 0.8, frames
            else:
                # context takeover: the repeat is a back-reference to the last message
                assert n_rep2 < n_rep1 / 4, frames

            # RPC both ways round, small and large
            async def echo(*args, **kwargs):
                return CallResult(*args, **kwargs)

            await peer.register(echo, proc)
            n0 = len(frames)
            for args, kwargs in ((small_args, small_kwargs), (big_args, big_kwargs)):
                got = normalize_result(await asyncio.wait_for(
                    sub.call(proc, *args, **kwargs), WAIT))
                assert_same(args, got[0])
                assert_same(kwargs, got[1])
                got = normalize_result(await asyncio.wait_for(
                    plain.call(proc, *args, **kwargs), WAIT))
                assert_same(args, got[0])
                assert_same(kwargs, got[1])
            results = frames[n0:]
            assert len(results) == 2, results
            assert results[0][0] == (listener == "dfl-nct") and results[1][0], results

            after = await metric_sum(router.ws_port, "deflate_messages")
            compressed = sum(1 for c, _ in frames if c)
            assert after - before >= compressed >= 4, (before, after, frames)

    run(main())


def test_deflate_not_offered_or_not_configured(router):
    """A client that offers nothing gets an uncompressed session on a
    compressing listener; one that offers permessage-deflate on the plain
    listener gets none either; both work."""

    async def main():
        async with Harness(router) as h:
            url = "ws://127.0.0.1:{}/ws".format(router.extra_ports["dfl-nct"])
            bare = await h.open("ws-json", url=url, name="bare")
            offering = await h.open("ws-msgpack", ws_options=deflate_options("takeover"),
                                    name="offering")
            for s in (bare, offering):
                assert s.proto.websocket_extensions_in_use == [], s.proto.websocket_extensions_in_use
                t = _transport_details(s)
                assert t is not None and "compression" not in t, t
            frames = watch_frames(bare)
            sink = EventSink()
            topic = "com.example.deflate.none"
            await bare.subscribe(sink.handler, topic)
            await offering.publish(topic, big_text(), options=ACK)
            await offering.publish(topic, SENTINEL, options=ACK)
            before, _ = await until_sentinel(sink)
            assert before == [big_text()]
            assert frames and not any(c for c, _ in frames), frames

    run(main())


# ---------------------------------------------------------------------------
# long-poll: a plain HTTP client

HELLO, WELCOME, ABORT, GOODBYE, ERROR = 1, 2, 3, 6, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70

LP_PROTOCOLS = ["wamp.2.{}{}".format(s, b) for s in ("json", "msgpack", "cbor")
                for b in ("", ".batched")]
CONTENT_TYPES = {"json": "application/json", "msgpack": "application/x-msgpack",
                 "cbor": "application/cbor"}
ROLES = {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}


def _to_json(v):
    """A value as WAMP's JSON carries it (bytes: NUL, then base64)."""
    if isinstance(v, (bytes, bytearray)):
        return "\u0000" + base64.b64encode(v).decode()
    if isinstance(v, list):
        return [_to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _to_json(x) for k, x in v.items()}
    return v


def _from_json(v):
    if isinstance(v, str) and v.startswith("\u0000"):
        return base64.b64decode(v[1:])
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _from_json(x) for k, x in v.items()}
    return v


class Codec:
    """One long-poll protocol's encoding: wamp.2.SER[.batched]."""

    def __init__(self, protocol):
        parts = protocol.split(".")
        assert parts[:2] == ["wamp", "2"], protocol
        self.protocol = protocol
        self.ser = parts[2]
        self.batched = parts[-1] == "batched"

    def encode_one(self, msg):
        if self.ser == "json":
            return json.dumps(_to_json(msg), ensure_ascii=False, separators=(",", ":")).encode()
        if self.ser == "msgpack":
            return msgpack.packb(msg, use_bin_type=True)
        return cbor2.dumps(msg)

    def decode_one(self, data):
        if self.ser == "json":
            return _from_json(json.loads(data.decode("utf-8")))
        if self.ser == "msgpack":
            return msgpack.unpackb(data, raw=False)
        return cbor2.loads(data)

    def encode(self, msgs):
        """The body of one send: one message, or a batch of them."""
        if not self.batched:
            assert len(msgs) == 1, msgs
            return self.encode_one(msgs[0])
        out = b""
        for m in msgs:
            one = self.encode_one(m)
            out += one + b"\x1e" if self.ser == "json" else struct.pack(">I", len(one)) + one
        return out

    def decode(self, body):
        """The messages of one receive's body (a batch in batched protocols:
        JSON messages each ended by 0x1e, the others each after a 32-bit
        big-endian length)."""
        if not self.batched:
            return [self.decode_one(body)]
        msgs = []
        if self.ser == "json":
            assert body.endswith(b"\x1e"), body[-40:]
            return [self.decode_one(c) for c in body[:-1].split(b"\x1e")]
        pos = 0
        while pos < len(body):
            assert pos + 4 <= len(body), "truncated batch length at {}".format(pos)
            (n,) = struct.unpack(">I", body[pos:pos + 4])
            assert pos + 4 + n <= len(body), "batched message longer than its batch"
            msgs.append(self.decode_one(body[pos + 4:pos + 4 + n]))
            pos += 4 + n
        return msgs


class LongPoll:
    """A long-poll transport, driven with urllib (each request in a thread)."""

    def __init__(self, port, protocol):
        self.base = "http://127.0.0.1:{}{}".format(port, LP_PATH)
        self.codec = Codec(protocol)
        self.id = None
        self.inbox = []           # messages received and not yet taken
        self.bodies = []          # the message count of each 200 receive

    async def post(self, path, body=b""):
        return await asyncio.to_thread(_http, "POST", self.base + path, body)

    async def open(self):
        status, headers, body = await self.post("/open", json.dumps(
            {"protocols": ["wamp.2.ubjson", self.codec.protocol]}).encode())
        assert status == 200, (status, body)
        assert headers.get("Content-Type", "").startswith("application/json"), dict(headers)
        info = json.loads(body)
        assert info["protocol"] == self.codec.protocol, info
        assert isinstance(info["transport"], str) and info["transport"], info
        self.id = info["transport"]
        return info

    async def send(self, *msgs):
        status, _, body = await self.post("/{}/send".format(self.id), self.codec.encode(list(msgs)))
        assert status == 204, (status, body)

    async def receive_once(self):
        """One receive: (status, messages)."""
        status, headers, body = await self.post("/{}/receive".format(self.id))
        if status == 200:
            ctype = headers.get("Content-Type", "")
            assert ctype.startswith(CONTENT_TYPES[self.codec.ser]), ctype
            msgs = self.codec.decode(body)
            self.bodies.append(len(msgs))
            return status, msgs
        assert status == 204 or status == 404, (status, body)
        if status == 404:
            err = json.loads(body)
            assert isinstance(err.get("error"), str) and err["error"], err
        return status, []

    async def next(self, timeout=WAIT):
        """The next message, polling as long as it takes (the router answers
        an empty poll with 204 after its poll timeout)."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            assert time.monotonic() < deadline, "no message within {} s".format(timeout)
            status, msgs = await self.receive_once()
            assert status != 404, "transport gone while waiting for a message"
            self.inbox.extend(msgs)
        return self.inbox.pop(0)

    async def expect(self, code, timeout=WAIT):
        msg = await self.next(timeout)
        assert msg[0] == code, "expected message type {}, got {!r}".format(code, msg)
        return msg

    async def join(self, realm="realm1"):
        await self.send([HELLO, realm, {"roles": ROLES}])
        return await self.expect(WELCOME)

    async def close(self):
        status, _, body = await self.post("/{}/close".format(self.id))
        assert status == 204, (status, body)


@pytest.fixture(params=LP_PROTOCOLS)
def lp_protocol(request, router):
    return request.param


# WebSocket peers of the long-poll session: one of its own serializer (the
# router splices payloads) and one of another (it transcodes them)
OTHER_WS = {"json": "ws-cbor", "msgpack": "ws-json", "cbor": "ws-msgpack"}


def test_longpoll_session(router, lp_protocol):
    """open; HELLO/WELCOME (details.transport); an event from an autobahn
    WebSocket publisher; a call to an autobahn callee; an autobahn caller's
    call to a procedure the long-poll session registered; an acknowledged
    publish to an autobahn subscriber; GOODBYE; close; then 404s. Payloads
    (the fixtures: bytes, unicode, 64-bit ints, floats, nesting) exact."""
    lp = LongPoll(router.extra_ports["lp"], lp_protocol)
    ser = lp.codec.ser
    tag = "com.example.lp.{}".format(lp_protocol.replace(".", "_"))

    async def main():
        async with Harness(router) as h:
            same = await h.open("ws-" + ser, name="same")
            other = await h.open(OTHER_WS[ser], name="other")
            await lp.open()
            welcome = await lp.join()
            sid, details = welcome[1], welcome[2]
            assert type(sid) is int and 1 <= sid <= 2 ** 53, welcome
            assert {"broker", "dealer"} <= set(details["roles"]), details
            t = details["transport"]
            assert t["type"] == "longpoll" and t["protocol"] == lp_protocol, t
            assert "compression" not in t, t
            info = await same.call("wamp.session.get", sid)
            assert info["transport"]["type"] == "longpoll", info

            # an event from an autobahn publisher
            await lp.send([SUBSCRIBE, 1, {}, tag + ".topic"])
            subscribed = await lp.expect(SUBSCRIBED)
            assert subscribed[1] == 1, subscribed
            pub = await same.publish(tag + ".topic", *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            pub2 = await other.publish(tag + ".topic", "from other", options=ACK)
            # (two publishers' events may come in either order)
            events = {e[2]: e for e in [await lp.expect(EVENT), await lp.expect(EVENT)]}
            assert set(events) == {pub.id, pub2.id}, (events, pub.id, pub2.id)
            event = events[pub.id]
            assert event[1] == subscribed[2], (event, subscribed)
            assert_same(PAYLOAD_ARGS, event[4])
            assert_same(PAYLOAD_KWARGS, event[5])
            assert events[pub2.id][4] == ["from other"] and len(events[pub2.id]) == 5, events

            # a call to an autobahn callee
            async def echo(*args, **kwargs):
                return CallResult(*args, **kwargs)

            await other.register(echo, tag + ".echo")
            await lp.send([CALL, 2, {}, tag + ".echo", PAYLOAD_ARGS, PAYLOAD_KWARGS])
            result = await lp.expect(RESULT)
            assert result[1] == 2, result
            assert_same(PAYLOAD_ARGS, result[3])
            assert_same(PAYLOAD_KWARGS, result[4])

            # an autobahn caller's call to the long-poll session's procedure
            await lp.send([REGISTER, 3, {}, tag + ".lp"])
            registered = await lp.expect(REGISTERED)
            assert registered[1] == 3, registered
            call = asyncio.ensure_future(same.call(tag + ".lp", *PAYLOAD_ARGS, **PAYLOAD_KWARGS))
            inv = await lp.expect(INVOCATION)
            assert inv[2] == registered[2], (inv, registered)
            assert_same(PAYLOAD_ARGS, inv[4])
            assert_same(PAYLOAD_KWARGS, inv[5])
            await lp.send([YIELD, inv[1], {}, inv[4] + ["yielded"], inv[5]])
            got = normalize_result(await asyncio.wait_for(call, WAIT))
            assert_same(PAYLOAD_ARGS + ["yielded"], got[0])
            assert_same(PAYLOAD_KWARGS, got[1])

            # an acknowledged publish to an autobahn subscriber
            sink = EventSink()
            await other.subscribe(sink.handler, tag + ".back")
            await lp.send([PUBLISH, 4, {"acknowledge": True}, tag + ".back", PAYLOAD_ARGS,
                           PAYLOAD_KWARGS])
            published = await lp.expect(PUBLISHED)
            assert published[1] == 4, published
            (args, kwargs, _), = await sink.wait_for(1)
            assert_same(PAYLOAD_ARGS, args)
            assert_same(PAYLOAD_KWARGS, kwargs)

            # GOODBYE, close, and the transport is gone
            await lp.send([GOODBYE, {}, "wamp.close.close_realm"])
            bye = await lp.expect(GOODBYE)
            assert bye[2] == "wamp.close.goodbye_and_out", bye
            assert lp.inbox == [], lp.inbox
            await lp.close()
            for op in ("receive", "send", "close"):
                status, _, body = await lp.post("/{}/{}".format(lp.id, op), b"[]")
                assert status == 404, (op, status, body)
                assert isinstance(json.loads(body).get("error"), str), body
            # the router forgot the session
            err = await expect_app_error(same.call("wamp.session.get", sid))
            assert err.error == "wamp.error.no_such_session", err
            if lp.codec.batched:
                assert lp.bodies and all(n >= 1 for n in lp.bodies), lp.bodies

    run(main())


@pytest.mark.parametrize("protocol", [p for p in LP_PROTOCOLS if p.endswith(".batched")])
def test_longpoll_batches(router, protocol):
    """Batched protocols: one send carries several messages, handled in order;
    a receive returns every message pending (with one shard, all the EVENTs
    of publications acknowledged before it, in one batch)."""
    lp = LongPoll(router.extra_ports["lp"], protocol)
    topic = "com.example.lp.batch.{}".format(protocol.replace(".", "_"))
    n = 5

    async def main():
        async with Harness(router) as h:
            pub = await h.open("ws-json", name="pub")
            await lp.open()
            await lp.join()
            await lp.send([SUBSCRIBE, 1, {}, topic], [SUBSCRIBE, 2, {}, topic + ".x"],
                          [REGISTER, 3, {}, topic + ".proc"])
            replies = [await lp.next() for _ in range(3)]
            assert [(m[0], m[1]) for m in replies] == \
                [(SUBSCRIBED, 1), (SUBSCRIBED, 2), (REGISTERED, 3)], replies
            for i in range(n):
                await pub.publish(topic, i, options=ACK)
            lp.bodies.clear()
            events = [await lp.expect(EVENT) for _ in range(n)]
            assert [e[4] for e in events] == [[i] for i in range(n)], events
            if router.shards == 1:
                assert lp.bodies == [n], lp.bodies
            await lp.close()

    run(main())


def test_longpoll_errors_and_poll_timeout(router):
    """An empty receive answers 204 after the poll timeout; an open without a
    protocol this router speaks gets 400, an unknown transport 404, each with a
    JSON {"error": ...}; a query string (against caches) is ignored."""
    port = router.extra_ports["lp"]
    base = "http://127.0.0.1:{}{}".format(port, LP_PATH)

    async def main():
        lp = LongPoll(port, "wamp.2.json")
        await lp.open()
        start = time.monotonic()
        status, _, body = await asyncio.to_thread(
            _http, "POST", "{}/{}/receive?x=1".format(base, lp.id), b"")
        took = time.monotonic() - start
        assert status == 204 and body == b"", (status, body)
        assert POLL_TIMEOUT_MS / 1000 * 0.8 <= took < 10, took
        await lp.join()
        await lp.close()
        for path, body, want in (
                ("/open", b'{"protocols": ["wamp.2.ubjson"]}', 400),
                ("/open", b"not json", 400),
                ("/open", b"{}", 400),
                ("/00ffffffffffffffffffffffffffffffff/receive", b"", 404),
                ("/00ffffffffffffffffffffffffffffffff/send", b"[]", 404),
                ("/{}/receive".format(lp.id), b"", 404)):
            status, headers, resp = await asyncio.to_thread(_http, "POST", base + path, body)
            assert status == want, (path, status, resp)
            assert headers.get("Content-Type", "").startswith("application/json"), dict(headers)
            err = json.loads(resp)
            assert isinstance(err.get("error"), str) and err["error"], err

    run(main())


def test_longpoll_idle_transport_expires(router):
    """A joined long-poll session that no request touches for
    session_timeout_ms is closed: its on_leave comes, then its transport is
    404 and switchyard_longpoll_expired grew."""
    port = router.extra_ports["lp-short"]

    async def main():
        async with Harness(router) as h:
            watcher = await h.open("ws-json", name="watcher")
            leaves = EventSink()
            await watcher.subscribe(leaves.handler, "wamp.session.on_leave")
            expired = await metric_sum(port, "longpoll_expired")
            lp = LongPoll(port, "wamp.2.cbor")
            await lp.open()
            sid = (await lp.join())[1]
            # no more requests: wait for the router to end the session
            n = 0
            while True:
                n += 1
                events = await leaves.wait_for(n, timeout=WAIT)
                if events[n - 1][0][:1] == [sid]:
                    break
            status, msgs = await lp.receive_once()
            assert status == 404, (status, msgs)
            assert await metric_sum(port, "longpoll_expired") == expired + 1

    run(main())


# ---------------------------------------------------------------------------
# long-poll with curl

CURL = shutil.which("curl")


def _curl(url, body=None):
    """(status, body) of curl -X POST url."""
    argv = [CURL, "-sS", "-X", "POST", "-o", "-", "-w", "\n%{http_code}",
            "-H", "Content-Type: application/json", "--max-time", "15"]
    argv += ["--data-binary", body] if body is not None else ["--data-binary", ""]
    proc = subprocess.run(argv + [url], capture_output=True, timeout=20)
    assert proc.returncode == 0, (argv, proc.returncode, proc.stderr)
    out, _, code = proc.stdout.rpartition(b"\n")
    return int(code), out


@pytest.mark.skipif(CURL is None, reason="no curl binary on this machine (command -v curl)")
def test_longpoll_with_curl(router):
    """curl: open (with ?x=, which is ignored), HELLO, WELCOME, a subscription
    and an event from an autobahn publisher, GOODBYE, close."""
    base = "http://127.0.0.1:{}{}".format(router.extra_ports["lp"], LP_PATH)
    topic = "com.example.lp.curl"

    async def curl(url, body=None):
        return await asyncio.to_thread(_curl, url, body)

    async def receive(tid, code):
        while True:
            status, out = await curl("{}/{}/receive".format(base, tid))
            if status == 204:
                continue
            assert status == 200, (status, out)
            msg = json.loads(out)
            assert msg[0] == code, msg
            return msg

    async def main():
        async with Harness(router) as h:
            pub = await h.open("ws-msgpack", name="pub")
            status, out = await curl(base + "/open?x=382913", '{"protocols": ["wamp.2.json"]}')
            assert status == 200, (status, out)
            info = json.loads(out)
            assert info["protocol"] == "wamp.2.json", info
            tid = info["transport"]
            status, out = await curl("{}/{}/send?x=1".format(base, tid),
                                     json.dumps([HELLO, "realm1", {"roles": ROLES}]))
            assert (status, out) == (204, b""), (status, out)
            welcome = await receive(tid, WELCOME)
            assert welcome[2]["transport"]["type"] == "longpoll", welcome
            status, _ = await curl("{}/{}/send".format(base, tid),
                                   json.dumps([SUBSCRIBE, 1, {}, topic]))
            assert status == 204
            await receive(tid, SUBSCRIBED)
            await pub.publish(topic, "grüße", {"n": 2 ** 53}, options=ACK)
            event = await receive(tid, EVENT)
            assert event[4] == ["grüße", {"n": 2 ** 53}], event
            status, _ = await curl("{}/{}/send".format(base, tid),
                                   json.dumps([GOODBYE, {}, "wamp.close.close_realm"]))
            assert status == 204
            await receive(tid, GOODBYE)
            status, out = await curl("{}/{}/close".format(base, tid))
            assert status == 204, (status, out)
            status, out = await curl("{}/{}/receive".format(base, tid))
            assert status == 404 and "error" in json.loads(out), (status, out)

    run(main())


# ---------------------------------------------------------------------------
# shutdown


def test_sigterm_with_longpoll_session_joined(router, tmp_path, request):
    """A router of its own (this module's config), with a long-poll session
    joined and a receive waiting, gets SIGTERM: it answers the receive (with
    its GOODBYE wamp.close.system_shutdown, where the receive had reached it)
    and exits with code 0 in time, as it does with WebSocket sessions."""
    own = conftest._start_router(router.shards, tmp_path, request.module)
    try:
        async def main():
            lp = LongPoll(own.extra_ports["lp"], "wamp.2.json")
            await lp.open()
            await lp.join()
            waiting = asyncio.ensure_future(
                asyncio.to_thread(_http, "POST", "{}/{}/receive".format(lp.base, lp.id), b""))
            await asyncio.sleep(0)
            own.proc.send_signal(signal.SIGTERM)
            try:
                status, _, body = await asyncio.wait_for(waiting, WAIT)
            except OSError:
                return  # the receive did not get there before the router stopped accepting
            assert status in (200, 204, 404), (status, body)
            if status == 200:
                msg = lp.codec.decode(body)[0]
                assert msg[:3] == [GOODBYE, {}, "wamp.close.system_shutdown"], msg
                # the reply: the router has stopped accepting connections by
                # now, so it may not get there (the session then ends when the
                # shutdown grace period does)
                try:
                    await lp.post("/{}/send".format(lp.id), lp.codec.encode(
                        [[GOODBYE, {}, "wamp.close.goodbye_and_out"]]))
                except OSError:
                    pass

        run(main())
        try:
            rc = own.proc.wait(timeout=conftest.SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("router did not exit within {} s of SIGTERM with a long-poll session "
                        "joined\n--- stderr ---\n{}".format(conftest.SHUTDOWN_TIMEOUT,
                                                          own.stderr_text()))
        assert rc == 0, "router exited with {}\n{}".format(rc, own.stderr_text())
    finally:
        conftest._kill(own.proc)
        conftest._remove_unix_dir(own)
