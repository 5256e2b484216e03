"""Publish & Subscribe between separate sessions on one transport kind."""

import asyncio

from autobahn.wamp.request import Publication, Subscription
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from harness import EventSink, Harness, run

ACK = PublishOptions(acknowledge=True)


def test_publish_ack_and_exclude_me(router, transport):
    topic = "com.example.pubsub.basic"

    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            pub = await h.open(transport, name="publisher")

            sub_sink, pub_sink = EventSink(), EventSink()
            subscription = await sub.subscribe(sub_sink.handler, topic,
                                               options=SubscribeOptions(details=True))
            assert isinstance(subscription, Subscription)
            assert type(subscription.id) is int
            # the publisher is subscribed too, to check publisher exclusion
            await pub.subscribe(pub_sink.handler, topic, options=SubscribeOptions(details=True))

            # 1) acknowledged publish, exclude_me defaults to true
            publication = await pub.publish(topic, 1, "one", color="red", options=ACK)
            assert isinstance(publication, Publication), publication
            assert type(publication.id) is int and 1 <= publication.id <= 2 ** 53, publication.id

            events = await sub_sink.wait_for(1)
            args, kwargs, details = events[0]
            assert args == [1, "one"]
            assert kwargs == {"color": "red"}
            assert details.publication == publication.id
            assert details.subscription.id == subscription.id

            # 2) exclude_me=False: now the publisher gets its own event as well
            publication2 = await pub.publish(
                topic, 2, options=PublishOptions(acknowledge=True, exclude_me=False))
            assert publication2.id != publication.id
            await sub_sink.wait_for(2)
            own = await pub_sink.wait_for(1)
            # events from one publisher arrive in order: had event 1 reached the publisher
            # (it must not: exclude_me defaults to true) it would be first in its list.
            assert [e[0] for e in own] == [[2]], \
                "publisher got its own events {!r}; expected only the exclude_me=False one".format(
                    [e[0] for e in own])
            assert own[0][2].publication == publication2.id
            assert [e[0] for e in sub_sink.events] == [[1, "one"], [2]]

            # 3) unacknowledged publish returns nothing and is still delivered
            assert pub.publish(topic, 3) is None
            await sub_sink.wait_for(3)
            assert sub_sink.events[2][0] == [3]

    run(main())


def test_fanout_many_sessions_in_order(router, transport):
    """8 subscribers + 1 publisher: with 2 shards the kernel spreads them (SO_REUSEPORT)."""
    topic = "com.example.pubsub.fanout"
    n_subs, n_events = 8, 50

    async def main():
        async with Harness(router) as h:
            subs = [await h.open(transport, name="sub{}".format(i)) for i in range(n_subs)]
            pub = await h.open(transport, name="publisher")
            sinks = [EventSink() for _ in subs]
            sub_ids = set()
            for s, sink in zip(subs, sinks):
                subscription = await s.subscribe(sink.handler, topic)
                sub_ids.add(subscription.id)
            # one topic + one match policy -> one subscription id router-wide (spec)
            assert len(sub_ids) == 1, "subscription ids differ across sessions: {}".format(sub_ids)

            acks = [pub.publish(topic, i, seq=i, options=ACK) for i in range(n_events)]
            publications = await asyncio.gather(*acks)
            pub_ids = [p.id for p in publications]
            assert all(type(i) is int for i in pub_ids)
            assert len(set(pub_ids)) == n_events, "publication ids are not unique"

            for i, sink in enumerate(sinks):
                events = await sink.wait_for(n_events)
                got = [e[0][0] for e in events]
                assert got == list(range(n_events)), \
                    "subscriber {} got events out of order / duplicated: {}".format(i, got)
                assert [e[1]["seq"] for e in events] == list(range(n_events))

    run(main())


def test_unsubscribe_stops_events(router, transport):
    topic = "com.example.pubsub.unsub"
    sentinel = "com.example.pubsub.unsub.sentinel"

    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            control = await h.open(transport, name="control")
            pub = await h.open(transport, name="publisher")
            sink, sentinel_sink, control_sink = EventSink(), EventSink(), EventSink()
            subscription = await sub.subscribe(sink.handler, topic)
            await sub.subscribe(sentinel_sink.handler, sentinel)
            await control.subscribe(control_sink.handler, topic)

            await pub.publish(topic, "before", options=ACK)
            await sink.wait_for(1)
            await control_sink.wait_for(1)

            await subscription.unsubscribe()
            assert not subscription.active

            await pub.publish(topic, "after", options=ACK)
            await pub.publish(sentinel, "sentinel", options=ACK)
            # the control subscriber still gets events on the topic
            await control_sink.wait_for(2)
            assert [e[0] for e in control_sink.events] == [["before"], ["after"]]
            # events from one publisher reach a subscriber in order, across topics: once
            # the sentinel has arrived, an "after" event would already be here.
            await sentinel_sink.wait_for(1)
            assert [e[0] for e in sink.events] == [["before"]], \
                "events after unsubscribe: {!r}".format(sink.events)

    run(main())
