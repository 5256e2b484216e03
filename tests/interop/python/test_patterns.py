"""Pattern-based subscriptions and registrations (prefix and wildcard matching)."""

from autobahn.wamp.types import (CallResult, PublishOptions, RegisterOptions,
                                 SubscribeOptions)

from harness import EventSink, Harness, expect_app_error, run

ACK = PublishOptions(acknowledge=True)


def test_prefix_subscription(router, transport):
    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            pub = await h.open(transport, name="publisher")
            sink = EventSink()
            subscription = await sub.subscribe(
                sink.handler, "com.example.pfx", options=SubscribeOptions(match="prefix", details=True))
            assert type(subscription.id) is int

            await pub.publish("com.other.pfx.a", "no match", options=ACK)
            await pub.publish("com.example.pfx.a.b", "deep", options=ACK)
            await pub.publish("com.example.pfx", "exact uri", options=ACK)
            events = await sink.wait_for(2)
            # ordered per publisher: a delivered non-match would have come first
            assert [e[0] for e in events] == [["deep"], ["exact uri"]], events
            # EVENT.Details.topic carries the concrete topic of a pattern subscription
            assert events[0][2].topic == "com.example.pfx.a.b"
            assert events[1][2].topic == "com.example.pfx"
            assert events[0][2].subscription.id == subscription.id

    run(main())


def test_wildcard_subscription(router, transport):
    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            pub = await h.open(transport, name="publisher")
            sink = EventSink()
            await sub.subscribe(sink.handler, "com..event",
                                options=SubscribeOptions(match="wildcard", details=True))

            await pub.publish("com.x.y.event", "too many components", options=ACK)
            await pub.publish("com.x.other", "wrong last component", options=ACK)
            await pub.publish("org.x.event", "wrong first component", options=ACK)
            await pub.publish("com.x.event", "match", options=ACK)
            events = await sink.wait_for(1)
            assert [e[0] for e in events] == [["match"]], events
            assert events[0][2].topic == "com.x.event"

    run(main())


def test_exact_and_pattern_subscriptions_both_receive(router, transport):
    async def main():
        async with Harness(router) as h:
            sub = await h.open(transport, name="subscriber")
            pub = await h.open(transport, name="publisher")
            exact, prefix, wildcard = EventSink(), EventSink(), EventSink()
            await sub.subscribe(exact.handler, "com.example.multi.event")
            await sub.subscribe(prefix.handler, "com.example.multi",
                                options=SubscribeOptions(match="prefix"))
            await sub.subscribe(wildcard.handler, "com.example..event",
                                options=SubscribeOptions(match="wildcard"))
            await pub.publish("com.example.multi.event", 42, options=ACK)
            for sink in (exact, prefix, wildcard):
                events = await sink.wait_for(1)
                assert [e[0] for e in events] == [[42]]

    run(main())


def test_prefix_registration(router, transport):
    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")

            def handler(*args, details=None, **kwargs):
                return CallResult(details.procedure, *args, **kwargs)

            await callee.register(handler, "com.example.prefixproc",
                                  options=RegisterOptions(match="prefix", details=True))
            res = await caller.call("com.example.prefixproc.a.b", 1, k="v")
            assert list(res.results) == ["com.example.prefixproc.a.b", 1]
            assert res.kwresults == {"k": "v"}

            res = await caller.call("com.example.prefixproc", 2)
            assert list(res.results) == ["com.example.prefixproc", 2]

            err = await expect_app_error(caller.call("com.example.other", 3))
            assert err.error == "wamp.error.no_such_procedure", err

    run(main())


def test_wildcard_registration(router, transport):
    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")

            def handler(*args, details=None, **kwargs):
                return CallResult(details.procedure, *args, **kwargs)

            await callee.register(handler, "com..wproc",
                                  options=RegisterOptions(match="wildcard", details=True))
            res = await caller.call("com.x.wproc", "a")
            assert list(res.results) == ["com.x.wproc", "a"]

            for uri in ["com.x.y.wproc", "com.x.other", "org.x.wproc"]:
                err = await expect_app_error(caller.call(uri))
                assert err.error == "wamp.error.no_such_procedure", (uri, err)

    run(main())


def test_registration_match_precedence(router, transport):
    """exact beats prefix, a longer prefix beats a shorter one, prefix beats wildcard."""
    async def main():
        async with Harness(router) as h:
            callees = [await h.open(transport, name="callee-" + n)
                       for n in ("exact", "prefix-short", "prefix-long", "wildcard")]
            caller = await h.open(transport, name="caller")

            def answer(name):
                return lambda *a, **kw: name

            await callees[0].register(answer("exact"), "com.prec.a.b.c")
            await callees[1].register(answer("prefix-short"), "com.prec",
                                      options=RegisterOptions(match="prefix"))
            await callees[2].register(answer("prefix-long"), "com.prec.a.b",
                                      options=RegisterOptions(match="prefix"))
            await callees[3].register(answer("wildcard"), "com.prec..c",
                                      options=RegisterOptions(match="wildcard"))

            assert await caller.call("com.prec.a.b.c") == "exact"
            assert await caller.call("com.prec.a.b.x") == "prefix-long"
            assert await caller.call("com.prec.z.c") == "prefix-short"  # prefix wins over wildcard
            assert await caller.call("com.prec.x") == "prefix-short"

    run(main())
