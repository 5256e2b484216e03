"""Remote Procedure Calls between separate sessions on one transport kind."""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.request import Registration
from autobahn.wamp.types import CallResult

from harness import (BINARY, PAYLOAD_ARGS, PAYLOAD_KWARGS, UNICODE, Harness, assert_same,
                     expect_app_error, normalize_result, run)


def echo(*args, **kwargs):
    return CallResult(*args, **kwargs)


def test_call_roundtrip_payload(router, transport):
    proc = "com.example.rpc.echo"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")
            registration = await callee.register(echo, proc)
            assert isinstance(registration, Registration)
            assert type(registration.id) is int

            res = await caller.call(proc, *PAYLOAD_ARGS, **PAYLOAD_KWARGS)
            args, kwargs = normalize_result(res)
            assert_same(PAYLOAD_ARGS, args, "args")
            assert_same(PAYLOAD_KWARGS, kwargs, "kwargs")

            # each special value on its own, as the only positional argument
            for value in [UNICODE, BINARY, 2 ** 53, 2 ** 63 - 1, -2 ** 63, 1.5, None, True, False,
                          [1, [2, {"x": BINARY}]]]:
                # (a kwarg makes autobahn hand back a CallResult, so [None] and [] differ)
                res = await caller.call(proc, value, tag="single")
                assert_same(([value], {"tag": "single"}), normalize_result(res),
                            "single {!r}".format(value))
                # and with no kwargs: autobahn returns the lone positional result as-is
                assert_same(value, await caller.call(proc, value), "bare {!r}".format(value))

            # kwargs only
            res = await caller.call(proc, **PAYLOAD_KWARGS)
            args, kwargs = normalize_result(res)
            assert args == []
            assert_same(PAYLOAD_KWARGS, kwargs, "kwargs-only")

            # no payload at all
            res = await caller.call(proc)
            assert normalize_result(res) == ([], {})

    run(main())


def test_call_no_such_procedure(router, transport):
    async def main():
        async with Harness(router) as h:
            caller = await h.open(transport)
            err = await expect_app_error(caller.call("com.example.rpc.nobody.home", 1, 2))
            assert err.error == "wamp.error.no_such_procedure", err

    run(main())


def test_register_twice_fails(router, transport):
    proc = "com.example.rpc.twice"

    async def main():
        async with Harness(router) as h:
            first = await h.open(transport, name="first")
            second = await h.open(transport, name="second")
            await first.register(echo, proc)

            err = await expect_app_error(second.register(echo, proc))
            assert err.error == "wamp.error.procedure_already_exists", err
            err = await expect_app_error(first.register(echo, proc))
            assert err.error == "wamp.error.procedure_already_exists", err

            # the original registration still works
            res = await second.call(proc, "still there")
            assert res == "still there"

    run(main())


def test_callee_application_error(router, transport):
    proc = "com.example.rpc.fails"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")

            def fail(*args, **kwargs):
                raise ApplicationError("com.example.error", 1, 2, foo="bar")

            await callee.register(fail, proc)
            err = await expect_app_error(caller.call(proc, "x"))
            assert err.error == "com.example.error", err
            assert list(err.args) == [1, 2], err.args
            assert err.kwargs == {"foo": "bar"}, err.kwargs

            # the callee is still usable afterwards
            await callee.register(echo, proc + ".ok")
            assert await caller.call(proc + ".ok", 7) == 7

    run(main())


def test_unregister(router, transport):
    proc = "com.example.rpc.unreg"

    async def main():
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")
            registration = await callee.register(echo, proc)
            assert await caller.call(proc, "hi") == "hi"

            await registration.unregister()
            assert not registration.active
            err = await expect_app_error(caller.call(proc, "hi"))
            assert err.error == "wamp.error.no_such_procedure", err

            # the URI is free again: another session can register it
            await caller.register(lambda x: x * 2, proc)
            assert await callee.call(proc, 21) == 42

    run(main())


@pytest.mark.parametrize("how", ["drop", "goodbye"])
def test_callee_leaves_with_pending_call(router, transport, how):
    """The callee never answers and then goes away: the caller must get an ERROR, not hang."""
    proc = "com.example.rpc.hangs"

    async def main():
        loop = asyncio.get_running_loop()
        async with Harness(router) as h:
            callee = await h.open(transport, name="callee")
            caller = await h.open(transport, name="caller")
            invoked = loop.create_future()
            never = loop.create_future()

            async def hang(*args, **kwargs):
                if not invoked.done():
                    invoked.set_result(args)
                await never

            await callee.register(hang, proc)
            call = asyncio.ensure_future(caller.call(proc, "pending"))
            assert await asyncio.wait_for(invoked, 10) == ("pending",)
            assert not call.done()

            if how == "drop":
                callee.drop_transport()     # TCP connection gone, no GOODBYE
            else:
                await callee.close()        # clean GOODBYE while the invocation is pending
            await asyncio.wait_for(asyncio.shield(callee.disconnected), 10)

            err = await expect_app_error(call, timeout=10)
            print("caller got: error={!r} args={!r} kwargs={!r}".format(err.error, err.args,
                                                                        err.kwargs))
            assert isinstance(err, ApplicationError)
            assert caller.is_attached(), "caller session was closed"

            # the procedure is gone with its callee
            err = await expect_app_error(caller.call(proc))
            assert err.error == "wamp.error.no_such_procedure", err
            never.cancel()

    run(main())
