"""Advanced PubSub with autobahn-python: publisher identification, subscriber
black/white listing and event retention.

An event that must *not* reach a subscriber is shown by a later sentinel event
from the same publisher: events from one publisher reach a subscriber in
publication order, so the subscriber's next event must be the sentinel.
Topics carry the transport id: a test module's router lives for all three
transports, and retained events outlive the sessions that published them.
"""

import pytest
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from harness import SENTINEL, EventSink, Harness, disclosing, run, ticket_auth, until_sentinel

ACK = PublishOptions(acknowledge=True)


def _topic(name, transport):
    return "com.example.advps.{}.{}".format(name, transport.replace("-", "_"))


def test_welcome_announces_advanced_pubsub(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport)
            broker = s.welcome.roles["broker"]
            for feature in ("publisher_identification", "subscriber_blackwhite_listing",
                            "event_retention", "session_meta_api", "subscription_meta_api",
                            "subscription_revocation", "publisher_exclusion",
                            "pattern_based_subscription"):
                assert getattr(broker, feature) is True, (feature, broker)
            dealer = s.welcome.roles["dealer"]
            for feature in ("session_meta_api", "registration_meta_api", "testament_meta_api",
                            "registration_revocation"):
                assert getattr(dealer, feature) is True, (feature, dealer)

    run(main())


def test_disclose_me_names_the_publisher(router, transport):
    topic = _topic("disclose", transport)

    async def main():
        async with Harness(router) as h:
            subs = [await h.open(transport, name="sub{}".format(i)) for i in range(2)]
            pub = await h.open(transport, name="publisher")
            sinks = [EventSink() for _ in subs]
            for s, sink in zip(subs, sinks):
                await s.subscribe(sink.handler, topic, options=SubscribeOptions(details=True))

            await pub.publish(topic, "anonymous", options=ACK)
            with disclosing(pub):
                named = pub.publish(topic, "named", options=ACK)
            await named
            for sink in sinks:
                events = await sink.wait_for(2)
                assert [e[0] for e in events] == [["anonymous"], ["named"]], events
                plain, disclosed = events[0][2], events[1][2]
                assert (plain.publisher, plain.publisher_authid, plain.publisher_authrole) == \
                    (None, None, None), str(plain)
                assert disclosed.publisher == pub.session_id, str(disclosed)
                assert disclosed.publisher_authid == pub.join_details.authid, str(disclosed)
                assert disclosed.publisher_authrole == "anonymous", str(disclosed)

    run(main())


def test_a_realm_may_disclose_every_publisher(router, transport):
    if router.kind != "switchyard":
        pytest.skip("the realm setting (publisher_disclosure) is Switchyard's")
    topic = _topic("always", transport)

    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, realm="realm.disclosed", name="subscriber")
            pub = await h.open(transport, realm="realm.disclosed", name="publisher",
                               auth=ticket_auth(router, "pub-1"))
            sink = EventSink()
            await sub.subscribe(sink.handler, topic, options=SubscribeOptions(details=True))
            await pub.publish(topic, "x", options=ACK)
            (args, _, details), = await sink.wait_for(1)
            assert args == ["x"]
            assert (details.publisher, details.publisher_authid, details.publisher_authrole) == \
                (pub.session_id, "pub-1", "anonymous"), str(details)

    run(main())


async def _expect_receivers(pub, topic, sinks, marks, options, want, label):
    """Publishes label with options, then the sentinel to everyone; subscriber
    i must get label first exactly when want[i]."""
    await pub.publish(topic, label, options=options)
    await pub.publish(topic, SENTINEL, options=ACK)
    for i, sink in enumerate(sinks):
        got, marks[i] = await until_sentinel(sink, marks[i])
        assert got == ([label] if want[i] else []), \
            "{}: subscriber {} got {!r} before the sentinel (want {})".format(
                label, i, got, "the event" if want[i] else "nothing")


def test_black_and_white_lists_by_session_and_authrole(router, transport):
    topic = _topic("lists", transport)

    def opts(**kw):
        return PublishOptions(acknowledge=True, **kw)

    async def main():
        async with Harness(router) as h:
            subs = [await h.open(transport, name="sub{}".format(i)) for i in range(3)]
            pub = await h.open(transport, name="publisher")
            sinks = [EventSink() for _ in subs]
            for s, sink in zip(subs, sinks):
                await s.subscribe(sink.handler, topic)
            ids = [s.session_id for s in subs]
            marks = [0] * len(subs)
            cases = [
                (opts(), [True, True, True]),
                (opts(exclude=[ids[0], ids[2]]), [False, True, False]),
                (opts(exclude=ids[1]), [True, False, True]),  # a single id
                (opts(eligible=[ids[0], ids[1]]), [True, True, False]),
                (opts(eligible=[ids[0], ids[1]], exclude=[ids[1]]), [True, False, False]),
                (opts(eligible_authrole=["anonymous"]), [True, True, True]),
                (opts(exclude_authrole=["anonymous"]), [False, False, False]),
                (opts(eligible_authrole=["admin"]), [False, False, False]),
                (opts(eligible_authrole="anonymous", exclude=[ids[2]]), [True, True, False]),
                (opts(eligible=[]), [False, False, False]),
            ]
            for n, (options, want) in enumerate(cases):
                await _expect_receivers(pub, topic, sinks, marks, options, want,
                                        "case {}: {}".format(n, options))

    run(main())


def test_black_and_white_lists_by_authid(router, transport):
    if router.kind != "switchyard":
        pytest.skip("the principals (WAMP-Ticket logins) are in Switchyard's test configuration")
    topic = _topic("authids", transport)

    def opts(**kw):
        return PublishOptions(acknowledge=True, **kw)

    async def main():
        async with Harness(router) as h:
            authids = ["alice", "bob", "alice", "carol"]
            subs = [await h.open(transport, name="sub{}".format(i), auth=ticket_auth(router, a))
                    for i, a in enumerate(authids)]
            assert [s.join_details.authid for s in subs] == authids
            assert {s.join_details.authrole for s in subs} == {"anonymous"}
            pub = await h.open(transport, name="publisher", auth=ticket_auth(router, "alice"))
            sinks = [EventSink() for _ in subs]
            for s, sink in zip(subs, sinks):
                await s.subscribe(sink.handler, topic)
            ids = [s.session_id for s in subs]
            marks = [0] * len(subs)
            cases = [
                (opts(exclude_authid=["alice"]), [False, True, False, True]),
                (opts(exclude_authid="bob"), [True, False, True, True]),
                (opts(eligible_authid=["alice", "carol"]), [True, False, True, True]),
                (opts(eligible_authid=["nobody"]), [False, False, False, False]),
                (opts(eligible_authid=["alice"], exclude=[ids[2]]), [True, False, False, False]),
                (opts(eligible=[ids[0], ids[1]], exclude_authid=["bob"]), [True, False, False, False]),
                (opts(eligible_authid=["bob", "carol"], exclude_authrole=["anonymous"]),
                 [False, False, False, False]),
            ]
            for n, (options, want) in enumerate(cases):
                await _expect_receivers(pub, topic, sinks, marks, options, want,
                                        "case {}: {}".format(n, options))

    run(main())


def test_a_whitelist_may_name_the_publisher(router, transport):
    topic = _topic("self", transport)

    async def main():
        async with Harness(router) as h:
            other = await h.open(transport, name="other")
            pub = await h.open(transport, name="publisher")
            own, sink = EventSink(), EventSink()
            await pub.subscribe(own.handler, topic)
            await other.subscribe(sink.handler, topic)
            await pub.publish(topic, "self", options=PublishOptions(
                acknowledge=True, eligible=[pub.session_id], exclude_me=False))
            await pub.publish(topic, SENTINEL, options=PublishOptions(acknowledge=True,
                                                                      exclude_me=False))
            assert (await until_sentinel(own))[0] == ["self"]
            assert (await until_sentinel(sink))[0] == []

    run(main())


def test_retained_event_reaches_a_new_subscriber_first(router, transport):
    topic = _topic("retained", transport)
    retain = PublishOptions(acknowledge=True, retain=True)

    async def main():
        async with Harness(router) as h:
            pub = await h.open(transport, name="publisher")
            await pub.publish(topic, "r1", options=retain)
            await pub.publish(topic, "r2", n=2, options=retain)
            # not retained: the last event published without retain
            await pub.publish(topic, "live", options=ACK)

            late = await h.open(transport, name="late")
            sink = EventSink()
            subscription = await late.subscribe(
                sink.handler, topic, options=SubscribeOptions(get_retained=True, details=True))
            (args, kwargs, details), = await sink.wait_for(1)
            assert (args, kwargs) == (["r2"], {"n": 2}), "the last retained event"
            assert details.retained is True, str(details)
            assert details.subscription.id == subscription.id
            # live events are not marked retained
            await pub.publish(topic, "after", options=ACK)
            await sink.wait_for(2)
            assert sink.events[1][0] == ["after"]
            assert not sink.events[1][2].retained, str(sink.events[1][2])
            # only one retained event
            await pub.publish(topic, SENTINEL, options=ACK)
            assert (await until_sentinel(sink, 2))[0] == []

            # a subscriber that does not ask gets nothing of it
            plain = await h.open(transport, name="plain")
            plain_sink = EventSink()
            await plain.subscribe(plain_sink.handler, topic)
            await pub.publish(topic, SENTINEL, options=ACK)
            assert (await until_sentinel(plain_sink))[0] == []

            # it outlives its publisher
            await pub.close()
            again = await h.open(transport, name="again")
            again_sink = EventSink()
            await again.subscribe(again_sink.handler, topic,
                                  options=SubscribeOptions(get_retained=True, details=True))
            (args, _, details), = await again_sink.wait_for(1)
            assert args == ["r2"] and details.retained is True, (args, str(details))

    run(main())


def test_retained_events_of_a_pattern_and_their_whitelist(router, transport):
    prefix = _topic("retainedp", transport) + "."
    retain = PublishOptions(acknowledge=True, retain=True)

    async def main():
        async with Harness(router) as h:
            pub = await h.open(transport, name="publisher")
            await pub.publish(prefix + "a", "a1", options=retain)
            await pub.publish(prefix + "a", "a2", options=retain)
            await pub.publish(prefix + "b", "b1", options=retain)
            # a retained event whose whitelist keeps it from everyone here
            await pub.publish(prefix + "c", "secret", options=PublishOptions(
                acknowledge=True, retain=True, eligible=[pub.session_id]))

            wide = await h.open(transport, name="wide")
            sink = EventSink()
            await wide.subscribe(sink.handler, prefix, options=SubscribeOptions(
                match="prefix", get_retained=True, details=True))
            events = await sink.wait_for(2)
            got = sorted((e[2].topic, e[0][0]) for e in events[:2])
            assert got == [(prefix + "a", "a2"), (prefix + "b", "b1")], got
            assert all(e[2].retained is True for e in events[:2]), [str(e[2]) for e in events]
            await pub.publish(prefix + "x", SENTINEL, options=ACK)
            assert (await until_sentinel(sink, 2))[0] == [], "the whitelist holds for retained events"

    run(main())


def test_event_history(router, transport):
    # realm1 keeps the last 5 events of each com.example.history.* topic
    # (conftest.py); wamp.subscription.get_events returns them for a
    # subscription, oldest first, with the spec's Event dictionaries
    if router.kind != "switchyard":
        pytest.skip("the history rule is Switchyard's configuration")
    topic = "com.example.history.{}".format(transport.replace("-", "_"))

    async def main():
        async with Harness(router) as h:
            publisher = await h.open(transport, name="publisher")
            reader = await h.open(transport, name="reader")
            sub = await reader.subscribe(lambda *a, **kw: None, topic)
            pubs = []
            for i in range(7):
                pub = await publisher.publish(topic, i, n=i, options=PublishOptions(acknowledge=True))
                pubs.append(pub.id)
            events = await reader.call("wamp.subscription.get_events", sub.id)
            assert [e["args"][0] for e in events] == [2, 3, 4, 5, 6], events
            first = events[0]
            assert first["subscription"] == sub.id
            assert first["publication"] == pubs[2]
            assert first["kwargs"] == {"n": 2}
            assert first["timestamp"].endswith("Z"), first
            newest = await reader.call("wamp.subscription.get_events", sub.id, reverse=True, limit=2)
            assert [e["args"][0] for e in newest] == [6, 5], newest
            after = await reader.call("wamp.subscription.get_events", sub.id, after_publication=pubs[4])
            assert [e["args"][0] for e in after] == [5, 6], after

    run(main())
