"""Every transport the router offers, and every serializer pair across them.

harness.ALL_TRANSPORTS: JSON, MessagePack and CBOR over WebSocket, batched
WebSocket (wamp.2.*.batched) and RawSocket; RawSocket over the router's Unix
socket; RawSocket and WebSocket on its universal port (which also answers
plain HTTP GET /metrics). Each one joins, does pub/sub and RPC with the
payload fixtures, and talks to every other one (the router splices payloads
between equal serializers and transcodes them otherwise). Unix socket: the
file mode the config asks for, and connections spread over the shards.
"""

import asyncio
import base64
import json
import os
import re
import stat
import struct
import urllib.error
import urllib.request

import cbor2
import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.message import Publish
from autobahn.wamp.types import CallResult, PublishOptions, SubscribeOptions

from harness import (ALL_TRANSPORTS, PAYLOAD_ARGS, PAYLOAD_KWARGS, SENTINEL, SERIALIZERS,
                     EventSink, Harness, TransportSpec, assert_same, expect_app_error,
                     normalize_result, run, unsupported, until_sentinel)

ACK = PublishOptions(acknowledge=True)
DETAILS = SubscribeOptions(details=True)
BATCHED = [t for t in ALL_TRANSPORTS if TransportSpec(t).batched]


@pytest.fixture(params=ALL_TRANSPORTS)
def any_transport(request, router):
    """One of harness.ALL_TRANSPORTS; skipped where the router lacks it."""
    why = unsupported(router, request.param)
    if why is not None:
        pytest.skip(why)
    return request.param


def _switchyard_only(router, what):
    if router.kind != "switchyard":
        pytest.skip("ROUTER={}: {} is Switchyard's".format(router.kind, what))


def b64bin(data):
    """bytes as WAMP's JSON carries them: NUL, then base64."""
    return "\u0000" + base64.b64encode(data).decode()


def _tag(transport, name):
    return "com.example.transports.{}.{}".format(transport.replace("-", "_"), name)


# ---------------------------------------------------------------------------
# /metrics


def _get(port, path):
    """Plain HTTP GET on 127.0.0.1:port: (status, content type, body)."""
    url = "http://127.0.0.1:{}{}".format(port, path)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode("utf-8", "replace")


def _metrics(port):
    """GET /metrics: {counter name: {shard: value}}."""
    status, ctype, text = _get(port, "/metrics")
    assert status == 200, (status, text)
    assert ctype is not None and ctype.startswith("text/plain"), ctype
    out = {}
    for m in re.finditer(r'^switchyard_(\w+)\{shard="(\d+)"\} (-?\d+)$', text, re.M):
        out.setdefault(m.group(1), {})[int(m.group(2))] = int(m.group(3))
    return out


async def metrics(port):
    return await asyncio.to_thread(_metrics, port)


# ---------------------------------------------------------------------------
# each transport on its own


def test_join(router, any_transport):
    """HELLO/WELCOME over the transport; the router's view of the session
    (wamp.session.get) names its transport kind and serializer."""
    spec = TransportSpec(any_transport)

    async def main():
        async with Harness(router) as h:
            s = await h.open(any_transport)
            w = s.welcome
            assert w is not None, "no WELCOME seen"
            assert type(w.session) is int and 1 <= w.session <= 2 ** 53, w.session
            assert w.realm == "realm1", w.realm
            assert {"broker", "dealer"} <= set(w.roles or {}), w.roles
            assert s.session_id == w.session and s.is_attached()
            # connected where the transport id says
            conn = h._conns[-1]
            if spec.endpoint == "unix":
                assert conn.get_extra_info("peername") == router.unix_path
            else:
                port = {"uni": router.universal_port,
                        "tcp": router.ws_port if spec.kind == "ws" else router.rawsocket_port}
                assert conn.get_extra_info("peername")[:2] == ("127.0.0.1", port[spec.endpoint])
            # what the handshake settled on
            if spec.kind == "ws":
                assert s.proto.websocket_protocol_in_use == spec.subprotocol, \
                    s.proto.websocket_protocol_in_use
            else:
                assert s.proto._serializer.RAWSOCKET_SERIALIZER_ID == \
                    {"json": 1, "msgpack": 2, "cbor": 3}[spec.serializer]
            if router.kind == "switchyard":
                assert (w.authrole, w.authmethod) == ("anonymous", "anonymous"), \
                    (w.authrole, w.authmethod)
                assert w.authid == "anonymous-{}".format(w.session), w.authid
                info = await s.call("wamp.session.get", w.session)
                assert info["session"] == w.session, info
                assert info["authid"] == w.authid, info
                t = info["transport"]
                assert (t["type"], t["serializer"]) == (spec.router_kind, spec.serializer), t
                if spec.endpoint != "unix":
                    local = h._conns[-1].get_extra_info("sockname")
                    assert t["peer"] == "{}:{}".format(local[0], local[1]), t
            # a second session on the same transport gets another id
            s2 = await h.open(any_transport)
            assert s2.session_id != s.session_id
            details = await s.close()
            assert details is not None and details.reason in (
                "wamp.close.goodbye_and_out", "wamp.close.normal"), details
            assert await s.disconnected is True
            assert s2.is_attached()

    run(main())


def test_pubsub_round_trip(router, any_transport):
    """The payload fixtures (bytes, unicode, 64-bit ints, floats, nesting) reach
    a subscriber on the same transport exactly; the publisher, subscribed too,
    gets none of its own events (exclude_me), only its sentinel."""
    topic = _tag(any_transport, "topic")

    async def main():
        async with Harness(router) as h:
            sub = await h.open(any_transport, name="subscriber")
            pub = await h.open(any_transport, name="publisher")
            sink, own = EventSink(), EventSink()
            await sub.subscribe(sink.handler, topic, options=DETAILS)
            await pub.subscribe(own.handler, topic)
            publication = await pub.publish(topic, *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            for i in range(5):
                pub.publish(topic, i, {"i": i, "bin": bytes([i]) * i})
            await pub.publish(topic, SENTINEL, options=PublishOptions(acknowledge=True,
                                                                      exclude_me=False))
            before, n = await until_sentinel(sink)
            assert len(before) == 6, before
            args, kwargs, details = sink.events[0]
            assert details.publication == publication.id
            assert_same(PAYLOAD_ARGS, args, "event.args")
            assert_same(PAYLOAD_KWARGS, kwargs, "event.kwargs")
            for i in range(5):
                assert_same([i, {"i": i, "bin": bytes([i]) * i}], sink.events[1 + i][0],
                            "event {}".format(i))
                assert sink.events[1 + i][1] == {}
            # exclude_me: the publisher's own subscription got its sentinel only
            mine, _ = await until_sentinel(own)
            assert mine == [], mine

    run(main())


def test_rpc_round_trip(router, any_transport):
    """The payload fixtures go to a callee on the same transport and back
    exactly, and so do an application error's URI, args and kwargs."""
    proc = _tag(any_transport, "echo")
    failing = _tag(any_transport, "fail")

    async def main():
        async with Harness(router) as h:
            callee = await h.open(any_transport, name="callee")
            caller = await h.open(any_transport, name="caller")
            seen = []

            def echo(*args, **kwargs):
                seen.append((list(args), dict(kwargs)))
                return CallResult(*args, **kwargs)

            def fail(*args, **kwargs):
                raise ApplicationError("com.example.transports.oops", *args, **kwargs)

            await callee.register(echo, proc)
            await callee.register(fail, failing)
            res = await caller.call(proc, *PAYLOAD_ARGS, **PAYLOAD_KWARGS)
            assert_same(PAYLOAD_ARGS, seen[0][0], "invocation.args")
            assert_same(PAYLOAD_KWARGS, seen[0][1], "invocation.kwargs")
            args, kwargs = normalize_result(res)
            assert_same(PAYLOAD_ARGS, args, "result.args")
            assert_same(PAYLOAD_KWARGS, kwargs, "result.kwargs")

            err = await expect_app_error(caller.call(failing, PAYLOAD_ARGS[:4],
                                                     nested=PAYLOAD_KWARGS["nested"]))
            assert err.error == "com.example.transports.oops", err.error
            assert_same([PAYLOAD_ARGS[:4]], list(err.args), "error.args")
            assert_same({"nested": PAYLOAD_KWARGS["nested"]}, err.kwargs, "error.kwargs")

    run(main())


# ---------------------------------------------------------------------------
# every transport with every other one


@pytest.mark.parametrize("source", ALL_TRANSPORTS)
def test_cross_transport(router, source):
    """A publisher and a callee on `source`; a subscriber/caller on each other
    transport. Every subscriber gets the event and every caller the result,
    payloads exact; the callee gets every caller's arguments exact. With each
    transport the source once, every ordered pair of transports (so every
    serializer pair, both ways) is covered."""
    why = unsupported(router, source)
    if why is not None:
        pytest.skip(why)
    others = [t for t in ALL_TRANSPORTS if t != source and unsupported(router, t) is None]
    topic = _tag(source, "cross.topic")
    proc = _tag(source, "cross.echo")

    async def main():
        async with Harness(router) as h:
            pub = await h.open(source, name="publisher")
            callee = await h.open(source, name="callee")
            peers = await asyncio.gather(*(h.open(t, name=t) for t in others))
            seen = {}

            def echo(who, *args, **kwargs):
                seen[who] = (list(args), dict(kwargs))
                return CallResult(who, *args, **kwargs)

            await callee.register(echo, proc)
            sinks = [EventSink() for _ in peers]
            await asyncio.gather(*(p.subscribe(s.handler, topic, options=DETAILS)
                                   for p, s in zip(peers, sinks)))
            publication = await pub.publish(topic, *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            for t, sink in zip(others, sinks):
                events = await sink.wait_for(1)
                args, kwargs, details = events[0]
                assert details.publication == publication.id, t
                assert_same(PAYLOAD_ARGS, args, "{} <- {}: event.args".format(t, source))
                assert_same(PAYLOAD_KWARGS, kwargs, "{} <- {}: event.kwargs".format(t, source))

            results = await asyncio.gather(*(p.call(proc, t, *PAYLOAD_ARGS, **PAYLOAD_KWARGS)
                                             for p, t in zip(peers, others)))
            assert set(seen) == set(others), sorted(seen)
            for t, res in zip(others, results):
                assert_same(PAYLOAD_ARGS, seen[t][0], "{} -> {}: invocation.args".format(t, source))
                assert_same(PAYLOAD_KWARGS, seen[t][1],
                            "{} -> {}: invocation.kwargs".format(t, source))
                args, kwargs = normalize_result(res)
                assert_same([t] + PAYLOAD_ARGS, args, "{} <- {}: result.args".format(t, source))
                assert_same(PAYLOAD_KWARGS, kwargs, "{} <- {}: result.kwargs".format(t, source))

    run(main(), timeout=25.0)


def test_transcoding_counted(router):
    """An event between equal serializers is spliced (switchyard_transcodes does
    not move); between different ones it is transcoded (it does)."""
    _switchyard_only(router, "/metrics")
    topic = "com.example.transports.transcodes"
    port = router.universal_port or router.ws_port

    async def main():
        async with Harness(router) as h:
            pub = await h.open("ws-json", name="publisher")
            same = await h.open("rs-json", name="json-subscriber")
            sink = EventSink()
            await same.subscribe(sink.handler, topic)
            before = await metrics(port)
            await pub.publish(topic, *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            await sink.wait_for(1)
            after = await metrics(port)
            assert sum(after["transcodes"].values()) == sum(before["transcodes"].values()), \
                (before["transcodes"], after["transcodes"])

            other = await h.open("rs-cbor", name="cbor-subscriber")
            sink2 = EventSink()
            await other.subscribe(sink2.handler, topic)
            await pub.publish(topic, *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            await sink2.wait_for(1)
            assert_same(PAYLOAD_ARGS, sink2.events[0][0], "cbor event.args")
            later = await metrics(port)
            assert sum(later["transcodes"].values()) > sum(after["transcodes"].values()), \
                (after["transcodes"], later["transcodes"])

    run(main())


# CBOR encodings autobahn's cbor2 does not write by itself, each with what a
# JSON or MessagePack peer must get: half and single floats, undefined (null),
# a tag (the value, untagged), indefinite-length text, bytes, maps, arrays.
RAW_CBOR_ARGS = bytes([
    0x9f,                                      # indefinite array
    0xf9, 0x3e, 0x00,                          # half float 1.5
    0xfa, 0x3e, 0x80, 0x00, 0x00,              # single float 0.25
    0xf7,                                      # undefined
    0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00,        # tag 1 (epoch time) 1700000000
    0x7f, 0x62, 0x61, 0x62, 0x61, 0x63, 0xff,  # indefinite text "ab" "c"
    0x5f, 0x42, 0x00, 0x01, 0x41, 0x02, 0xff,  # indefinite bytes 00 01 | 02
    0xbf, 0x61, 0x6b, 0x81, 0x01, 0xff,        # indefinite map {"k": [1]}
    0xf9, 0x80, 0x00,                          # half float -0.0
    0xff,
])
RAW_CBOR_EXPECTED = [1.5, 0.25, None, 1700000000, "abc", b"\x00\x01\x02", {"k": [1]}, -0.0]


def test_cbor_encodings_transcoded(router):
    """A raw CBOR PUBLISH with encodings of its own reaches JSON and MessagePack
    subscribers (on each transport kind) as the plain values, and a CBOR
    subscriber with its argument bytes spliced unchanged."""
    _switchyard_only(router, "CBOR")
    topic = "com.example.transports.rawcbor"
    targets = ["ws-json", "rs-json", "ws-msgpack-batched", "unix-rs-msgpack", "uni-ws-json"]

    async def main():
        async with Harness(router) as h:
            pub = await h.open("ws-cbor", name="publisher")
            subs = [await h.open(t, name=t) for t in targets]
            cbor_sub = await h.open("rs-cbor", name="cbor-subscriber")
            frames = []
            on_message = cbor_sub.proto.stringReceived

            def record(payload):
                frames.append(payload)
                return on_message(payload)

            cbor_sub.proto.stringReceived = record
            sinks = [EventSink() for _ in subs]
            cbor_sink = EventSink()
            for s, k in zip(subs, sinks):
                await s.subscribe(k.handler, topic)
            await cbor_sub.subscribe(cbor_sink.handler, topic)
            # PUBLISH [16, Request, {}, Topic, Arguments]
            raw = b"\x85" + b"".join(cbor2.dumps(x) for x in (16, 65536, {}, topic)) + \
                RAW_CBOR_ARGS
            pub.proto.sendMessage(raw, isBinary=True)
            await pub.publish(topic, SENTINEL, options=ACK)
            for t, k in zip(targets, sinks):
                before, _ = await until_sentinel(k)
                assert len(before) == 1, (t, before)
                assert_same(RAW_CBOR_EXPECTED, k.events[0][0], "{} event.args".format(t))
            await until_sentinel(cbor_sink)
            assert any(RAW_CBOR_ARGS in f for f in frames), \
                "no EVENT to the CBOR subscriber holds the publisher's argument bytes as sent"

    run(main())


# ---------------------------------------------------------------------------
# batched WebSocket


def _batch_messages(spec, payload):
    """The messages of one received batch frame (as raw bytes), checking its framing."""
    if spec.serializer == "json":
        # autobahn-python separates with 0x18 (its b'\30' is octal); the router
        # must answer with the separator the client uses
        assert payload.endswith(b"\x18"), payload[-20:]
        assert b"\x1e" not in payload, payload
        return payload.split(b"\x18")[:-1]
    out, i = [], 0
    while i < len(payload):
        (n,) = struct.unpack("!L", payload[i:i + 4])
        out.append(payload[i + 4:i + 4 + n])
        i += 4 + n
    assert i == len(payload), "batch framing: {} of {} bytes".format(i, len(payload))
    return out


@pytest.mark.parametrize("transport", BATCHED)
def test_batched_frames(router, transport):
    """One WebSocket frame carrying 40 PUBLISHes (a client batch) is split by the
    router in order; the subscriber's frames are well-formed batches (JSON: the
    client's 0x18 separator), 40 EVENTs with the payloads exact, and with one
    shard the router put several of them into one frame."""
    why = unsupported(router, transport)
    if why is not None:
        pytest.skip(why)
    spec = TransportSpec(transport)
    topic = _tag(transport, "batch")
    n = 40

    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            pub = await h.open(transport, name="publisher")
            frames = []
            on_message = sub.proto.onMessage

            def record(payload, is_binary):
                frames.append(payload)
                return on_message(payload, is_binary)

            sub.proto.onMessage = record
            sink = EventSink()
            await sub.subscribe(sink.handler, topic)
            start = len(frames)
            objser = pub.proto._serializer._serializer
            batch = b"".join(
                Publish(2 ** 40 + i, topic, args=[i, PAYLOAD_ARGS[i % len(PAYLOAD_ARGS)]],
                        kwargs={"k": PAYLOAD_KWARGS}).serialize(objser)
                for i in range(n))
            pub.proto.sendMessage(batch, isBinary=objser.BINARY)
            await pub.publish(topic, SENTINEL, options=ACK)
            before, _ = await until_sentinel(sink)
            assert before == list(range(n)), before
            for i in range(n):
                args, kwargs, _ = sink.events[i]
                assert_same([i, PAYLOAD_ARGS[i % len(PAYLOAD_ARGS)]], args, "event {}".format(i))
                assert_same({"k": PAYLOAD_KWARGS}, kwargs, "event {} kwargs".format(i))
            counts = [len(_batch_messages(spec, f)) for f in frames]
            assert all(c >= 1 for c in counts), counts
            # after SUBSCRIBED: the 40 events and the sentinel, nothing else
            assert sum(counts[start:]) == n + 1, counts
            if router.kind == "switchyard" and router.shards == 1:
                assert max(counts[start:]) > 1, "no frame held more than one message: {}".format(
                    counts)

    run(main())


@pytest.mark.parametrize("transport", [t for t in BATCHED if TransportSpec(t).serializer == "json"])
def test_json_batch_separator_1e(router, transport):
    """A client that separates its JSON batch with 0x1e (the spec's record
    separator) instead of autobahn-python's 0x18 is understood, and the router
    answers it with 0x1e; other sessions keep 0x18."""
    _switchyard_only(router, "the 0x18 separator")
    why = unsupported(router, transport)
    if why is not None:
        pytest.skip(why)
    topic = _tag(transport, "separator")

    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            pub = await h.open(transport, name="publisher")
            sink = EventSink()
            await sub.subscribe(sink.handler, topic)
            got = asyncio.get_running_loop().create_future()

            def record(payload, is_binary):  # autobahn would not read 0x1e batches
                if not got.done():
                    got.set_result((payload, is_binary))

            pub.proto.onMessage = record
            batch = b"".join(json.dumps(m).encode() + b"\x1e" for m in (
                [16, 77, {"acknowledge": True}, topic, ["first", b64bin(b"\x00\xff")]],
                [16, 78, {}, topic, ["second"]],
                [16, 79, {"exclude_me": False}, topic, [SENTINEL]],
            ))
            pub.proto.sendMessage(batch, isBinary=False)
            payload, is_binary = await asyncio.wait_for(got, 10)
            assert not is_binary
            assert payload.endswith(b"\x1e") and b"\x18" not in payload, payload
            published = json.loads(payload.split(b"\x1e")[0])
            assert published[:2] == [17, 77] and type(published[2]) is int, published
            before, _ = await until_sentinel(sink)
            assert before == ["first", "second"], before
            assert_same(["first", b"\x00\xff"], sink.events[0][0], "event.args")
            # the subscriber (autobahn, 0x18) could read all of it; the
            # publisher cannot read its GOODBYE reply: drop it
            pub.drop_transport()
            await asyncio.wait_for(asyncio.shield(pub.disconnected), 10)

    run(main())


# ---------------------------------------------------------------------------
# Unix socket


def test_unix_socket_mode(router):
    """The socket file exists, is a socket, and has the listener's `mode`."""
    why = unsupported(router, "unix-rs-json")
    if why is not None:
        pytest.skip(why)
    st = os.stat(router.unix_path)
    assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == router.unix_mode, \
        "mode {:o}, config asked for {:o}".format(stat.S_IMODE(st.st_mode), router.unix_mode)


def test_unix_connections_spread(router):
    """20 Unix-socket sessions held open at once: every one is accepted once
    (switchyard_unix_accepted grows by 20 in all), on every shard (both > 0 with
    2 shards), and they all get one publication, whichever shard serves them."""
    _switchyard_only(router, "/metrics")
    why = unsupported(router, "unix-rs-json")
    if why is not None:
        pytest.skip(why)
    topic = "com.example.transports.unix.spread"
    n = 20

    async def main():
        async with Harness(router) as h:
            before = (await metrics(router.ws_port))["unix_accepted"]
            sessions = []
            for i in range(n):
                sessions.append(await h.open("unix-rs-" + SERIALIZERS[i % 3], name="u{}".format(i)))
            after = (await metrics(router.ws_port))["unix_accepted"]
            assert set(after) == set(range(router.shards)), after
            delta = {shard: after[shard] - before.get(shard, 0) for shard in after}
            assert sum(delta.values()) == n, (before, after)
            assert all(d > 0 for d in delta.values()), \
                "not every shard served a Unix connection: {}".format(delta)
            sinks = [EventSink() for _ in sessions]
            await asyncio.gather(*(s.subscribe(k.handler, topic) for s, k in zip(sessions, sinks)))
            pub = await h.open("rs-msgpack", name="publisher")
            await pub.publish(topic, "to all", b"\x00unix", options=ACK)
            for s, k in zip(sessions, sinks):
                events = await k.wait_for(1)
                assert_same(["to all", b"\x00unix"], events[0][0], s.name)

    run(main())


# ---------------------------------------------------------------------------
# universal listener


def test_universal_http_metrics(router):
    """Plain HTTP on the universal port: GET /metrics answers 200 text/plain with
    every shard's counters, live (a publication over the universal port's
    WebSocket shows); another path is 404."""
    _switchyard_only(router, "/metrics")
    why = unsupported(router, "uni-ws-json")
    if why is not None:
        pytest.skip(why)
    port = router.universal_port
    topic = "com.example.transports.universal"

    async def main():
        before = await metrics(port)
        for name in ("sessions", "publications", "unix_accepted"):
            assert set(before.get(name, {})) == set(range(router.shards)), (name, before.get(name))
        async with Harness(router) as h:
            ws = await h.open("uni-ws-json")
            rs = await h.open("uni-rs-cbor")
            sink = EventSink()
            await rs.subscribe(sink.handler, topic)
            await ws.publish(topic, "via universal", options=ACK)
            await sink.wait_for(1)
            assert sink.events[0][0] == ["via universal"]
            after = await metrics(port)
            assert sum(after["publications"].values()) > sum(before["publications"].values()), \
                (before["publications"], after["publications"])
        status, _, _ = await asyncio.to_thread(_get, port, "/no-such-page")
        assert status == 404, status

    run(main())
