"""Failed logins from one address are answered with a refusal for a while
(limits.auth_failures_before_backoff, limits.auth_backoff_max_ms).

The module's router has its own config with a low threshold. Every shard
keeps its own count (connections reach the shards by SO_REUSEPORT), so with
more than one shard the refusal comes after at least the threshold's failures
and a correct login is only sure to be refused with one shard.
"""

import asyncio
import os
import re
import secrets

import pytest
from autobahn.wamp.auth import AuthTicket

from harness import WS_JSON, Harness, JoinAborted, run

pytestmark = pytest.mark.skipif(
    os.environ.get("ROUTER", "switchyard").strip().lower() != "switchyard",
    reason="the limits are Switchyard's configuration")

REALM = "realm.backoff"
PASSWORD = secrets.token_urlsafe(12)
THRESHOLD = 2
MAX_BACKOFF_MS = 1000

CONFIG = """\
[router]
shards = {shards}

[limits]
auth_failures_before_backoff = {threshold}
auth_backoff_max_ms = {max_backoff_ms}

[[realm]]
name = "{realm}"
anonymous = false

[[realm.principal]]
authid = "user"
role = "user"
{ticket}

{listeners}"""


def switchyard_config(setup):
    """The router of this module (conftest's RouterSetup hook)."""
    ticket = setup.secret("ticket", PASSWORD, "--memory", "64", "--iterations", "1")
    return CONFIG.format(shards=setup.shards, threshold=THRESHOLD, max_backoff_ms=MAX_BACKOFF_MS,
                         realm=REALM, ticket=ticket, listeners=setup.plain_listeners())


REFUSED = re.compile(r"too many failed logins from this address: retry in (\d+) ms")


async def _login(h, ticket):
    """WELCOME (the session) or ABORT (JoinAborted) for a ticket login."""
    return await h.open(WS_JSON, realm=REALM, auth=AuthTicket(authid="user", ticket=ticket))


def test_failed_logins_back_off(router):
    async def main():
        async with Harness(router) as h:
            # wrong tickets until the router refuses the address
            failures = 0
            while True:
                with pytest.raises(JoinAborted) as ei:
                    await _login(h, PASSWORD + "x")
                assert ei.value.reason == "wamp.error.authentication_failed", ei.value
                refused = REFUSED.fullmatch(ei.value.message or "")
                if refused:
                    # a refusal comes without a CHALLENGE
                    assert h.clients[-1].challenges == []
                    assert 0 < int(refused.group(1)) <= MAX_BACKOFF_MS, ei.value.message
                    break
                assert ei.value.message == "wrong or unknown credentials", ei.value
                assert [c.method for c in h.clients[-1].challenges] == ["ticket"]
                failures += 1
                assert failures < THRESHOLD * router.shards * 20, \
                    "no refusal after {} failed logins".format(failures)
            assert failures >= THRESHOLD, failures
            if router.shards == 1:
                assert failures == THRESHOLD, failures
                # the right ticket is refused too while it lasts
                with pytest.raises(JoinAborted) as ei:
                    await _login(h, PASSWORD)
                assert REFUSED.fullmatch(ei.value.message or ""), ei.value

            # it ends: the right ticket gets in again (polled: the refusal's
            # end is the router's clock)
            deadline = asyncio.get_running_loop().time() + 4 * MAX_BACKOFF_MS / 1000
            while True:
                try:
                    s = await _login(h, PASSWORD)
                    break
                except JoinAborted as e:
                    assert REFUSED.fullmatch(e.message or ""), e
                    assert asyncio.get_running_loop().time() < deadline, \
                        "still refused after {} s".format(4 * MAX_BACKOFF_MS / 1000)
                    await asyncio.sleep(0.05)
            assert (s.join_details.authid, s.join_details.authmethod) == ("user", "ticket")

    run(main())
