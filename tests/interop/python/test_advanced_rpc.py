"""Advanced RPC with autobahn-python: dealer-side call timeouts and call canceling.

autobahn-python announces call_canceling for its callee role, so the router
interrupts a timed-out invocation (killnowait), which autobahn turns into a
CancelledError inside the endpoint; cancelling a call's future sends CANCEL
(no mode: skip), which the router answers at once with ERROR.
"""

import asyncio

import pytest
from autobahn.wamp import message
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions

from harness import Harness, expect_app_error, run


def test_welcome_announces_canceling_and_timeout(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport)
            dealer = s.welcome.roles["dealer"]
            assert dealer.call_canceling is True, dealer
            assert dealer.call_timeout is True, dealer
            assert dealer.progressive_call_results is True, dealer
            assert dealer.caller_identification is True, dealer
            assert dealer.shared_registration is True, dealer

    run(main())


def test_call_timeout_interrupts_the_callee(router, transport):
    proc = "com.example.adv.slow"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")
            interrupted = asyncio.Event()

            async def slow():
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    interrupted.set()
                    raise
                return "too late"

            await callee.register(slow, proc)
            err = await expect_app_error(caller.call(proc, options=CallOptions(timeout=200)))
            assert err.error == "wamp.error.timeout", err
            # the router sent INTERRUPT, and autobahn cancelled the endpoint
            await asyncio.wait_for(interrupted.wait(), 5)

            # a call answered within its timeout is answered
            await callee.register(lambda: "quick", proc + ".quick")
            assert await caller.call(proc + ".quick", options=CallOptions(timeout=5000)) == "quick"
            # and nothing is left pending on the caller's side
            assert not caller._call_reqs, caller._call_reqs

    run(main())


def test_a_canceled_call_is_answered_at_once(router, transport):
    proc = "com.example.adv.long"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")
            started = asyncio.Event()
            release = asyncio.Event()

            async def long():
                started.set()
                await release.wait()
                return "finished"

            await callee.register(long, proc)
            # what reaches the caller's session, as autobahn parsed it
            seen = []
            deliver = caller.onMessage

            def spy(msg):
                seen.append(msg)
                return deliver(msg)

            caller.onMessage = spy
            call = asyncio.ensure_future(caller.call(proc))
            await asyncio.wait_for(started.wait(), 5)
            call.cancel()  # autobahn sends CANCEL
            with pytest.raises(asyncio.CancelledError):
                await call

            def canceled():
                return [m for m in seen if isinstance(m, message.Error) and m.error == "wamp.error.canceled"]

            # skip: the router answers at once, without the callee
            for _ in range(500):
                if canceled():
                    break
                await asyncio.sleep(0.01)
            # the callee is not interrupted; its late answer is discarded
            release.set()

            # a later call on the same path is answered normally, and by then
            # the router's ERROR for the canceled call has been received
            # (same connection, sent first), so autobahn forgot the call
            await callee.register(lambda: "next", proc + ".next")
            assert await caller.call(proc + ".next") == "next"
            # the router answered the CANCEL with ERROR wamp.error.canceled,
            # and the callee's late RESULT never reached the caller
            errors = canceled()
            assert len(errors) == 1, seen
            assert errors[0].request_type == message.Call.MESSAGE_TYPE, errors
            late = [m for m in seen if isinstance(m, message.Result) and m.request == errors[0].request]
            assert not late, late

    run(main())


def test_progressive_results_arrive_in_order(router, transport):
    proc = "com.example.adv.chunks"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")

            async def chunks(n, details=None):
                assert details.progress is not None, "the router did not pass receive_progress"
                for i in range(n):
                    details.progress(i, chunk="#{}".format(i))
                return "done"

            await callee.register(chunks, proc, options=RegisterOptions(details_arg="details"))
            got = []
            res = await caller.call(proc, 20, options=CallOptions(on_progress=lambda *a, **kw: got.append((a, kw))))
            assert res == "done", res
            assert got == [((i,), {"chunk": "#{}".format(i)}) for i in range(20)], got

    run(main())


def test_caller_identification(router, transport):
    # autobahn-python 24.4 has no disclose_me / disclose_caller options (the
    # Rust suite tests those); a realm with caller_disclosure = "always"
    # names every caller, as routers that configure disclosure per role do
    if router.kind != "switchyard":
        pytest.skip("the realm setting is Switchyard's")
    proc = "com.example.adv.who"

    async def main():
        async with Harness(router) as h:
            def who(details=None):
                return [details.caller, details.caller_authid, details.caller_authrole]

            plain_callee = await h.open(transport, name="callee")
            plain_caller = await h.open(transport, name="caller")
            await plain_callee.register(who, proc, options=RegisterOptions(details_arg="details"))
            assert await plain_caller.call(proc) == [None, None, None]

            callee = await h.open(transport, realm="realm.disclosed", name="callee")
            caller = await h.open(transport, realm="realm.disclosed", name="caller")
            await callee.register(who, proc, options=RegisterOptions(details_arg="details"))
            named = await caller.call(proc)
            assert named == [caller.session_id, caller.join_details.authid, "anonymous"], named

    run(main())


def test_shared_registration_round_robin(router, transport):
    proc = "com.example.adv.shared"

    async def main():
        async with Harness(router) as h:
            callees = [await h.open(transport, name="callee{}".format(i)) for i in range(3)]
            caller = await h.open(transport, name="caller")
            for i, c in enumerate(callees):
                await c.register(lambda i=i: i, proc, options=RegisterOptions(invoke="roundrobin"))
            got = [await caller.call(proc) for _ in range(9)]
            assert got == [0, 1, 2] * 3, got
            # another policy is refused while the registration stands
            other = await h.open(transport, name="other")
            err = await expect_app_error(other.register(lambda: "x", proc, options=RegisterOptions(invoke="first")))
            assert err.error == "wamp.error.procedure_already_exists", err

    run(main())


def test_unavailable_callees_get_the_call_rerouted(router, transport):
    # autobahn-python does not announce call_reroute; the router reroutes on
    # the error URI from any callee
    if router.kind != "switchyard":
        pytest.skip("call rerouting is not a Crossbar feature")
    proc = "com.example.adv.reroute"

    async def main():
        async with Harness(router) as h:
            callees = [await h.open(transport, name="callee{}".format(i)) for i in range(3)]
            caller = await h.open(transport, name="caller")
            declined = []

            def busy():
                declined.append(1)
                raise ApplicationError("wamp.error.unavailable")

            await callees[0].register(busy, proc, options=RegisterOptions(invoke="roundrobin"))
            for i, c in enumerate(callees[1:], start=1):
                await c.register(lambda i=i: i, proc, options=RegisterOptions(invoke="roundrobin"))
            got = [await caller.call(proc) for _ in range(9)]
            # in turn: the busy callee declines, the next takes it, the one
            # after takes the next call, and the turn comes back to the busy one
            assert got == [1, 2] * 4 + [1], got
            assert len(declined) == 5, declined
            # when every callee is busy, the caller hears so
            await callees[1].register(busy, proc + ".all", options=RegisterOptions(invoke="first"))
            await callees[2].register(busy, proc + ".all", options=RegisterOptions(invoke="first"))
            err = await expect_app_error(caller.call(proc + ".all"))
            assert err.error == "wamp.error.no_available_callee", err

    run(main())


def test_session_meta_procedures(router, transport):
    async def main():
        async with Harness(router) as h:
            a = await h.open(transport, name="a")
            b = await h.open(transport, name="b")
            listed = await a.call("wamp.session.list")
            assert a.session_id in listed and b.session_id in listed, listed
            assert await a.call("wamp.session.count") == len(listed)
            info = await a.call("wamp.session.get", b.session_id)
            assert info["session"] == b.session_id, info
            assert info["authid"] == b.join_details.authid, info
            if router.kind == "switchyard":
                # an anonymous session's authid is the router's
                assert info["authid"] == "anonymous-{}".format(b.session_id), info
            assert info["authrole"] == "anonymous", info
            err = await expect_app_error(a.call("wamp.session.get", 1))
            assert err.error == "wamp.error.no_such_session", err

    run(main())


def test_registration_revocation(router, transport):
    # autobahn-python announces registration_revocation and logs the
    # UNREGISTERED (its reason must be a URI for it to parse); the session
    # goes on
    proc = "com.example.adv.revoked"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")
            reg = await callee.register(lambda: "here", proc)
            await callee.register(lambda: "still here", proc + ".other")
            assert await caller.call(proc) == "here"
            await caller.call("wamp.registration.remove_callee", reg.id, callee.session_id, reason="com.example.moved")
            err = await expect_app_error(caller.call(proc))
            assert err.error == "wamp.error.no_such_procedure", err
            assert await caller.call(proc + ".other") == "still here"
            assert callee.is_attached()

    run(main())
