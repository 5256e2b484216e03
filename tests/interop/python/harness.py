"""Small asyncio harness around autobahn-python for the interop tests.

It opens real autobahn client sessions over one of three transports
(WebSocket+JSON, WebSocket+MessagePack, RawSocket+MessagePack: ``TRANSPORTS``,
which every older test module runs over), or over any of ``ALL_TRANSPORTS``
(every serializer -- JSON, MessagePack, CBOR -- on WebSocket, batched WebSocket
and RawSocket, RawSocket over the router's Unix socket, and RawSocket and
WebSocket on its universal port), in the clear or over TLS, anonymous or authenticating with autobahn's own authenticators
(autobahn.wamp.auth: WAMP-Ticket, WAMP-CRA, WAMP-Cryptosign, WAMP-SCRAM), lets
one test hold several sessions at once, and closes all of them
deterministically.

Tests are plain synchronous pytest functions that call ``run(coro)``; each
``run`` gets its own event loop (``asyncio.run``).
"""

import asyncio
import contextlib
import math
import urllib.parse

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import message  # noqa: E402
from autobahn.wamp.auth import AuthTicket  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import (CBORSerializer, JsonSerializer,  # noqa: E402
                                      MsgPackSerializer)
from autobahn.wamp.types import CallResult, ComponentConfig  # noqa: E402

# Transport ids used for test parametrization.
WS_JSON = "ws-json"
WS_MSGPACK = "ws-msgpack"
RS_MSGPACK = "rs-msgpack"
# The transports every older test module runs over (keep it at these three:
# each one multiplies those modules' tests).
TRANSPORTS = [WS_JSON, WS_MSGPACK, RS_MSGPACK]

# Every transport the router offers, for test_transports.py. An id is
# [ENDPOINT-]KIND-SERIALIZER[-batched]:
#   ENDPOINT    none: the plain TCP listener of the kind (the WebSocket one, path
#               /ws, or the RawSocket one); "unix": the RawSocket listener on the
#               router's Unix socket; "uni": the universal listener (RawSocket and
#               WebSocket, path /ws, and HTTP on one TCP port)
#   KIND        "ws" (WebSocket) or "rs" (RawSocket)
#   SERIALIZER  "json", "msgpack" or "cbor"
#   batched     WAMP-over-Batched-WebSocket (wamp.2.SERIALIZER.batched)
SERIALIZERS = ["json", "msgpack", "cbor"]
ALL_TRANSPORTS = (
    ["ws-" + s for s in SERIALIZERS]
    + ["ws-{}-batched".format(s) for s in SERIALIZERS]
    + ["rs-" + s for s in SERIALIZERS]
    + ["unix-rs-" + s for s in SERIALIZERS]
    + ["uni-rs-" + s for s in SERIALIZERS]
    + ["uni-ws-" + s for s in SERIALIZERS]
    + ["uni-ws-json-batched"]
)

# Default bound for any single wait inside a test (seconds).
WAIT = 10.0


class JoinAborted(Exception):
    """The router answered HELLO (or AUTHENTICATE) with ABORT."""

    def __init__(self, reason, message):
        super().__init__("{}: {}".format(reason, message))
        self.reason = reason
        self.message = message


class WelcomeRefused(Exception):
    """The client's authenticator refused the router's WELCOME (WAMP-SCRAM:
    a wrong server signature), so autobahn answered it with ABORT."""


class Client(ApplicationSession):
    """An ApplicationSession that exposes its lifecycle as futures.

    auth: autobahn authenticators (autobahn.wamp.auth.AuthTicket, AuthWampCra,
    AuthCryptoSign, AuthScram, ...; one or a list). HELLO asks for their
    methods in that order (or for authmethods, where given), with their authid
    and their merged authextra; CHALLENGEs go to the authenticator of their
    method, and so does WELCOME (WAMP-SCRAM checks the server's signature).
    """

    def __init__(self, config, name, authid=None, auth=None, authmethods=None, authextra=None):
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self.name = name
        if auth is None:
            auth = []
        self.authenticators = list(auth) if isinstance(auth, (list, tuple)) else [auth]
        self.hello_authmethods = authmethods or [a.name for a in self.authenticators] or None
        # HELLO.Details.authid asked for, if any: the authenticators' unless given
        self.hello_authid = authid or next(
            (a._args["authid"] for a in self.authenticators
             if getattr(a, "_args", {}).get("authid")), None)
        merged = {}
        for a in self.authenticators:
            merged.update(a.authextra)
        merged.update(authextra or {})
        self.hello_authextra = merged or None
        self.joined = loop.create_future()      # -> SessionDetails
        self.left = loop.create_future()        # -> CloseDetails
        self.disconnected = loop.create_future()  # -> was_clean (bool)
        self.welcome = None                     # raw WELCOME message
        self.challenges = []                    # autobahn Challenge(method, extra) received
        self.join_details = None
        self.close_details = None
        self.spec = None                        # TransportSpec it connected over (Harness.open)
        self.proto = None                       # its autobahn protocol (Harness.open)
        # the WELCOME as it came, a list (Harness.open): autobahn's Welcome
        # keeps only some of its details (not details.transport)
        self.raw_welcome = None

    # -- lifecycle ---------------------------------------------------------

    def onConnect(self):
        self.join(self.config.realm, authmethods=self.hello_authmethods, authid=self.hello_authid,
                  authextra=self.hello_authextra)

    def _authenticator(self, method):
        for a in self.authenticators:
            if a.name == method:
                return a
        return None

    def onChallenge(self, challenge):
        self.challenges.append(challenge)
        a = self._authenticator(challenge.method)
        if a is None:
            raise RuntimeError("{}: CHALLENGE for {!r}, which this client has no authenticator "
                               "for".format(self.name, challenge.method))
        return a.on_challenge(self, challenge)

    def onWelcome(self, msg):
        self.welcome = msg
        a = self._authenticator(msg.authmethod)
        if a is None:
            return None
        try:
            refused = a.on_welcome(self, msg.authextra)
        except Exception as e:
            refused = "{}: {!r}".format(type(e).__name__, e)
        if refused is not None and not self.joined.done():
            # autobahn ABORTs the session and never joins
            self.joined.set_exception(WelcomeRefused("{}: {}".format(self.name, refused)))
        return refused

    def onJoin(self, details):
        self.join_details = details
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details):
        self.close_details = details
        if not self.joined.done():
            self.joined.set_exception(JoinAborted(details.reason, details.message))
        if not self.left.done():
            self.left.set_result(details)
        # default behaviour: errback outstanding requests, close the transport
        return super().onLeave(details)

    def onClose(self, wasClean):
        self._was_clean = wasClean
        super().onClose(wasClean)

    def onDisconnect(self):
        super().onDisconnect()
        if not self.joined.done():
            self.joined.set_exception(
                ConnectionError("{}: transport closed before WELCOME".format(self.name)))
        if not self.left.done():
            self.left.set_result(None)
        if not self.disconnected.done():
            self.disconnected.set_result(getattr(self, "_was_clean", None))

    # -- helpers -----------------------------------------------------------

    async def close(self, timeout=WAIT):
        """GOODBYE handshake, then wait until the transport is gone."""
        if self.is_attached():
            self.leave()
            await asyncio.wait_for(asyncio.shield(self.left), timeout)
        await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)
        return self.close_details

    def drop_transport(self):
        """Close the underlying TCP connection without any WAMP GOODBYE."""
        proto = self._transport
        if proto is not None and getattr(proto, "transport", None) is not None:
            proto.transport.abort()


class TransportSpec:
    """A transport id (see ALL_TRANSPORTS) taken apart."""

    def __init__(self, transport):
        parts = transport.split("-")
        self.id = transport
        self.batched = parts[-1] == "batched"
        if self.batched:
            parts = parts[:-1]
        self.endpoint = parts[0] if parts[0] in ("unix", "uni") else "tcp"
        if self.endpoint != "tcp":
            parts = parts[1:]
        if len(parts) != 2 or parts[0] not in ("ws", "rs") or parts[1] not in SERIALIZERS:
            raise ValueError("unknown transport {!r}".format(transport))
        self.kind, self.serializer = parts
        if self.batched and self.kind != "ws":
            raise ValueError("{!r}: only WebSocket has batched serializers".format(transport))

    @property
    def router_kind(self):
        """details.transport.type as the router reports it."""
        return "websocket" if self.kind == "ws" else "rawsocket"

    @property
    def subprotocol(self):
        """The WebSocket subprotocol (None for RawSocket)."""
        if self.kind != "ws":
            return None
        return "wamp.2." + self.serializer + (".batched" if self.batched else "")

    def make_serializer(self):
        cls = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}
        return cls[self.serializer](batched=self.batched)

    def __repr__(self):
        return "<transport {}>".format(self.id)


def _serializer(transport):
    return TransportSpec(transport).make_serializer()


def _tap_welcome(serializer, session):
    """serializer (an autobahn one), keeping the raw WELCOME it decodes in
    session.raw_welcome."""
    inner = serializer._serializer
    unserialize = inner.unserialize

    def tapped(payload):
        msgs = unserialize(payload)
        if session.raw_welcome is None:
            for m in msgs:
                if isinstance(m, list) and m and m[0] == 2:
                    session.raw_welcome = m
                    break
        return msgs

    inner.unserialize = tapped
    return serializer


def unsupported(router, transport):
    """Why router cannot serve transport (a skip reason), or None."""
    spec = TransportSpec(transport)
    if router.kind == "crossbar":
        # the suite's crossbar config (conftest._crossbar_config) has the two TCP
        # listeners only, with JSON and MessagePack; nothing else has been run
        # against Crossbar.io
        if spec.endpoint != "tcp":
            return ("ROUTER=crossbar: the suite's crossbar config has no {} listener"
                    .format("Unix-socket" if spec.endpoint == "unix" else "universal"))
        if spec.serializer == "cbor":
            return "ROUTER=crossbar: the suite's crossbar config offers no CBOR serializer"
        if spec.batched:
            return "ROUTER=crossbar: batched WebSocket not validated against crossbar"
        return None
    if spec.endpoint == "unix" and router.unix_path is None:
        return "this module's router config has no Unix-socket RawSocket listener"
    if spec.endpoint == "uni" and router.universal_port is None:
        return "this module's router config has no universal listener"
    return None


class Harness:
    """Opens sessions against one router; closes every one of them on exit."""

    def __init__(self, router):
        self.router = router
        self.clients = []
        self._conns = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close_all()

    async def open(self, transport, realm="realm1", name=None, timeout=WAIT, authid=None,
                   auth=None, authmethods=None, authextra=None, tls=None, listener=None,
                   url=None, ws_options=None):
        """Connect and wait for WELCOME. Raises JoinAborted on ABORT, ConnectionError
        when the connection closes first (OSError, ssl.SSLError where the TLS
        handshake fails).

        transport: one of ALL_TRANSPORTS (TRANSPORTS among them); a Unix or
        universal one needs a router whose config has that listener
        (unsupported() says why not).

        authid: sent in HELLO (an anonymous session's authid is the router's
        all the same). auth, authmethods, authextra: see Client.
        tls: an ssl.SSLContext: connect over TLS, to the router's TLS listener of
        the transport's kind (wss:// or RawSocket over TLS).
        listener: "plain" or "tls", the listener to connect to whatever tls is
        (default: the one that fits it), so that a test can try a plain client
        on the TLS port and a TLS client on a plain one.
        url: WebSocket only: connect to this ws:// URL (a listener of the
        module's own) instead of the router's WebSocket listener.
        ws_options: WebSocket only: more autobahn protocol options
        (factory.setProtocolOptions), e.g. perMessageCompressionOffers.
        """
        loop = asyncio.get_running_loop()
        name = name or "{}#{}".format(transport, len(self.clients))
        session = Client(ComponentConfig(realm=realm), name, authid=authid, auth=auth,
                         authmethods=authmethods, authextra=authextra)
        listener = listener or ("tls" if tls is not None else "plain")
        if listener not in ("plain", "tls"):
            raise ValueError(listener)

        def make():
            return session

        spec = TransportSpec(transport)
        why = unsupported(self.router, transport)
        if why is not None:
            raise ValueError("{}: {}".format(transport, why))
        if spec.endpoint != "tcp" and (tls is not None or listener == "tls"):
            raise ValueError("{}: the router's TLS listeners are TCP ones".format(transport))
        if (url is not None or ws_options is not None) and (spec.kind != "ws"
                                                            or spec.endpoint != "tcp"):
            raise ValueError("{}: url and ws_options are for TCP WebSocket transports"
                             .format(transport))
        host = port = path = None
        if spec.kind == "rs":
            factory = WampRawSocketClientFactory(
                make, serializer=_tap_welcome(spec.make_serializer(), session))
            if spec.endpoint == "unix":
                path = self.router.unix_path
            elif spec.endpoint == "uni":
                host, port = "127.0.0.1", self.router.universal_port
            else:
                host = self.router.rawsocket_host
                port = self.router.rss_port if listener == "tls" else self.router.rawsocket_port
        else:
            if url is not None:
                parsed = urllib.parse.urlsplit(url)
                host, port = parsed.hostname, parsed.port
            elif spec.endpoint == "uni":
                url = self.router.universal_ws_url
                host, port = "127.0.0.1", self.router.universal_port
            else:
                url = self.router.wss_url if tls is not None else self.router.ws_url
                host = self.router.ws_host
                port = self.router.wss_port if listener == "tls" else self.router.ws_port
            factory = WampWebSocketClientFactory(
                make, url=url, serializers=[_tap_welcome(spec.make_serializer(), session)])
            factory.setProtocolOptions(openHandshakeTimeout=timeout, closeHandshakeTimeout=5.0,
                                       failByDrop=False, **(ws_options or {}))

        self.clients.append(session)
        if path is not None:
            connect = loop.create_unix_connection(factory, path)
        else:
            connect = loop.create_connection(factory, host, port, ssl=tls)
        conn, proto = await asyncio.wait_for(connect, timeout)
        session.spec = spec
        session.proto = proto
        self._conns.append(conn)
        # a connection that closes before the session exists (a RawSocket
        # handshake that fails) never reaches the session: watch it here
        lost = loop.create_future()
        connection_lost = proto.connection_lost

        def on_lost(exc):
            if not lost.done():
                lost.set_result(exc)
            return connection_lost(exc)

        proto.connection_lost = on_lost
        waiters = [session.joined, lost]
        is_closed = getattr(proto, "is_closed", None)  # WebSocket: fires on failed handshake too
        if is_closed is not None:
            waiters.append(asyncio.ensure_future(is_closed))
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if session.joined.done():
            session.joined.result()  # raises JoinAborted / ConnectionError / WelcomeRefused
            return session
        if done:
            raise ConnectionError("{}: connection closed before WELCOME (WebSocket or RawSocket "
                                  "handshake failed?)".format(name))
        raise asyncio.TimeoutError("{}: no WELCOME within {} s".format(name, timeout))

    async def close_all(self):
        attached = [s for s in self.clients if s.is_attached()]
        # GOODBYE on all of them at once; whatever does not finish in 5 s is aborted below
        await asyncio.gather(*(s.close(timeout=5.0) for s in attached), return_exceptions=True)
        for conn in self._conns:
            if not conn.is_closing():
                conn.abort()
        # give the loop a turn so connection_lost callbacks run before the loop dies
        await asyncio.sleep(0)


def ticket_auth(router, authid):
    """A WAMP-Ticket login as authid, one of the principals of the default
    config (conftest.PRINCIPALS: role "anonymous"); Switchyard only."""
    assert router.ticket is not None, "only Switchyard's test config has principals"
    return AuthTicket(authid=authid, ticket=router.ticket)


def run(coro, timeout=25.0):
    """Run one test coroutine on a fresh event loop, bounded in time."""

    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class _DisclosingPublish(message.Publish):
    """A PUBLISH with Options.disclose_me = true (autobahn-python 24.4's
    PublishOptions has no disclose_me, though its EventDetails reads the
    publisher fields)."""

    __slots__ = ()

    def marshal_options(self):
        options = super().marshal_options()
        options["disclose_me"] = True
        return options


@contextlib.contextmanager
def disclosing(session):
    """PUBLISHes that session sends inside the block ask for disclose_me.

    autobahn builds the PUBLISH and hands it to the transport synchronously
    within publish(), so the block is the publish() call, not its await."""
    transport = session._transport
    send = transport.send

    def send_disclosing(msg):
        if type(msg) is message.Publish:
            msg.__class__ = _DisclosingPublish
        return send(msg)

    transport.send = send_disclosing
    try:
        yield
    finally:
        del transport.send  # back to the class's method


# ---------------------------------------------------------------------------
# payload helpers

UNICODE = "grüße 世界 🚀"
BINARY = b"\x00\x01\xff"

PAYLOAD_ARGS = [
    UNICODE,
    BINARY,
    b"",
    bytes(range(256)),
    2 ** 53,
    2 ** 63 - 1,
    -2 ** 63,
    0,
    -1,
    3.14159,
    0.1,
    -0.5,
    1e300,
    2.0,
    None,
    True,
    False,
    "",
    "text with a NUL \u0000 inside (only a leading NUL marks binary in JSON)",
    [],
    {},
    [1, [2, [3, "x", BINARY]], {"a": {"b": [None, True, 1.5, UNICODE]}}],
]

PAYLOAD_KWARGS = {
    "unicode": UNICODE,
    "bin": BINARY,
    "nested": {"list": [1, 2.5, "three", None, True, BINARY], "dict": {"k": "v", "ключ": [{}]}},
    "big": 2 ** 63 - 1,
    "small": -2 ** 63,
    "exact53": 2 ** 53,
    "float": 2.5,
    "none": None,
    "t": True,
    "f": False,
    "emoji🚀": "value",
}


def normalize_result(res):
    """(args, kwargs) of a call result, whatever shape autobahn returned."""
    if isinstance(res, CallResult):
        return list(res.results), dict(res.kwresults)
    if res is None:
        return [], {}
    return [res], {}


def assert_same(expected, actual, path="$"):
    """Deep equality that also checks types (bool vs int, float vs int, bytes vs str)."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), "{}: expected list, got {!r}".format(path, actual)
        assert len(expected) == len(actual), "{}: length {} != {}: {!r}".format(
            path, len(expected), len(actual), actual)
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, "{}[{}]".format(path, i))
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), "{}: expected dict, got {!r}".format(path, actual)
        assert set(expected) == set(actual), "{}: keys {!r} != {!r}".format(
            path, sorted(expected), sorted(actual))
        for k in expected:
            assert_same(expected[k], actual[k], "{}.{}".format(path, k))
    elif isinstance(expected, float):
        assert type(actual) is float, "{}: expected float {!r}, got {!r} ({})".format(
            path, expected, actual, type(actual).__name__)
        assert actual == expected or (math.isnan(actual) and math.isnan(expected)), \
            "{}: {!r} != {!r}".format(path, actual, expected)
    else:
        assert type(actual) is type(expected), "{}: expected {} {!r}, got {} {!r}".format(
            path, type(expected).__name__, expected, type(actual).__name__, actual)
        assert actual == expected, "{}: expected {!r}, got {!r}".format(path, expected, actual)


class EventSink:
    """Collects events for a subscription handler and lets a test await them."""

    def __init__(self):
        self.events = []  # list of (args, kwargs, details)
        self._waiters = []

    def handler(self, *args, details=None, **kwargs):
        self.events.append((list(args), kwargs, details))
        for n, fut in list(self._waiters):
            if len(self.events) >= n and not fut.done():
                fut.set_result(None)

    async def wait_for(self, n, timeout=WAIT):
        """Wait until at least n events have arrived."""
        if len(self.events) >= n:
            return self.events
        fut = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError("timed out after {} s waiting for {} events; got {}: {!r}".format(
                timeout, n, len(self.events), [e[0] for e in self.events])) from None
        finally:
            self._waiters.remove(entry)
        return self.events


async def expect_app_error(coro, timeout=WAIT):
    """Await coro, which must fail with an ApplicationError; return the error."""
    try:
        res = await asyncio.wait_for(coro, timeout)
    except ApplicationError as e:
        return e
    raise AssertionError("expected an ApplicationError, got result {!r}".format(res))


SENTINEL = "sentinel"


async def until_sentinel(sink, start=0, sentinel=SENTINEL, timeout=WAIT):
    """Waits for the next event after sink.events[start:] whose first argument is sentinel.

    Returns (the first arguments of the events before it, the index after it),
    so that a test can check that an event did *not* arrive: events from one
    publisher reach a subscriber in publication order, so once a later
    sentinel has arrived, an earlier event would be here.
    """
    n = start
    while True:
        n += 1
        events = await sink.wait_for(n, timeout)
        args = events[n - 1][0]
        if args and args[0] == sentinel:
            return [e[0][0] if e[0] else None for e in events[start:n - 1]], n
