"""The WAMP meta API with autobahn-python: session events, wamp.session.kill,
testaments, the subscription and registration meta events and procedures,
and subscription revocation.

test_advanced_rpc.py has wamp.session.count/list/get and
wamp.registration.remove_callee. An event that must *not* arrive is shown by a
later event on the same path (see harness.until_sentinel). URIs carry the
transport id: one router serves a module's tests on all three transports.
"""

import asyncio

import pytest
from autobahn.wamp import message
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from harness import (RS_MSGPACK, SENTINEL, WAIT, EventSink, Harness, expect_app_error, run,
                     ticket_auth, until_sentinel)

ACK = PublishOptions(acknowledge=True)


def _uri(name, transport):
    return "com.example.meta.{}.{}".format(name, transport.replace("-", "_"))


def _login(router, authid):
    """A WAMP-Ticket login as authid (a principal of Switchyard's test
    config); an anonymous session under Crossbar, whose config has none."""
    return ticket_auth(router, authid) if router.kind == "switchyard" else None


class Tagged(EventSink):
    """One sink for several meta topics, in arrival order: each event's
    args start with the handler's tag."""

    def on(self, tag):
        def handler(*args, details=None, **kwargs):
            self.handler(tag, *args, details=details, **kwargs)
        return handler

    async def about(self, sessions, n, timeout=WAIT):
        """Waits for n events about sessions (the meta events' first
        argument); returns their args. Events about other sessions (a
        previous test's, still leaving) are left out."""
        k = 0
        while True:
            mine = [e[0] for e in self.events if _about(e[0]) in sessions]
            if len(mine) >= n:
                return mine
            k = max(k, len(self.events)) + 1
            await self.wait_for(k, timeout)

    async def next_matching(self, start, pred, timeout=WAIT):
        """The first event at or after index start whose args satisfy pred;
        returns (args, index after it)."""
        n = start
        while True:
            n += 1
            events = await self.wait_for(n, timeout)
            if pred(events[n - 1][0]):
                return events[n - 1][0], n


def _about(args):
    """The session a meta event is about: its first argument (after the tag),
    or that dictionary's "session"."""
    first = args[1] if len(args) > 1 else None
    return first.get("session") if isinstance(first, dict) else first


async def _subscribe_all(session, sink, prefix, names):
    for name in names:
        await session.subscribe(sink.on(name), "{}.{}".format(prefix, name))


# ---------------------------------------------------------------------------
# wamp.session.on_join / on_leave


def test_session_join_and_leave_events(router, transport):
    async def main():
        async with Harness(router) as h:
            watcher = await h.open(transport, name="watcher")
            sink = Tagged()
            await _subscribe_all(watcher, sink, "wamp.session", ["on_join", "on_leave"])

            joiner = await h.open(transport, name="joiner", auth=_login(router, "joiner"))
            sid = joiner.session_id
            args, mark = await sink.next_matching(
                0, lambda a: a[0] == "on_join" and a[1]["session"] == sid)
            joined = args[1]
            assert joined["authid"] == joiner.join_details.authid, joined
            assert joined["authrole"] == "anonymous", joined
            assert joined["authmethod"] == joiner.join_details.authmethod, joined
            if router.kind == "switchyard":
                assert (joined["authid"], joined["authmethod"]) == ("joiner", "ticket"), joined
            else:
                assert joined["authmethod"] == "anonymous", joined
            if "transport" in joined:
                kind = "rawsocket" if transport == RS_MSGPACK else "websocket"
                assert joined["transport"]["type"] == kind, joined

            # a GOODBYE: on_leave with session, authid, authrole
            await joiner.close()
            args, mark = await sink.next_matching(
                mark, lambda a: a[0] == "on_leave" and a[1] == sid)
            assert args[1:] == [sid, joiner.join_details.authid, "anonymous"], args

            # a dropped transport
            dropped = await h.open(transport, name="dropped")
            did = dropped.session_id
            args, mark = await sink.next_matching(
                mark, lambda a: a[0] == "on_join" and a[1]["session"] == did)
            assert args[1]["authmethod"] == "anonymous", args
            if router.kind == "switchyard":
                # an anonymous session's authid is the router's
                assert args[1]["authid"] == "anonymous-{}".format(did), args
            dropped.drop_transport()
            args, mark = await sink.next_matching(
                mark, lambda a: a[0] == "on_leave" and a[1] == did)
            assert args[1:] == [did, dropped.join_details.authid, "anonymous"], args

    run(main())


def test_another_realms_sessions_are_not_seen(router, transport):
    if router.kind != "switchyard":
        pytest.skip("the second realm is in Switchyard's test configuration")

    async def main():
        async with Harness(router) as h:
            watcher = await h.open(transport, name="watcher")
            sink = Tagged()
            await _subscribe_all(watcher, sink, "wamp.session", ["on_join", "on_leave"])
            other = await h.open(transport, realm="realm.disclosed", name="other")
            oid = other.session_id
            await other.close()
            later = await h.open(transport, name="later")
            # everything up to the later session's join: none of it is the other realm's
            args, mark = await sink.next_matching(
                0, lambda a: a[0] == "on_join" and a[1]["session"] == later.session_id)
            seen = [a[1]["session"] if a[0] == "on_join" else a[1]
                    for a, _, _ in sink.events[:mark]]
            assert oid not in seen, sink.events[:mark]

    run(main())


# ---------------------------------------------------------------------------
# wamp.session.kill


def test_session_kill(router, transport):
    async def main():
        async with Harness(router) as h:
            admin = await h.open(transport, name="admin")
            sink = Tagged()
            await _subscribe_all(admin, sink, "wamp.session", ["on_leave"])
            victim = await h.open(transport, name="victim")
            vid = victim.session_id

            res = await admin.call("wamp.session.kill", vid, reason="com.example.bye",
                                   message="so long")
            assert res is None, res
            details = await asyncio.wait_for(asyncio.shield(victim.left), WAIT)
            assert details.reason == "com.example.bye", str(details)
            assert details.message == "so long", str(details)
            # autobahn answered the GOODBYE; the router then closes the connection
            await asyncio.wait_for(asyncio.shield(victim.disconnected), WAIT)
            assert not victim.is_attached()
            await sink.next_matching(0, lambda a: a[1] == vid)
            err = await expect_app_error(admin.call("wamp.session.get", vid))
            assert err.error == "wamp.error.no_such_session", err

            # the caller's own session: not killed
            err = await expect_app_error(admin.call("wamp.session.kill", admin.session_id))
            assert err.error == "wamp.error.no_such_session", err
            err = await expect_app_error(admin.call("wamp.session.kill", vid))
            assert err.error == "wamp.error.no_such_session", err
            assert admin.is_attached()
            assert await admin.call("wamp.session.get", admin.session_id)

    run(main())


def test_session_kill_by_authid(router, transport):
    if router.kind != "switchyard":
        pytest.skip("the principals (WAMP-Ticket logins) are in Switchyard's test configuration")
    authid = "twin-" + transport

    async def main():
        async with Harness(router) as h:
            admin = await h.open(transport, name="admin", auth=ticket_auth(router, authid))
            twins = [await h.open(transport, name="twin{}".format(i),
                                  auth=ticket_auth(router, authid))
                     for i in range(2)]
            twin_ids = sorted(t.session_id for t in twins)
            bystander = await h.open(transport, name="bystander")
            killed = await admin.call("wamp.session.kill_by_authid", authid)
            assert sorted(killed) == twin_ids, killed
            for t in twins:
                details = await asyncio.wait_for(asyncio.shield(t.left), WAIT)
                assert details.reason == "wamp.close.killed", str(details)
            # never the caller, never another authid
            assert admin.is_attached() and bystander.is_attached()
            assert await admin.call("wamp.session.kill_by_authid", authid) == []

    run(main())


# ---------------------------------------------------------------------------
# testaments


def test_testaments_are_published_when_the_transport_drops(router, transport):
    topic = _uri("will", transport)

    async def main():
        async with Harness(router) as h:
            heir = await h.open(transport, name="heir")
            sink = EventSink()
            await heir.subscribe(sink.handler, topic, options=SubscribeOptions(details=True))
            testator = await h.open(transport, name="testator")
            await testator.call("wamp.session.add_testament", topic, ["bye"], {"k": 1})
            await testator.call("wamp.session.add_testament", topic, ["detached"], {},
                                scope="detached")
            await testator.call("wamp.session.add_testament", topic, ["named"], {},
                                publish_options={"disclose_me": True})
            tid = testator.session_id
            testator.drop_transport()

            events = await sink.wait_for(3)
            assert [e[0] for e in events] == [["detached"], ["bye"], ["named"]], events
            assert events[1][1] == {"k": 1}, events[1]
            assert events[0][2].publisher is None and events[1][2].publisher is None
            assert events[2][2].publisher == tid, str(events[2][2])

            # nothing more
            pub = await h.open(transport, name="publisher")
            await pub.publish(topic, SENTINEL, options=ACK)
            assert (await until_sentinel(sink, 3))[0] == []

    run(main())


def test_flushed_testaments_are_not_published(router, transport):
    topic = _uri("flushed", transport)

    async def main():
        async with Harness(router) as h:
            heir = await h.open(transport, name="heir")
            sink = EventSink()
            await heir.subscribe(sink.handler, topic)
            testator = await h.open(transport, name="testator")
            add = "wamp.session.add_testament"
            await testator.call(add, topic, ["flushed detached"], scope="detached")
            await testator.call(add, topic, ["destroyed"])
            await testator.call("wamp.session.flush_testaments", scope="detached")
            await testator.call(add, topic, ["detached"], scope="detached")
            await testator.call(add, topic, ["flushed destroyed"], scope="destroyed")
            await testator.call("wamp.session.flush_testaments")  # scope destroyed
            await testator.call(add, topic, ["last"])
            err = await expect_app_error(testator.call(add, topic, ["x"], scope="sometimes"))
            assert err.error == "wamp.error.invalid_argument", err
            err = await expect_app_error(testator.call(add, "not a uri!", ["x"]))
            assert err.error == "wamp.error.invalid_uri", err

            # a GOODBYE publishes them too
            await testator.close()
            pub = await h.open(transport, name="publisher")
            await pub.publish(topic, SENTINEL, options=ACK)
            got, _ = await until_sentinel(sink)
            assert got == ["detached", "last"], got

    run(main())


# ---------------------------------------------------------------------------
# subscription meta API


SUB_EVENTS = ["on_create", "on_subscribe", "on_unsubscribe", "on_delete"]


def test_subscription_meta_events_and_procedures(router, transport):
    topic = _uri("sub", transport)
    prefix = _uri("subs", transport) + "."

    async def main():
        async with Harness(router) as h:
            watcher = await h.open(transport, name="watcher")
            sink = Tagged()
            await _subscribe_all(watcher, sink, "wamp.subscription", SUB_EVENTS)
            a = await h.open(transport, name="a")
            b = await h.open(transport, name="b")
            b_id = b.session_id  # None once b has left
            sub = await a.subscribe(lambda *args: None, topic)
            sub_b = await b.subscribe(lambda *args: None, topic)
            assert sub_b.id == sub.id
            pattern = await b.subscribe(lambda *args: None, prefix,
                                        options=SubscribeOptions(match="prefix"))

            ids = {a.session_id, b_id}
            seen = (await sink.about(ids, 5))[:5]
            assert [s[0] for s in seen] == ["on_create", "on_subscribe", "on_subscribe",
                                            "on_create", "on_subscribe"], seen
            _, creator, created = seen[0]
            assert creator == a.session_id, seen[0]
            assert created["id"] == sub.id and created["uri"] == topic, created
            assert created["match"] == "exact", created
            assert isinstance(created["created"], str) and "T" in created["created"], created
            assert seen[1][1:] == [a.session_id, sub.id], seen[1]
            assert seen[2][1:] == [b.session_id, sub.id], "no second on_create: {!r}".format(seen)
            assert seen[3][1] == b.session_id and seen[3][2]["id"] == pattern.id, seen[3]
            assert seen[3][2]["match"] == "prefix" and seen[3][2]["uri"] == prefix, seen[3]
            assert seen[4][1:] == [b.session_id, pattern.id], seen[4]

            # the procedures, from a session that is not subscribed
            call = watcher.call
            assert await call("wamp.subscription.lookup", topic) == sub.id
            assert await call("wamp.subscription.lookup", prefix, {"match": "prefix"}) == pattern.id
            assert await call("wamp.subscription.lookup", topic + ".none") is None
            assert sorted(await call("wamp.subscription.match", topic)) == [sub.id]
            assert sorted(await call("wamp.subscription.match", prefix + "x")) == [pattern.id]
            assert await call("wamp.subscription.match", "org.example.none") is None
            got = await call("wamp.subscription.get", sub.id)
            assert (got["id"], got["uri"], got["match"]) == (sub.id, topic, "exact"), got
            assert got["created"] == created["created"], (got, created)
            listed = await call("wamp.subscription.list")
            assert sub.id in listed["exact"] and pattern.id in listed["prefix"], listed
            assert sorted(await call("wamp.subscription.list_subscribers", sub.id)) == \
                sorted([a.session_id, b.session_id])
            assert await call("wamp.subscription.count_subscribers", sub.id) == 2
            assert await call("wamp.subscription.list_subscribers", pattern.id) == [b.session_id]
            err = await expect_app_error(call("wamp.subscription.get", 1))
            assert err.error == "wamp.error.no_such_subscription", err

            # unsubscribing: on_unsubscribe each, on_delete with the last
            await sub_b.unsubscribe()
            await sub.unsubscribe()
            events = await sink.about(ids, 8)
            assert events[5:8] == [
                ["on_unsubscribe", b.session_id, sub.id],
                ["on_unsubscribe", a.session_id, sub.id],
                ["on_delete", a.session_id, sub.id],
            ], events[5:]
            err = await expect_app_error(call("wamp.subscription.count_subscribers", sub.id))
            assert err.error == "wamp.error.no_such_subscription", err
            assert await call("wamp.subscription.lookup", topic) is None

            # a subscriber that leaves: on_unsubscribe and on_delete of the pattern
            await b.close()
            events = await sink.about(ids, 10)
            assert events[8:] == [
                ["on_unsubscribe", b_id, pattern.id],
                ["on_delete", b_id, pattern.id],
            ], events[8:]

    run(main())


def test_subscription_revocation(router, transport):
    # the router tells the subscriber with UNSUBSCRIBED(request 0,
    # {subscription, reason}), since autobahn-python announces
    # subscription_revocation; autobahn-python 24.4 itself cannot take it (it
    # raises ProtocolError "UNSUBSCRIBED received for non-pending request ID
    # 0" and drops the connection), so the test takes that message off
    # before autobahn sees it. autobahn's subscription stays in its table: an
    # EVENT on it would still reach the sink.
    topic = _uri("revoked", transport)
    other = _uri("revoked.other", transport)

    async def main():
        async with Harness(router) as h:
            admin = await h.open(transport, name="admin")
            watcher_sink = Tagged()
            await _subscribe_all(admin, watcher_sink, "wamp.subscription", ["on_unsubscribe"])
            victim = await h.open(transport, name="victim")
            control = await h.open(transport, name="control")
            pub = await h.open(transport, name="publisher")

            revocations = []
            deliver = victim.onMessage

            def spy(msg):
                if isinstance(msg, message.Unsubscribed) and msg.request == 0:
                    revocations.append(msg)
                    return None
                return deliver(msg)

            victim.onMessage = spy
            sink, other_sink, control_sink = EventSink(), EventSink(), EventSink()
            sub = await victim.subscribe(sink.handler, topic)
            await victim.subscribe(other_sink.handler, other)
            await control.subscribe(control_sink.handler, topic)

            await pub.publish(topic, "before", options=ACK)
            await sink.wait_for(1)
            await control_sink.wait_for(1)

            res = await admin.call("wamp.subscription.remove_subscriber", sub.id,
                                   victim.session_id, reason="com.example.out")
            assert res is None, res
            await watcher_sink.next_matching(
                0, lambda a: a[1:] == [victim.session_id, sub.id])

            await pub.publish(topic, "after", options=ACK)
            await pub.publish(other, SENTINEL, options=ACK)
            # the control subscriber still gets the topic's events
            await control_sink.wait_for(2)
            assert [e[0] for e in control_sink.events] == [["before"], ["after"]]
            # the victim stays attached and keeps its other subscription;
            # the sentinel comes after "after", so "after" would be here
            await other_sink.wait_for(1)
            assert victim.is_attached()
            assert [e[0] for e in sink.events] == [["before"]], sink.events
            assert len(revocations) == 1, revocations
            assert revocations[0].subscription == sub.id, revocations[0]
            assert revocations[0].reason == "com.example.out", revocations[0]
            assert await admin.call("wamp.subscription.list_subscribers", sub.id) == \
                [control.session_id]
            err = await expect_app_error(admin.call("wamp.subscription.remove_subscriber",
                                                    sub.id, victim.session_id))
            assert err.error == "wamp.error.no_such_subscription", err

    run(main())


# ---------------------------------------------------------------------------
# registration meta API


REG_EVENTS = ["on_create", "on_register", "on_unregister", "on_delete"]


def test_registration_meta_events_and_procedures(router, transport):
    proc = _uri("proc", transport)

    async def main():
        async with Harness(router) as h:
            watcher = await h.open(transport, name="watcher")
            sink = Tagged()
            await _subscribe_all(watcher, sink, "wamp.registration", REG_EVENTS)
            a = await h.open(transport, name="a")
            b = await h.open(transport, name="b")
            rr = RegisterOptions(invoke="roundrobin")
            reg = await a.register(lambda: "a", proc, options=rr)
            a_id = a.session_id  # None once a has left
            reg_b = await b.register(lambda: "b", proc, options=rr)
            assert reg_b.id == reg.id
            # refused: no event
            c = await h.open(transport, name="c")
            err = await expect_app_error(c.register(lambda: "c", proc,
                                                    options=RegisterOptions(invoke="first")))
            assert err.error == "wamp.error.procedure_already_exists", err

            ids = {a_id, b.session_id, c.session_id}
            seen = (await sink.about(ids, 3))[:3]
            assert [s[0] for s in seen] == ["on_create", "on_register", "on_register"], seen
            _, creator, created = seen[0]
            assert creator == a.session_id, seen[0]
            assert (created["id"], created["uri"], created["match"]) == (reg.id, proc, "exact"), \
                created
            assert created["invoke"] == "roundrobin", created
            assert isinstance(created["created"], str) and "T" in created["created"], created
            assert seen[1][1:] == [a.session_id, reg.id] and seen[2][1:] == [b.session_id, reg.id]

            call = watcher.call
            assert await call("wamp.registration.lookup", proc) == reg.id
            assert await call("wamp.registration.lookup", proc + ".none") is None
            assert await call("wamp.registration.match", proc) == reg.id
            assert await call("wamp.registration.match", "org.example.none") is None
            got = await call("wamp.registration.get", reg.id)
            assert (got["id"], got["uri"], got["invoke"]) == (reg.id, proc, "roundrobin"), got
            assert reg.id in (await call("wamp.registration.list"))["exact"]
            assert sorted(await call("wamp.registration.list_callees", reg.id)) == \
                sorted([a.session_id, b.session_id])
            assert await call("wamp.registration.count_callees", reg.id) == 2
            err = await expect_app_error(call("wamp.registration.get", 1))
            assert err.error == "wamp.error.no_such_registration", err

            # a leaves, b unregisters: on_unregister twice, then on_delete
            await a.close()
            await sink.about(ids, 4)
            await reg_b.unregister()
            events = await sink.about(ids, 6)
            assert events[3:] == [
                ["on_unregister", a_id, reg.id],
                ["on_unregister", b.session_id, reg.id],
                ["on_delete", b.session_id, reg.id],
            ], events[3:]
            assert await call("wamp.registration.lookup", proc) is None

    run(main())
