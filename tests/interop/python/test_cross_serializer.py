"""Peers on different serializers/transports talk through the router (transcoding)."""

import itertools

import pytest
from autobahn.wamp.types import CallResult, PublishOptions, SubscribeOptions

from harness import (PAYLOAD_ARGS, PAYLOAD_KWARGS, RS_MSGPACK, TRANSPORTS, WS_JSON, WS_MSGPACK,
                     EventSink, Harness, assert_same, normalize_result, run)

PAIRS = [p for p in itertools.permutations(TRANSPORTS, 2)]
PAIR_IDS = ["{}-to-{}".format(a, b) for a, b in PAIRS]
ACK = PublishOptions(acknowledge=True)


@pytest.mark.parametrize("caller_t,callee_t", PAIRS, ids=PAIR_IDS)
def test_cross_call(router, caller_t, callee_t):
    """e.g. a caller on WebSocket+JSON calls a callee on RawSocket+MessagePack."""
    proc = "com.example.cross.echo"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(callee_t, name="callee")
            caller = await h.open(caller_t, name="caller")
            seen = []

            def echo(*args, **kwargs):
                seen.append((list(args), dict(kwargs)))
                return CallResult(*args, **kwargs)

            await callee.register(echo, proc)
            res = await caller.call(proc, *PAYLOAD_ARGS, **PAYLOAD_KWARGS)
            # what the callee decoded is what the caller sent ...
            assert_same(PAYLOAD_ARGS, seen[0][0], "invocation.args")
            assert_same(PAYLOAD_KWARGS, seen[0][1], "invocation.kwargs")
            # ... and the way back
            args, kwargs = normalize_result(res)
            assert_same(PAYLOAD_ARGS, args, "result.args")
            assert_same(PAYLOAD_KWARGS, kwargs, "result.kwargs")

    run(main())


@pytest.mark.parametrize("pub_t,sub_t", PAIRS, ids=PAIR_IDS)
def test_cross_publish(router, pub_t, sub_t):
    """e.g. a publisher on MessagePack, a subscriber on JSON."""
    topic = "com.example.cross.topic"

    async def main():
        async with Harness(router) as h:
            sub = await h.open(sub_t, name="subscriber")
            pub = await h.open(pub_t, name="publisher")
            sink = EventSink()
            await sub.subscribe(sink.handler, topic, options=SubscribeOptions(details=True))
            publication = await pub.publish(topic, *PAYLOAD_ARGS, options=ACK, **PAYLOAD_KWARGS)
            events = await sink.wait_for(1)
            args, kwargs, details = events[0]
            assert details.publication == publication.id
            assert_same(PAYLOAD_ARGS, args, "event.args")
            assert_same(PAYLOAD_KWARGS, kwargs, "event.kwargs")

    run(main())


@pytest.mark.parametrize("pub_t", TRANSPORTS)
def test_mixed_serializer_fanout(router, pub_t):
    """One publisher, two subscribers on each transport kind, 20 ordered events each."""
    topic = "com.example.cross.fanout"
    n_events = 20

    async def main():
        async with Harness(router) as h:
            subs = []
            for t in (WS_JSON, WS_MSGPACK, RS_MSGPACK):
                for i in range(2):
                    subs.append(await h.open(t, name="{}-sub{}".format(t, i)))
            pub = await h.open(pub_t, name="publisher")
            sinks = [EventSink() for _ in subs]
            for s, sink in zip(subs, sinks):
                await s.subscribe(sink.handler, topic)
            for i in range(n_events):
                pub.publish(topic, i, PAYLOAD_ARGS[i % len(PAYLOAD_ARGS)], payload=PAYLOAD_KWARGS)
            await pub.publish(topic, n_events, None, payload=None, options=ACK)
            for s, sink in zip(subs, sinks):
                events = await sink.wait_for(n_events + 1)
                assert [e[0][0] for e in events] == list(range(n_events + 1)), s.name
                for i, (args, kwargs, _) in enumerate(events[:n_events]):
                    assert_same([i, PAYLOAD_ARGS[i % len(PAYLOAD_ARGS)]], args,
                                "{} event {} args".format(s.name, i))
                    assert_same({"payload": PAYLOAD_KWARGS}, kwargs,
                                "{} event {} kwargs".format(s.name, i))

    run(main())
