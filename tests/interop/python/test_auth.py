"""Authentication and authorization with autobahn-python's own authenticators
(autobahn.wamp.auth): WAMP-Ticket, WAMP-CRA (plain and salted secrets),
WAMP-Cryptosign, WAMP-SCRAM (autobahn's draft, "scram", with the argon2id-13
KDF), TLS client certificates, anonymous logins; roles with URI rules; wss://
and RawSocket over TLS.

The module's router runs with its own config (switchyard_config below): every
secret is made when it starts, by `switchyard secret` from random passwords,
the Ed25519 key pairs with PyNaCl and the TLS certificates (a CA, the
server's, clients') with the `cryptography` package, in the router's work
directory. Nothing secret is committed.

Failed logins come from 127.0.0.1 many times over, so the config raises
limits.auth_failures_before_backoff out of the way. An event that must *not*
arrive is shown by a later sentinel event from the same publisher (see
harness.until_sentinel).
"""

import datetime
import ipaddress
import json
import os
import re
import secrets
import ssl

import pytest
from autobahn.wamp.auth import AuthCryptoSign, AuthScram, AuthTicket, AuthWampCra
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nacl.encoding import HexEncoder
from nacl.signing import SigningKey

from harness import (RS_MSGPACK, SENTINEL, EventSink, Harness, JoinAborted, expect_app_error,
                     run, until_sentinel)

pytestmark = pytest.mark.skipif(
    os.environ.get("ROUTER", "switchyard").strip().lower() != "switchyard",
    reason="the principals, roles and TLS listeners are Switchyard's configuration "
           "(switchyard_config below)")

ACK = PublishOptions(acknowledge=True)
AUTH_FAILED = "wamp.error.authentication_failed"
NO_AUTH_METHOD = "wamp.error.no_auth_method"
NOT_AUTHORIZED = "wamp.error.not_authorized"

# The realm where every session authenticates (anonymous is off) and roles
# are enforced, and one with anonymous logins (role "guest") and no roles.
AUTH_REALM = "realm.auth"
OPEN_REALM = "realm.open"

# Passwords, random for each run; the router's config gets what
# `switchyard secret` derives from them.
PASSWORDS = {authid: secrets.token_urlsafe(12) for authid in (
    "ticket-user", "cra-plain", "cra-salted", "scram-user", "restricted", "backend",
    "announcer", "ghost", "member")}
CRA_SALT = secrets.token_hex(8)

# Ed25519 key pairs: "signer" lists the first; the second is listed nowhere.
SIGNER_KEY = SigningKey.generate()
STRANGER_KEY = SigningKey.generate()


def _hex_private(key):
    return key.encode(encoder=HexEncoder).decode("ascii")


def _hex_public(key):
    return key.verify_key.encode(encoder=HexEncoder).decode("ascii")


# ---------------------------------------------------------------------------
# TLS: a CA, the server's certificate and clients' ones (subject CN = authid),
# and one client certificate from a CA the router does not trust.

CLIENT_CERTS = ("cert-user", "ticket-user", "stranger")


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_cn, key, issuer_cn, issuer_key, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(_name(subject_cn))
         .issuer_name(_name(issuer_cn))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                        critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write_pem(path, cert=None, key=None, chain=()):
    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    for c in chain:
        data += c.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    path.write_bytes(data)


def _make_pki(d):
    """Writes into directory d: ca.pem; server.pem (chain) and server.key;
    <cn>.pem + <cn>.key for each client CN; rogue-cert-user.pem/.key, a
    "cert-user" certificate from another CA."""
    d.mkdir(exist_ok=True)
    ca_key = _key()
    ca = _cert("Switchyard interop test CA", ca_key, "Switchyard interop test CA", ca_key, ca=True)
    _write_pem(d / "ca.pem", ca)
    server_key = _key()
    server = _cert("127.0.0.1", server_key, "Switchyard interop test CA", ca_key, server=True)
    _write_pem(d / "server.pem", server, chain=[ca])
    _write_pem(d / "server.key", key=server_key)
    for cn in CLIENT_CERTS:
        k = _key()
        _write_pem(d / "{}.pem".format(cn), _cert(cn, k, "Switchyard interop test CA", ca_key))
        _write_pem(d / "{}.key".format(cn), key=k)
    rogue_ca_key = _key()
    k = _key()
    _write_pem(d / "rogue-cert-user.pem", _cert("cert-user", k, "Rogue CA", rogue_ca_key))
    _write_pem(d / "rogue-cert-user.key", key=k)


def _tls(router, client=None):
    """A client SSLContext that trusts the test CA (and checks the server's
    certificate and address); with client, it presents <client>.pem."""
    pki = router.workdir / "pki"
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if client is not None:
        ctx.load_cert_chain(str(pki / "{}.pem".format(client)), str(pki / "{}.key".format(client)))
    return ctx


# ---------------------------------------------------------------------------
# the router's config

CONFIG = """\
[router]
shards = {shards}

[limits]
auth_failures_before_backoff = 1000   # the tests fail logins on purpose, from one address

[[realm]]
name = "{auth_realm}"
anonymous = false

[[realm.principal]]
authid = "ticket-user"
role = "user"
{ticket_user}

[[realm.principal]]
authid = "cra-plain"
role = "user"
wampcra_secret = "{cra_plain}"

[[realm.principal]]
authid = "cra-salted"
role = "user"
{cra_salted}

[[realm.principal]]
authid = "signer"
role = "user"
cryptosign_keys = ["{signer_pubkey}"]

[[realm.principal]]
authid = "scram-user"
role = "user"
{scram_user}

[[realm.principal]]
authid = "cert-user"
role = "user"
tls = true

[[realm.principal]]
authid = "restricted"
role = "restricted"
{restricted}

[[realm.principal]]
authid = "backend"
role = "backend"
{backend}

[[realm.principal]]
authid = "announcer"
role = "announcer"
{announcer}

[[realm.principal]]
authid = "ghost"
role = "nobody"        # a role the realm does not define
{ghost}

[[realm.role]]
name = "user"
[[realm.role.permission]]
uri = ""
match = "prefix"
allow = ["call", "register", "publish", "subscribe"]

[[realm.role]]
name = "backend"
[[realm.role.permission]]
uri = ""
match = "prefix"
allow = ["call", "register", "publish", "subscribe"]

[[realm.role]]
name = "restricted"
[[realm.role.permission]]
uri = "com.example.open."
match = "prefix"
allow = ["call", "subscribe"]
disclose = true

[[realm.role]]
name = "announcer"
[[realm.role.permission]]
uri = "com.example.news.public."
match = "prefix"
allow = ["publish"]

[[realm]]
name = "{open_realm}"
anonymous_role = "guest"

[[realm.principal]]
authid = "member"
role = "member"
{member}

{listeners}
[[listener]]
type = "websocket"
bind = "127.0.0.1:{wss}"
path = "/ws"
[listener.tls]
certificate = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
require_client_certificate = false

[[listener]]
type = "rawsocket"
bind = "127.0.0.1:{rss}"
[listener.tls]
certificate = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
"""


def switchyard_config(setup):
    """The router of this module (conftest's RouterSetup hook)."""
    _make_pki(setup.workdir / "pki")

    def ticket(authid):
        return setup.secret("ticket", PASSWORDS[authid], "--memory", "64", "--iterations", "1")

    return CONFIG.format(
        shards=setup.shards, auth_realm=AUTH_REALM, open_realm=OPEN_REALM,
        ticket_user=ticket("ticket-user"), restricted=ticket("restricted"),
        backend=ticket("backend"), announcer=ticket("announcer"), ghost=ticket("ghost"),
        member=ticket("member"),
        cra_plain=PASSWORDS["cra-plain"],
        cra_salted=setup.secret("wampcra", PASSWORDS["cra-salted"], "--salt", CRA_SALT,
                                "--iterations", "100", "--keylen", "32"),
        scram_user=setup.secret("scram", PASSWORDS["scram-user"], "--kdf", "argon2id-13",
                                "--iterations", "1", "--memory", "64"),
        signer_pubkey=_hex_public(SIGNER_KEY),
        listeners=setup.plain_listeners(),
        **setup.ports)


# ---------------------------------------------------------------------------
# helpers


def _ticket(authid, ticket=None):
    return AuthTicket(authid=authid, ticket=PASSWORDS[authid] if ticket is None else ticket)


def _welcomed(session, authid, authrole, authmethod, realm=AUTH_REALM):
    """WELCOME's details, as autobahn read them, are the principal's."""
    w = session.welcome
    got = (w.realm, w.authid, w.authrole, w.authmethod, w.authprovider)
    assert got == (realm, authid, authrole, authmethod, "static"), got
    d = session.join_details
    assert (d.authid, d.authrole, d.authmethod) == (authid, authrole, authmethod), str(d)


async def _aborted(h, transport, reason, **kw):
    """Opens a session that the router must ABORT with reason; returns the
    ABORT's message."""
    with pytest.raises(JoinAborted) as ei:
        await h.open(transport, **kw)
    assert ei.value.reason == reason, "ABORT {!r} ({!r}), expected {}".format(
        ei.value.reason, ei.value.message, reason)
    assert not h.clients[-1].is_attached()
    return ei.value.message


async def _still_serves(h, transport, **kw):
    """After a failed login, a good one on the same router works."""
    s = await h.open(transport, realm=AUTH_REALM, auth=_ticket("ticket-user"), **kw)
    assert await s.call("wamp.session.get", s.session_id)


def _echo(*args, details=None, **kwargs):
    return [list(args), details.caller_authid if details else None]


# ---------------------------------------------------------------------------
# WAMP-Ticket


def test_ticket_login(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport, realm=AUTH_REALM, auth=_ticket("ticket-user"))
            _welcomed(s, "ticket-user", "user", "ticket")
            assert [c.method for c in s.challenges] == ["ticket"], s.challenges
            # the router's view of the session agrees
            info = await s.call("wamp.session.get", s.session_id)
            assert (info["authid"], info["authrole"], info["authmethod"]) == \
                ("ticket-user", "user", "ticket"), info

    run(main())


def test_ticket_wrong_or_unknown(router, transport):
    async def main():
        async with Harness(router) as h:
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=_ticket("ticket-user", PASSWORDS["ticket-user"] + "x"))
            # another principal's ticket
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=_ticket("ticket-user", PASSWORDS["backend"]))
            # an authid the realm does not have: the same exchange, then no
            unknown = AuthTicket(authid="nobody", ticket=PASSWORDS["ticket-user"])
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM, auth=unknown)
            assert [c.method for c in h.clients[-1].challenges] == ["ticket"]
            # a principal of another realm
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM, auth=_ticket("member"))
            await _still_serves(h, transport)

    run(main())


# ---------------------------------------------------------------------------
# WAMP-CRA


def test_wampcra_plain_secret(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport, realm=AUTH_REALM,
                             auth=AuthWampCra(authid="cra-plain", secret=PASSWORDS["cra-plain"]))
            _welcomed(s, "cra-plain", "user", "wampcra")
            (challenge,) = s.challenges
            assert challenge.method == "wampcra"
            assert "salt" not in challenge.extra, challenge.extra
            # the signed challenge names the session that WELCOME then opened
            signed = json.loads(challenge.extra["challenge"])
            assert (signed["authid"], signed["authrole"], signed["authmethod"], signed["session"]) \
                == ("cra-plain", "user", "wampcra", s.session_id), signed
            assert signed["nonce"], signed

            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthWampCra(authid="cra-plain", secret="not the secret"))
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthWampCra(authid="nobody", secret=PASSWORDS["cra-plain"]))

    run(main())


def test_wampcra_salted_secret(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport, realm=AUTH_REALM,
                             auth=AuthWampCra(authid="cra-salted", secret=PASSWORDS["cra-salted"]))
            _welcomed(s, "cra-salted", "user", "wampcra")
            (challenge,) = s.challenges
            # autobahn derived the key from the CHALLENGE's salt parameters
            assert (challenge.extra["salt"], challenge.extra["iterations"],
                    challenge.extra["keylen"]) == (CRA_SALT, 100, 32), challenge.extra

            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthWampCra(authid="cra-salted",
                                            secret=PASSWORDS["cra-salted"] + "x"))
            # the plain secret's principal's secret does not open the salted one
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthWampCra(authid="cra-salted", secret=PASSWORDS["cra-plain"]))
            await _still_serves(h, transport)

    run(main())


# ---------------------------------------------------------------------------
# WAMP-Cryptosign


class _SignsWith:
    """A cryptosign authenticator that announces one public key and signs with
    another private key (autobahn's AuthCryptoSign refuses such a pair)."""

    name = "cryptosign"

    def __init__(self, pubkey_hex, signing_key, authid=None):
        self._args = {"authid": authid} if authid else {}
        self._key = CryptosignKey.from_bytes(bytes(signing_key))
        self.authextra = {"pubkey": pubkey_hex}

    def on_challenge(self, session, challenge):
        return self._key.sign_challenge(challenge)

    def on_welcome(self, session, authextra):
        return None


def test_cryptosign_login(router, transport):
    async def main():
        async with Harness(router) as h:
            # without an authid: the public key names the principal
            s = await h.open(transport, realm=AUTH_REALM,
                             auth=AuthCryptoSign(privkey=_hex_private(SIGNER_KEY)))
            _welcomed(s, "signer", "user", "cryptosign")
            (challenge,) = s.challenges
            assert re.fullmatch("[0-9a-f]{64}", challenge.extra["challenge"]), challenge.extra
            assert challenge.extra.get("channel_binding") is None, challenge.extra
            # with the principal's authid
            s2 = await h.open(transport, realm=AUTH_REALM,
                              auth=AuthCryptoSign(authid="signer",
                                                  privkey=_hex_private(SIGNER_KEY)))
            _welcomed(s2, "signer", "user", "cryptosign")
            assert s2.challenges[0].extra["challenge"] != challenge.extra["challenge"]

    run(main())


def test_cryptosign_refusals(router, transport):
    async def main():
        async with Harness(router) as h:
            # a key no principal lists: refused at HELLO
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthCryptoSign(privkey=_hex_private(STRANGER_KEY)))
            assert h.clients[-1].challenges == []
            # a listed public key, signed with another private key
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=_SignsWith(_hex_public(SIGNER_KEY), STRANGER_KEY))
            assert [c.method for c in h.clients[-1].challenges] == ["cryptosign"]
            # the listed key, with another principal's authid
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthCryptoSign(authid="ticket-user",
                                               privkey=_hex_private(SIGNER_KEY)))
            # channel binding needs TLS: tls-exporter over plain TCP is refused
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthCryptoSign(privkey=_hex_private(SIGNER_KEY)),
                           authextra={"channel_binding": "tls-exporter"})
            await _still_serves(h, transport)

    run(main())


# ---------------------------------------------------------------------------
# WAMP-SCRAM (autobahn-python's draft: authmethod "scram", kdf argon2id-13)


def test_scram_login(router, transport):
    async def main():
        async with Harness(router) as h:
            scram = AuthScram(authid="scram-user", password=PASSWORDS["scram-user"])
            s = await h.open(transport, realm=AUTH_REALM, auth=scram)
            # autobahn checked WELCOME's scram_server_signature before joining
            _welcomed(s, "scram-user", "user", "scram")
            (challenge,) = s.challenges
            assert challenge.method == "scram"
            extra = challenge.extra
            assert (extra["kdf"], extra["iterations"], extra["memory"]) == \
                ("argon2id-13", 1, 64), extra
            # the server nonce extends the client's
            assert extra["nonce"].startswith(scram.authextra["nonce"]), extra
            assert len(extra["nonce"]) > len(scram.authextra["nonce"]), extra
            assert s.welcome.authextra["scram_server_signature"], s.welcome.authextra

            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthScram(authid="scram-user",
                                          password=PASSWORDS["scram-user"] + "x"))
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthScram(authid="nobody", password=PASSWORDS["scram-user"]))
            # an unknown authid gets a challenge all the same (no authid oracle)
            assert [c.method for c in h.clients[-1].challenges] == ["scram"]
            await _still_serves(h, transport)

    run(main())


# ---------------------------------------------------------------------------
# method choice, anonymous


def test_no_offered_method(router, transport):
    async def main():
        async with Harness(router) as h:
            # anonymous (autobahn's HELLO without authmethods) on a realm without it
            await _aborted(h, transport, NO_AUTH_METHOD, realm=AUTH_REALM)
            await _aborted(h, transport, NO_AUTH_METHOD, realm=AUTH_REALM,
                           authmethods=["anonymous"])
            # methods no principal of the realm has
            await _aborted(h, transport, NO_AUTH_METHOD, realm=OPEN_REALM,
                           auth=AuthWampCra(authid="member", secret="x"))
            await _aborted(h, transport, NO_AUTH_METHOD, realm=OPEN_REALM,
                           authmethods=["cryptosign", "wamp-scram", "unknown-method"])
            # "tls" without a client certificate (here: no TLS at all)
            await _aborted(h, transport, NO_AUTH_METHOD, realm=AUTH_REALM, authmethods=["tls"])
            await _still_serves(h, transport)

    run(main())


def test_first_offered_method_in_client_order(router, transport):
    async def main():
        async with Harness(router) as h:
            # the auth realm has no anonymous: the ticket it offers is used
            s = await h.open(transport, realm=AUTH_REALM, authmethods=["anonymous", "ticket"],
                             auth=_ticket("ticket-user"))
            _welcomed(s, "ticket-user", "user", "ticket")
            # the open realm offers both: the client's first wins
            a = await h.open(transport, realm=OPEN_REALM, authmethods=["anonymous", "ticket"],
                             auth=_ticket("member"))
            assert a.challenges == []
            _welcomed(a, "anonymous-{}".format(a.session_id), "guest", "anonymous",
                      realm=OPEN_REALM)
            t = await h.open(transport, realm=OPEN_REALM, authmethods=["ticket", "anonymous"],
                             auth=_ticket("member"))
            _welcomed(t, "member", "member", "ticket", realm=OPEN_REALM)
            # methods the router does not know are passed over
            u = await h.open(transport, realm=OPEN_REALM, authmethods=["x-unknown", "ticket"],
                             auth=_ticket("member"))
            _welcomed(u, "member", "member", "ticket", realm=OPEN_REALM)

    run(main())


def test_anonymous_authid_is_the_routers(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport, realm=OPEN_REALM, authid="member")
            _welcomed(s, "anonymous-{}".format(s.session_id), "guest", "anonymous",
                      realm=OPEN_REALM)
            info = await s.call("wamp.session.get", s.session_id)
            assert (info["authid"], info["authrole"]) == (s.join_details.authid, "guest"), info
            # two anonymous sessions asking for one authid get their own
            other = await h.open(transport, realm=OPEN_REALM, authid="member")
            assert other.join_details.authid == "anonymous-{}".format(other.session_id)
            assert other.join_details.authid != s.join_details.authid

    run(main())


# ---------------------------------------------------------------------------
# authorization


def test_restricted_role(router, transport):
    uri = "com.example.open.{}".format(transport.replace("-", "_"))
    closed = "com.example.closed.{}".format(transport.replace("-", "_"))

    async def main():
        async with Harness(router) as h:
            backend = await h.open(transport, realm=AUTH_REALM, name="backend",
                                   auth=_ticket("backend"))
            user = await h.open(transport, realm=AUTH_REALM, name="restricted",
                                auth=_ticket("restricted"))
            _welcomed(user, "restricted", "restricted", "ticket")
            opts = RegisterOptions(details_arg="details")
            await backend.register(_echo, uri + ".echo", options=opts)
            await backend.register(_echo, closed + ".echo", options=opts)

            # allowed: calls under its prefix; the rule discloses the caller
            assert await user.call(uri + ".echo", 1, "a") == [[1, "a"], "restricted"]
            # (the backend's rule does not)
            assert await backend.call(uri + ".echo", 0) == [[0], None]
            # allowed: subscriptions under its prefix
            sink = EventSink()
            await user.subscribe(sink.handler, uri + ".news")
            await backend.publish(uri + ".news", "hello", options=ACK)
            (args, _, _), = await sink.wait_for(1)
            assert args == ["hello"]

            # denied: calls elsewhere, though the procedure exists
            err = await expect_app_error(user.call(closed + ".echo", 1))
            assert err.error == NOT_AUTHORIZED, err
            # denied: what the role's rule does not allow under its prefix
            err = await expect_app_error(user.register(_echo, uri + ".mine"))
            assert err.error == NOT_AUTHORIZED, err
            err = await expect_app_error(user.publish(uri + ".news", "x", options=ACK))
            assert err.error == NOT_AUTHORIZED, err
            # denied: subscriptions elsewhere, the meta API
            err = await expect_app_error(user.subscribe(sink.handler, closed + ".news"))
            assert err.error == NOT_AUTHORIZED, err
            err = await expect_app_error(user.call("wamp.session.count"))
            assert err.error == NOT_AUTHORIZED, err
            # ... which a role with a rule for it may call
            assert await backend.call("wamp.session.count") >= 2

            # nothing of that cost the session: it still calls and gets events
            assert await user.call(uri + ".echo", 2) == [[2], "restricted"]
            await backend.publish(uri + ".news", "again", options=ACK)
            events = await sink.wait_for(2)
            assert [e[0] for e in events] == [["hello"], ["again"]], events
            assert user.is_attached()

    run(main())


def test_denied_publish_without_acknowledge_is_dropped(router, transport):
    base = "com.example.news.{}".format(transport.replace("-", "_"))
    public = "com.example.news.public.{}".format(transport.replace("-", "_"))

    async def main():
        async with Harness(router) as h:
            backend = await h.open(transport, realm=AUTH_REALM, name="backend",
                                   auth=_ticket("backend"))
            announcer = await h.open(transport, realm=AUTH_REALM, name="announcer",
                                     auth=_ticket("announcer"))
            sink = EventSink()
            # one subscription gets both topics, in the publisher's order
            await backend.subscribe(sink.handler, "com.example.news",
                                    options=SubscribeOptions(match="prefix"))
            # announcer may publish under com.example.news.public. only: its
            # unacknowledged publication elsewhere is dropped, no ERROR
            announcer.publish(base + ".secret", "dropped")
            await announcer.publish(public, SENTINEL, options=ACK)
            got, _ = await until_sentinel(sink)
            assert got == [], got
            err = await expect_app_error(announcer.publish(base + ".secret", "x", options=ACK))
            assert err.error == NOT_AUTHORIZED, err
            assert announcer.is_attached()

    run(main())


def test_role_the_realm_does_not_define(router, transport):
    async def main():
        async with Harness(router) as h:
            ghost = await h.open(transport, realm=AUTH_REALM, auth=_ticket("ghost"))
            _welcomed(ghost, "ghost", "nobody", "ticket")
            backend = await h.open(transport, realm=AUTH_REALM, auth=_ticket("backend"))
            await backend.register(lambda: "x", "com.example.open.ghostly")
            for attempt in (ghost.call("com.example.open.ghostly"),
                            ghost.call("wamp.session.count"),
                            ghost.subscribe(lambda *a: None, "com.example.open.ghostly"),
                            ghost.register(lambda: None, "com.example.open.haunt"),
                            ghost.publish("com.example.open.ghostly", options=ACK)):
                err = await expect_app_error(attempt)
                assert err.error == NOT_AUTHORIZED, err

    run(main())


# ---------------------------------------------------------------------------
# TLS: wss:// and RawSocket over TLS


def test_ticket_login_over_tls(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport, realm=AUTH_REALM, auth=_ticket("ticket-user"),
                             tls=_tls(router))
            _welcomed(s, "ticket-user", "user", "ticket")
            assert s._transport.transport_details.is_secure is True
            info = await s.call("wamp.session.get", s.session_id)
            assert info["authid"] == "ticket-user", info
            if "transport" in info:
                kind = "rawsocket" if transport == RS_MSGPACK else "websocket"
                assert info["transport"]["type"] == kind, info
            # and anonymous over TLS, on the realm that has it
            a = await h.open(transport, realm=OPEN_REALM, tls=_tls(router))
            _welcomed(a, "anonymous-{}".format(a.session_id), "guest", "anonymous",
                      realm=OPEN_REALM)

    run(main())


def test_client_certificate_login(router, transport):
    async def main():
        async with Harness(router) as h:
            s = await h.open(transport, realm=AUTH_REALM, authmethods=["tls"],
                             tls=_tls(router, client="cert-user"))
            _welcomed(s, "cert-user", "user", "tls")
            assert s.challenges == []
            # with the certificate's authid in HELLO too
            s2 = await h.open(transport, realm=AUTH_REALM, authmethods=["tls"], authid="cert-user",
                              tls=_tls(router, client="cert-user"))
            _welcomed(s2, "cert-user", "user", "tls")
            # the certificate does not stand in for another authid
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM, authmethods=["tls"],
                           authid="ticket-user", tls=_tls(router, client="cert-user"))
            # a certificate whose CN is a principal without tls = true, or no principal
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM, authmethods=["tls"],
                           tls=_tls(router, client="ticket-user"))
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM, authmethods=["tls"],
                           tls=_tls(router, client="stranger"))
            # TLS without a client certificate: "tls" is not on offer
            await _aborted(h, transport, NO_AUTH_METHOD, realm=AUTH_REALM, authmethods=["tls"],
                           tls=_tls(router))
            # a certificate beside a ticket login: the client's order decides
            t = await h.open(transport, realm=AUTH_REALM, authmethods=["ticket", "tls"],
                             auth=_ticket("ticket-user"), tls=_tls(router, client="cert-user"))
            _welcomed(t, "ticket-user", "user", "ticket")
            await _still_serves(h, transport, tls=_tls(router))

    run(main())


def test_untrusted_client_certificate_is_refused(router, transport):
    async def main():
        async with Harness(router) as h:
            # CN cert-user, from a CA the listener does not trust: the TLS handshake fails
            with pytest.raises(OSError):
                await h.open(transport, realm=AUTH_REALM, authmethods=["tls"],
                             tls=_tls(router, client="rogue-cert-user"))
            assert not h.clients[-1].is_attached()
            await _still_serves(h, transport, tls=_tls(router, client="cert-user"))

    run(main())


def test_tls_and_plain_ports_do_not_mix(router, transport):
    async def main():
        async with Harness(router) as h:
            # a plain client on the TLS port
            with pytest.raises(ConnectionError):
                await h.open(transport, realm=AUTH_REALM, auth=_ticket("ticket-user"),
                             listener="tls")
            assert not h.clients[-1].is_attached()
            # a TLS client on the plain port
            with pytest.raises(OSError):
                await h.open(transport, realm=AUTH_REALM, auth=_ticket("ticket-user"),
                             tls=_tls(router), listener="plain")
            assert not h.clients[-1].is_attached()
            # both ports serve their own kind
            await _still_serves(h, transport)
            await _still_serves(h, transport, tls=_tls(router))

    run(main())


def test_cryptosign_channel_binding_over_tls(router, transport):
    async def main():
        async with Harness(router) as h:
            # tls-unique (which TLS 1.3 lacks) is refused, at HELLO
            await _aborted(h, transport, AUTH_FAILED, realm=AUTH_REALM,
                           auth=AuthCryptoSign(privkey=_hex_private(SIGNER_KEY)),
                           authextra={"channel_binding": "tls-unique"}, tls=_tls(router))
            assert h.clients[-1].challenges == []
            # without channel binding, cryptosign works over TLS
            s = await h.open(transport, realm=AUTH_REALM, tls=_tls(router),
                             auth=AuthCryptoSign(privkey=_hex_private(SIGNER_KEY)))
            _welcomed(s, "signer", "user", "cryptosign")

    run(main())
