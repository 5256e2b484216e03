"""Dynamic authentication and authorization: a realm whose logins and
permissions are decided by procedures that a real autobahn-python component
registers (on realm1, anonymous), the router calling them.

Realm "dyn" (anonymous, role "guest", no static roles) has
  - an authenticator, "com.example.authenticate" on realm1, for ticket and
    wampcra: called as (realm, authid, details); for ticket after
    AUTHENTICATE with details.ticket, for wampcra at HELLO, before the
    CHALLENGE, answering the secret the router then challenges with;
  - an authorizer, "com.example.authorize" on realm1: called as
    (session_details, uri, action, options) for everything (the realm has
    no static roles), its answers kept per (authrole, uri, action) for
    cache_ttl_ms (60 s: longer than the test run, so a second identical
    request is answered from the cache).
Realm "dyn.orphan" has an authenticator nobody registers.

The authorizer answers True (URIs under OPEN), {"allow": false, "cache": "role"} (SECRET), a dictionary
{"allow": true, "disclose": true, "cache": false} (DISCLOSED), raises
(BROKEN), and answers {"allow": false} for anything else.
test_wampcra_answer_names_the_authid: the authid of the authenticator's answer
names the session for WAMP-CRA as for ticket logins.

Every test opens its own component (Backend below) and records what the
router asked it. The authorizer's cache lives as long as the router (one per
module and shard count), so each test uses URIs of its own (_uris). An
answer the router gets from its cache shows in the component's invocation
list staying as it was although the request's ERROR has come (the ERROR
waits for the answer, so an authorizer call would have come before it) and
in GET /metrics (authorizer_calls, authorization_cache_hits).
"""

import asyncio
import json
import os
import re
import secrets
import urllib.request

import pytest
from autobahn.wamp.auth import AuthTicket, AuthWampCra, derive_key
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from harness import (RS_MSGPACK, WS_JSON, EventSink, Harness, JoinAborted, expect_app_error,
                     run)

pytestmark = pytest.mark.skipif(
    os.environ.get("ROUTER", "switchyard").strip().lower() != "switchyard",
    reason="the authenticator and authorizer are Switchyard's configuration "
           "(switchyard_config below)")

AUTH_FAILED = "wamp.error.authentication_failed"
NOT_AUTHORIZED = "wamp.error.not_authorized"
DENIED = "com.example.denied"

DYN_REALM = "dyn"
ORPHAN_REALM = "dyn.orphan"
AUTHENTICATE = "com.example.authenticate"
AUTHORIZE = "com.example.authorize"

# what the authenticator accepts, random for each run
TICKETS = {authid: secrets.token_urlsafe(12) for authid in ("joe", "renamed", "ann")}
CRA_SECRET = secrets.token_urlsafe(12)
CRA_SALTED_SECRET = secrets.token_urlsafe(12)
CRA_SALT = secrets.token_hex(8)
CRA_ITERATIONS = 100
CRA_KEYLEN = 32

# what the authorizer allows (True), allows with disclosure and without
# letting the answer be kept (a dictionary), denies (False), and fails on;
# anything else it denies with a dictionary
OPEN = "com.example.dyn.open."
DISCLOSED = "com.example.dyn.disclosed."
SECRET = "com.example.dyn.secret."
BROKEN = "com.example.dyn.broken."

ACK = PublishOptions(acknowledge=True)
ACK_ME = PublishOptions(acknowledge=True, exclude_me=False)

CONFIG = """\
[router]
shards = {shards}

[limits]
auth_failures_before_backoff = 1000   # the tests fail logins on purpose, from one address

[[realm]]
name = "realm1"

[[realm]]
name = "{dyn}"
anonymous = true
anonymous_role = "guest"
[realm.authenticator]
procedure = "{authenticate}"
realm = "realm1"
methods = ["ticket", "wampcra"]
timeout_ms = 5000
[realm.authorizer]
procedure = "{authorize}"
realm = "realm1"
cache_ttl_ms = 60000

[[realm]]
name = "{orphan}"
anonymous = false
[realm.authenticator]
procedure = "com.example.nobody.authenticates"
realm = "realm1"
methods = ["ticket", "wampcra"]

{listeners}"""


def switchyard_config(setup):
    """The router of this module (conftest's RouterSetup hook)."""
    return CONFIG.format(shards=setup.shards, dyn=DYN_REALM, orphan=ORPHAN_REALM,
                         authenticate=AUTHENTICATE, authorize=AUTHORIZE,
                         listeners=setup.plain_listeners())


# ---------------------------------------------------------------------------
# the component


class Backend:
    """The authenticator and authorizer, registered by an autobahn session on
    realm1; it keeps every invocation's arguments."""

    def __init__(self):
        self.session = None
        self.registrations = {}  # procedure -> autobahn Registration
        self.authenticated = []  # (realm, authid, details)
        self.authorized = []     # (session_details, uri, action, options)
        self._gates = {}         # (uri, action) -> future the answer waits for
        self._asked = {}         # (uri, action) -> future set when asked

    def authenticate(self, realm, authid, details):
        self.authenticated.append((realm, authid, details))
        method = details.get("authmethod")
        if method == "ticket":
            if authid in TICKETS and details.get("ticket") == TICKETS[authid]:
                if authid == "renamed":
                    return {"role": "worker", "authid": "renamed@dynamic"}
                if authid == "ann":
                    return "clerk"  # a bare role
                return {"role": "worker"}
            raise ApplicationError(DENIED, "wrong ticket")
        if method == "wampcra":
            if authid == "carl":
                return {"role": "cra-worker", "secret": CRA_SECRET}
            if authid == "cara":
                return {"role": "cra-worker", "secret": CRA_SECRET, "authid": "cara@dynamic"}
            if authid == "cora":
                key = derive_key(CRA_SALTED_SECRET, CRA_SALT, CRA_ITERATIONS, CRA_KEYLEN)
                return {"role": "cra-worker", "key": key.decode("ascii"), "salt": CRA_SALT,
                        "iterations": CRA_ITERATIONS, "keylen": CRA_KEYLEN}
            raise ApplicationError(DENIED, "unknown authid")
        raise ApplicationError(DENIED, "unexpected authmethod {!r}".format(method))

    async def authorize(self, session, uri, action, options):
        self.authorized.append((session, uri, action, options))
        asked = self._asked.get((uri, action))
        if asked is not None and not asked.done():
            asked.set_result(None)
        gate = self._gates.get((uri, action))
        if gate is not None:
            await gate
        if uri.startswith(BROKEN):
            raise RuntimeError("the authorizer is broken for {}".format(uri))
        if uri.startswith(OPEN):
            return True
        if uri.startswith(SECRET):
            # kept for every session of the role (the default is this session)
            return {"allow": False, "cache": "role"}
        if uri.startswith(DISCLOSED):
            return {"allow": True, "disclose": True, "cache": False}
        return {"allow": False}

    def hold(self, uri, action):
        """The authorizer's answer about (uri, action) waits until the returned
        release() is called; asked is a future set once it is asked."""
        loop = asyncio.get_running_loop()
        gate = self._gates[(uri, action)] = loop.create_future()
        asked = self._asked[(uri, action)] = loop.create_future()

        def release():
            if not gate.done():
                gate.set_result(None)

        return asked, release

    def questions(self):
        """(uri, action) of every authorizer invocation so far."""
        return [(uri, action) for _, uri, action, _ in self.authorized]


async def _backend(h, transport, authenticator=True, authorizer=True):
    b = Backend()
    b.session = await h.open(transport, realm="realm1", name="backend")
    if authenticator:
        b.registrations[AUTHENTICATE] = await b.session.register(b.authenticate, AUTHENTICATE)
    if authorizer:
        b.registrations[AUTHORIZE] = await b.session.register(b.authorize, AUTHORIZE)
    return b


# ---------------------------------------------------------------------------
# helpers


def _tag(transport, name):
    """A test's own URI suffix, so that the authorizer's answers that other
    tests of this router left in its cache are not hit."""
    return "{}.{}.{}".format(name, transport.replace("-", "_"), secrets.token_hex(4))


def _uris(transport, name):
    """(open, secret, broken) URIs of a test's own."""
    tag = _tag(transport, name)
    return OPEN + tag, SECRET + tag, BROKEN + tag


async def _aborted(h, transport, reason, **kw):
    """Opens a session that the router must ABORT with reason; returns the
    aborted client."""
    with pytest.raises(JoinAborted) as ei:
        await h.open(transport, **kw)
    assert ei.value.reason == reason, "ABORT {!r} ({!r}), expected {}".format(
        ei.value.reason, ei.value.message, reason)
    client = h.clients[-1]
    assert not client.is_attached()
    return client


def _welcomed(session, authid, authrole, authmethod, authprovider="dynamic", realm=DYN_REALM):
    w = session.welcome
    got = (w.realm, w.authid, w.authrole, w.authmethod, w.authprovider)
    assert got == (realm, authid, authrole, authmethod, authprovider), got
    d = session.join_details
    assert (d.authid, d.authrole, d.authmethod, d.authprovider) == \
        (authid, authrole, authmethod, authprovider), str(d)


def _check_transport(h, transport, details):
    """details.transport of an authenticator call made for h's last connection."""
    t = details["transport"]
    kind = "rawsocket" if transport == RS_MSGPACK else "websocket"
    local = h._conns[-1].get_extra_info("sockname")
    assert (t["type"], t["peer"], t["tls"]) == \
        (kind, "{}:{}".format(local[0], local[1]), False), t


def _metrics(router):
    """GET /metrics of the WebSocket listener: counter name -> sum over shards."""
    url = "http://127.0.0.1:{}/metrics".format(router.ws_port)
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode("utf-8")
    sums = {}
    for m in re.finditer(r"^switchyard_(\w+)\{shard=\"\d+\"\} (-?\d+)$", text, re.M):
        sums[m.group(1)] = sums.get(m.group(1), 0) + int(m.group(2))
    assert "authorizer_calls" in sums and "authorization_cache_hits" in sums, text
    return sums


async def metrics(router):
    return await asyncio.to_thread(_metrics, router)


# ---------------------------------------------------------------------------
# authentication


def test_ticket_via_authenticator(router, transport):
    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport)
            s = await h.open(transport, realm=DYN_REALM, auth=AuthTicket(
                authid="joe", ticket=TICKETS["joe"]), authextra={"client": "interop"})
            _welcomed(s, "joe", "worker", "ticket")
            assert [c.method for c in s.challenges] == ["ticket"], s.challenges
            # the authenticator was asked once, after AUTHENTICATE, with the ticket
            ((realm, authid, details),) = b.authenticated
            assert (realm, authid) == (DYN_REALM, "joe")
            assert details["authmethod"] == "ticket", details
            assert details["ticket"] == TICKETS["joe"], details
            assert details["authextra"] == {"client": "interop"}, details
            # the session the login became
            assert details["session"] == s.session_id, (details, s.session_id)
            _check_transport(h, transport, details)

            # a wrong ticket: the authenticator's error fails the login
            c = await _aborted(h, transport, AUTH_FAILED, realm=DYN_REALM,
                               auth=AuthTicket(authid="joe", ticket=TICKETS["joe"] + "x"))
            assert [ch.method for ch in c.challenges] == ["ticket"]
            assert len(b.authenticated) == 2
            realm, authid, details = b.authenticated[-1]
            assert (realm, authid, details["ticket"]) == \
                (DYN_REALM, "joe", TICKETS["joe"] + "x"), details
            # an authid it does not know
            await _aborted(h, transport, AUTH_FAILED, realm=DYN_REALM,
                           auth=AuthTicket(authid="nobody", ticket=TICKETS["joe"]))
            assert [a for _, a, _ in b.authenticated] == ["joe", "joe", "nobody"]

            # the answer names the session's authid; a bare role string
            r = await h.open(transport, realm=DYN_REALM,
                             auth=AuthTicket(authid="renamed", ticket=TICKETS["renamed"]))
            _welcomed(r, "renamed@dynamic", "worker", "ticket")
            a = await h.open(transport, realm=DYN_REALM,
                             auth=AuthTicket(authid="ann", ticket=TICKETS["ann"]))
            _welcomed(a, "ann", "clerk", "ticket")

            # the authorizer sees the dynamic login's identity
            uri, _, _ = _uris(transport, "ticket")
            await s.subscribe(lambda *a, **kw: None, uri)
            ((who, asked_uri, action, options),) = b.authorized
            assert (asked_uri, action) == (uri, "subscribe")
            assert (who["session"], who["authid"], who["authrole"], who["authmethod"],
                    who["authprovider"]) == (s.session_id, "joe", "worker", "ticket", "dynamic"), who
            assert isinstance(options, dict), options

    run(main())


def test_wampcra_via_authenticator(router, transport):
    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport)
            s = await h.open(transport, realm=DYN_REALM,
                             auth=AuthWampCra(authid="carl", secret=CRA_SECRET))
            _welcomed(s, "carl", "cra-worker", "wampcra")
            ((realm, authid, details),) = b.authenticated
            assert (realm, authid, details["authmethod"]) == (DYN_REALM, "carl", "wampcra"), details
            assert "ticket" not in details, details
            assert details["session"] == s.session_id, (details, s.session_id)
            _check_transport(h, transport, details)
            # autobahn signed the router's challenge, made with the answer's role
            (challenge,) = s.challenges
            assert challenge.method == "wampcra"
            assert "salt" not in challenge.extra, challenge.extra
            signed = json.loads(challenge.extra["challenge"])
            assert (signed["authid"], signed["authrole"], signed["authmethod"],
                    signed["session"]) == ("carl", "cra-worker", "wampcra", s.session_id), signed

            # a salted key: the CHALLENGE carries the answer's salt parameters,
            # so the authenticator was asked before it
            c = await h.open(transport, realm=DYN_REALM,
                             auth=AuthWampCra(authid="cora", secret=CRA_SALTED_SECRET))
            _welcomed(c, "cora", "cra-worker", "wampcra")
            (challenge,) = c.challenges
            assert (challenge.extra["salt"], challenge.extra["iterations"],
                    challenge.extra["keylen"]) == (CRA_SALT, CRA_ITERATIONS, CRA_KEYLEN), \
                challenge.extra

            # the wrong secret: challenged, then refused
            w = await _aborted(h, transport, AUTH_FAILED, realm=DYN_REALM,
                               auth=AuthWampCra(authid="carl", secret=CRA_SECRET + "x"))
            assert [ch.method for ch in w.challenges] == ["wampcra"]
            # the authenticator refuses the authid: no CHALLENGE at all
            n = await _aborted(h, transport, AUTH_FAILED, realm=DYN_REALM,
                               auth=AuthWampCra(authid="nobody", secret=CRA_SECRET))
            assert n.challenges == []
            assert [a for _, a, _ in b.authenticated] == ["carl", "cora", "carl", "nobody"]

    run(main())


def test_wampcra_answer_names_the_authid(router, transport):
    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport)
            s = await h.open(transport, realm=DYN_REALM,
                             auth=AuthWampCra(authid="cara", secret=CRA_SECRET))
            assert [a for _, a, _ in b.authenticated] == ["cara"]
            _welcomed(s, "cara@dynamic", "cra-worker", "wampcra")

    run(main())


def test_authenticator_not_registered(router, transport):
    async def main():
        async with Harness(router) as h:
            # a realm whose authenticator nobody ever registered
            t = await _aborted(h, transport, AUTH_FAILED, realm=ORPHAN_REALM,
                               auth=AuthTicket(authid="joe", ticket=TICKETS["joe"]))
            assert [c.method for c in t.challenges] == ["ticket"]
            c = await _aborted(h, transport, AUTH_FAILED, realm=ORPHAN_REALM,
                               auth=AuthWampCra(authid="carl", secret=CRA_SECRET))
            assert c.challenges == []

            # registered: logins work; unregistered again: they fail
            b = await _backend(h, transport, authorizer=False)
            s = await h.open(transport, realm=DYN_REALM,
                             auth=AuthTicket(authid="joe", ticket=TICKETS["joe"]))
            _welcomed(s, "joe", "worker", "ticket")
            await b.registrations[AUTHENTICATE].unregister()
            await _aborted(h, transport, AUTH_FAILED, realm=DYN_REALM,
                           auth=AuthTicket(authid="joe", ticket=TICKETS["joe"]))
            await _aborted(h, transport, AUTH_FAILED, realm=DYN_REALM,
                           auth=AuthWampCra(authid="carl", secret=CRA_SECRET))
            assert len(b.authenticated) == 1, b.authenticated
            # anonymous logins do not need it
            g = await h.open(transport, realm=DYN_REALM)
            _welcomed(g, "anonymous-{}".format(g.session_id), "guest", "anonymous",
                      authprovider="static")

    run(main())


# ---------------------------------------------------------------------------
# authorization


def test_authorizer_allows_denies_and_caches(router, transport):
    open_uri, secret_uri, _ = _uris(transport, "cache")
    serializer = "json" if transport == WS_JSON else "msgpack"
    kind = "rawsocket" if transport == RS_MSGPACK else "websocket"

    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport, authenticator=False)
            guest = await h.open(transport, realm=DYN_REALM, name="guest")
            _welcomed(guest, "anonymous-{}".format(guest.session_id), "guest", "anonymous",
                      authprovider="static")
            before = await metrics(router)

            # allowed: the subscription
            sink = EventSink()
            await guest.subscribe(sink.handler, open_uri)
            ((who, uri, action, options),) = b.authorized
            assert (uri, action, options) == (open_uri, "subscribe", {"match": "exact"}), b.authorized[-1]
            assert (who["session"], who["authid"], who["authrole"], who["authmethod"],
                    who["authprovider"]) == (guest.session_id, guest.join_details.authid,
                                             "guest", "anonymous", "static"), who
            assert (who["transport"]["type"], who["transport"]["serializer"]) == \
                (kind, serializer), who

            # denied: an acknowledged publication
            err = await expect_app_error(guest.publish(secret_uri, "x", options=ACK))
            assert err.error == NOT_AUTHORIZED, err
            assert b.questions() == [(open_uri, "subscribe"), (secret_uri, "publish")]
            after = await metrics(router)
            assert after["authorizer_calls"] - before["authorizer_calls"] == 2, (before, after)

            # the same publication again: denied from the cache, no question
            err = await expect_app_error(guest.publish(secret_uri, "y", options=ACK))
            assert err.error == NOT_AUTHORIZED, err
            assert len(b.authorized) == 2, b.questions()
            cached = await metrics(router)
            assert cached["authorizer_calls"] == after["authorizer_calls"], (after, cached)
            assert cached["authorization_cache_hits"] >= after["authorization_cache_hits"] + 1, \
                (after, cached)

            # allowed: a publication on the subscribed topic, which the guest gets
            await guest.publish(open_uri, "hello", options=ACK_ME)
            (args, _, _), = await sink.wait_for(1)
            assert args == ["hello"]
            assert b.questions()[2:] == [(open_uri, "publish")]
            # ... and again, from the cache
            await guest.publish(open_uri, "again", options=ACK_ME)
            events = await sink.wait_for(2)
            assert [e[0] for e in events] == [["hello"], ["again"]]
            assert len(b.authorized) == 3, b.questions()

            if router.shards == 1:
                # that answer said cache "role": another guest's identical
                # publication is answered from the (one shard's) cache
                other = await h.open(transport, realm=DYN_REALM, name="guest-2")
                err = await expect_app_error(other.publish(secret_uri, "z", options=ACK))
                assert err.error == NOT_AUTHORIZED, err
                assert len(b.authorized) == 3, b.questions()
            assert guest.is_attached()

    run(main())


def test_authorizer_dictionary_answers(router, transport):
    tag = _tag(transport, "dict")
    topic, procedure = DISCLOSED + tag, DISCLOSED + tag + ".echo"
    open_topic, denied = OPEN + tag, "com.example.other." + tag
    with_details = SubscribeOptions(details_arg="details")

    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport, authenticator=False)
            guest = await h.open(transport, realm=DYN_REALM, name="guest")
            peer = await h.open(transport, realm=DYN_REALM, name="peer")
            sink = EventSink()
            await guest.subscribe(sink.handler, topic, options=with_details)
            plain = EventSink()
            await guest.subscribe(plain.handler, open_topic, options=with_details)
            # {"allow": true, "disclose": true}: the publisher is disclosed
            await peer.publish(topic, "one", options=ACK)
            (args, _, details), = await sink.wait_for(1)
            assert (args, details.publisher) == (["one"], peer.session_id), details
            # (true: it is not)
            await peer.publish(open_topic, "plain", options=ACK)
            (args, _, details), = await plain.wait_for(1)
            assert (args, details.publisher) == (["plain"], None), details
            # {"cache": false}: asked again for the same publication
            await peer.publish(topic, "two", options=ACK)
            events = await sink.wait_for(2)
            assert events[1][2].publisher == peer.session_id, events[1][2]
            assert b.questions() == [(topic, "subscribe"), (open_topic, "subscribe"),
                                     (topic, "publish"), (open_topic, "publish"),
                                     (topic, "publish")], b.questions()
            # ... and the caller of a call it allows so
            await peer.register(lambda details=None: [details.caller, details.caller_authrole],
                                procedure, options=RegisterOptions(details_arg="details"))
            assert await guest.call(procedure) == [guest.session_id, "guest"]
            assert b.questions()[5:] == [(procedure, "register"), (procedure, "call")]
            # {"allow": false}: denied
            err = await expect_app_error(guest.call(denied))
            assert err.error == NOT_AUTHORIZED, err
            assert b.questions()[7:] == [(denied, "call")]

    run(main())


def test_failing_authorizer_denies(router, transport):
    _, _, broken_uri = _uris(transport, "broken")
    open_uri, _, _ = _uris(transport, "after-broken")

    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport, authenticator=False)
            guest = await h.open(transport, realm=DYN_REALM, name="guest")
            before = await metrics(router)
            err = await expect_app_error(guest.subscribe(lambda *a, **kw: None, broken_uri))
            assert err.error == NOT_AUTHORIZED, err
            err = await expect_app_error(guest.publish(broken_uri, "x", options=ACK))
            assert err.error == NOT_AUTHORIZED, err
            # a failure is not kept: the next identical request asks again
            err = await expect_app_error(guest.subscribe(lambda *a, **kw: None, broken_uri))
            assert err.error == NOT_AUTHORIZED, err
            assert b.questions() == [(broken_uri, "subscribe"), (broken_uri, "publish"),
                                     (broken_uri, "subscribe")]
            after = await metrics(router)
            assert after["authorizer_calls"] - before["authorizer_calls"] == 3, (before, after)
            # the session goes on
            await guest.subscribe(lambda *a, **kw: None, open_uri)
            assert guest.is_attached()

    run(main())


def test_authorizer_absent_denies(router, transport):
    open_uri, _, _ = _uris(transport, "absent")

    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport, authenticator=False, authorizer=False)
            guest = await h.open(transport, realm=DYN_REALM, name="guest")
            err = await expect_app_error(guest.subscribe(lambda *a, **kw: None, open_uri))
            assert err.error == NOT_AUTHORIZED, err
            # registered: the same subscription is allowed (the denial was not kept)
            await b.session.register(b.authorize, AUTHORIZE)
            await guest.subscribe(lambda *a, **kw: None, open_uri)
            assert b.questions() == [(open_uri, "subscribe")]

    run(main())


def test_messages_wait_behind_a_pending_answer(router, transport):
    first, _, _ = _uris(transport, "first")
    second, _, _ = _uris(transport, "second")
    prefix = OPEN + "order."
    first, second = prefix + first[len(OPEN):], prefix + second[len(OPEN):]

    async def main():
        async with Harness(router) as h:
            b = await _backend(h, transport, authenticator=False)
            guest = await h.open(transport, realm=DYN_REALM, name="guest")
            watcher = await h.open(transport, realm=DYN_REALM, name="watcher")
            sink = EventSink()
            await watcher.subscribe(sink.handler, prefix, options=SubscribeOptions(match="prefix"))
            # the second topic's answer is in the cache
            await guest.publish(second, "warm-up", options=ACK)
            await sink.wait_for(1)
            n = len(b.authorized)

            # the first topic's question waits; the publication behind it,
            # which the cache would allow at once, waits too
            asked, release = b.hold(first, "publish")
            p1 = asyncio.ensure_future(guest.publish(first, "one", options=ACK))
            p2 = asyncio.ensure_future(guest.publish(second, "two", options=ACK))
            await asyncio.wait_for(asked, 10)
            release()
            await asyncio.wait_for(asyncio.gather(p1, p2), 10)
            events = await sink.wait_for(3)
            assert [e[0] for e in events] == [["warm-up"], ["one"], ["two"]], events
            assert b.questions()[n:] == [(first, "publish")], b.questions()

    run(main())
