"""Session lifecycle: HELLO/WELCOME, GOODBYE handshake, ABORT on an unknown realm."""

import asyncio

import pytest

from harness import Harness, JoinAborted, run


def goodbye_reply_reasons(router):
    # The spec's GOODBYE reply reason is wamp.close.goodbye_and_out. Crossbar.io (the
    # reference router, ROUTER=crossbar) echoes the client's reason instead.
    if router.kind == "crossbar":
        return ("wamp.close.goodbye_and_out", "wamp.close.normal")
    return ("wamp.close.goodbye_and_out",)


def test_session_open_and_close(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport)
            w = s.welcome
            assert w is not None, "no WELCOME seen"
            assert type(w.session) is int, "session id {!r} is not an int".format(w.session)
            assert 1 <= w.session <= 2 ** 53, "session id {} outside [1, 2^53]".format(w.session)
            assert w.realm == "realm1", "WELCOME.Details.realm is {!r}".format(w.realm)
            roles = set(w.roles or {})
            assert {"broker", "dealer"} <= roles, "WELCOME roles {!r} lack broker/dealer".format(roles)
            assert s.session_id == w.session
            assert s.is_attached()

            # a second session gets a different id
            s2 = await h.open(transport)
            assert s2.welcome.session != w.session

            # GOODBYE handshake: we send GOODBYE(wamp.close.normal); the router must answer
            # GOODBYE(wamp.close.goodbye_and_out), then the transport closes cleanly.
            details = await s.close()
            assert details is not None, "transport closed without a GOODBYE reply"
            assert details.reason in goodbye_reply_reasons(router), details.reason
            was_clean = await s.disconnected
            assert was_clean is True, "transport close after GOODBYE was not clean"
            assert not s.is_attached()

            # the other session is unaffected and can still talk to the router
            sub = await s2.subscribe(lambda *a, **kw: None, "com.example.session.alive")
            assert type(sub.id) is int
            details2 = await s2.close()
            assert details2.reason in goodbye_reply_reasons(router), details2.reason

    run(main())


def test_join_unknown_realm_fails(router, transport):
    async def main():
        async with Harness(router) as h:
            with pytest.raises(JoinAborted) as ei:
                await h.open(transport, realm="com.example.no.such.realm")
            assert ei.value.reason == "wamp.error.no_such_realm", \
                "ABORT reason {!r} ({!r})".format(ei.value.reason, ei.value.message)
            aborted = h.clients[-1]
            assert not aborted.is_attached()
            # after ABORT the connection goes away (autobahn closes it; the router may too)
            await asyncio.wait_for(asyncio.shield(aborted.disconnected), 10)

            # the router keeps serving the known realm
            s = await h.open(transport)
            assert s.is_attached()

    run(main())
