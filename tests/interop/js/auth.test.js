'use strict';
// Authentication and authorization interop tests: Switchyard driven by
// autobahn-js (WebSocket with JSON, MessagePack and CBOR, RawSocket with JSON
// on TCP and on a Unix socket) and by wampy (WebSocket with JSON, MessagePack
// and CBOR), on the dedicated listeners and on the universal ones, logging in
// with WAMP-Ticket, WAMP-CRA (plain and salted secrets) and WAMP-Cryptosign,
// and acting under a restricted role; and the same clients over TLS (wss://,
// on the TLS listeners the file adds), with client
// certificates (authmethod "tls") and Cryptosign bound to the TLS channel
// (tls-exporter). Switchyard only: the realms, principals, roles and TLS
// listeners are switchyard configuration, appended to the usual config
// (lib/router.js). Every secret is made up when the test process starts; the
// config gets what `switchyard secret ...` derives from it, the Ed25519 key
// pair is made here with the tweetnacl that autobahn-js bundles, and the CA
// and certificates with the openssl CLI (lib/tls.js).
//
// Same environment variables as interop.test.js (SWITCHYARD_BIN, SHARDS,
// SERIALIZERS, LISTENERS, INTEROP_VERBOSE); with ROUTER=crossbar or
// ROUTER_URL the file is skipped. OPENSSL_BIN: the openssl executable
// (default `openssl` on PATH); without one, the TLS tests are skipped.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');

const wamp = require('./lib/wamp');
const wampy = require('./lib/wampy');
const { show, within, Collector, rejectionOf } = require('./lib/util');
const { newSecret, ticketLine, wampcraLine } = require('./lib/principals');
const { SERIALIZERS, kind, uriBase, describeEachRouter } = require('./lib/suite');
const { opensslMissing, tlsMaterial, RecordingAgent } = require('./lib/tls');

const { autobahn, ConnectError } = wamp;
const nacl = autobahn.nacl; // tweetnacl, as autobahn-js bundles it

const TEST_TIMEOUT = 30000; // per test; only a bound against hangs, never asserted
const WAIT = 10000; // per awaited step inside a test

// A fresh URI prefix per test (see uriBase); letters only in the tag (wampy's
// URI check).
const base = uriBase('auth');
// A fresh URI under the restricted role's prefix.
const RESTRICTED_PREFIX = 'com.example.restricted.';
const restrictedUri = (name) => base(name).replace(/^com\.example\./, RESTRICTED_PREFIX);
// A fresh topic the restricted role may publish to (a wildcard rule,
// com.example.board..news).
const boardTopic = () => `com.example.board.${base('x').split('.')[2]}.news`;

// AUTH_REALM: no anonymous sessions; roles (so enforced): `user` may do
// everything under com.example. and call the router's wamp. procedures;
// `restricted` may call and subscribe under com.example.restricted. and
// publish to com.example.board..news (wildcard), nothing else.
// OPEN_REALM: anonymous sessions allowed, one ticket principal, no roles.
const AUTH_REALM = 'com.example.auth';
const OPEN_REALM = 'com.example.open';

const hex = (bytes) => Buffer.from(bytes).toString('hex');

// The principals, with their secrets.
const P = {
  ticket: { authid: 'com.example.tess', role: 'user', ticket: newSecret() },
  restricted: { authid: 'com.example.rick', role: 'restricted', ticket: newSecret() },
  craPlain: { authid: 'com.example.craig', role: 'user', secret: newSecret() },
  craSalted: {
    authid: 'com.example.sally',
    role: 'user',
    secret: newSecret(),
    salt: newSecret().slice(0, 16),
    iterations: 100,
    keylen: 32,
  },
  // WAMP-Ticket and WAMP-CRA, for the method-order test
  both: { authid: 'com.example.bo', role: 'user', ticket: newSecret(), secret: newSecret() },
  cryptosign: { authid: 'com.example.cyd', role: 'user', keyPair: nacl.sign.keyPair() },
  open: { authid: 'com.example.olive', role: 'member', ticket: newSecret() },
  // `tls = true`: a client certificate with this CN logs in (authmethod
  // "tls"); and a ticket, for the method-order test
  tls: { authid: 'com.example.tobias', role: 'user', ticket: newSecret() },
};

// TLS: why the TLS tests are skipped (no openssl), or null. The client
// certificates (subject CN): `tobias` is P.tls; `tess` is P.ticket, a
// principal without `tls = true`; `stranger` is nobody's; `forged` has P.tls's
// CN but another CA signed it.
const NO_TLS = kind === 'switchyard' ? opensslMissing() : 'switchyard only';
const TLS_CLIENTS = { tobias: P.tls.authid, tess: P.ticket.authid, stranger: 'com.example.stranger' };
const TLS_ROGUE_CLIENTS = { forged: P.tls.authid };
const tls = () => tlsMaterial({ clients: TLS_CLIENTS, rogueClients: TLS_ROGUE_CLIENTS });

// Two TLS WebSocket listeners on AUTH_REALM's router (ports: the router's
// info.tls): `wss` asks for a client certificate (client_ca) and takes
// clients without one; `mtls` requires one. Both serve the server's
// certificate chain (leaf, then the test CA).
async function tlsListeners(ports) {
  const m = await tls();
  const [wss, mtls] = await ports(2);
  const listener = (port, requireCert) => [
    '[[listener]]',
    'type = "websocket"',
    `bind = "127.0.0.1:${port}"`,
    'path = "/ws"',
    '[listener.tls]',
    `certificate = ${JSON.stringify(m.server.chain)}`,
    `key = ${JSON.stringify(m.server.key)}`,
    `client_ca = ${JSON.stringify(m.ca)}`,
    `require_client_certificate = ${requireCert}`,
    '',
  ];
  return { toml: [...listener(wss, false), ...listener(mtls, true)].join('\n'), ports: { wss, mtls } };
}

async function authConfig(bin, { ports }) {
  const principal = (p, ...lines) => ['[[realm.principal]]', `authid = "${p.authid}"`, `role = "${p.role}"`, ...lines];
  const listeners = NO_TLS ? { toml: '', ports: null } : await tlsListeners(ports);
  const toml = [
    '[limits]',
    'auth_failures_before_backoff = 1000  # the tests fail logins on purpose',
    '',
    '[[realm]]',
    `name = "${AUTH_REALM}"`,
    'anonymous = false',
    ...principal(P.ticket, await ticketLine(bin, P.ticket.ticket)),
    ...principal(P.restricted, await ticketLine(bin, P.restricted.ticket)),
    ...principal(P.craPlain, `wampcra_secret = "${P.craPlain.secret}"`),
    ...principal(P.craSalted, await wampcraLine(bin, P.craSalted.secret, P.craSalted)),
    ...principal(P.both, await ticketLine(bin, P.both.ticket), `wampcra_secret = "${P.both.secret}"`),
    ...principal(P.cryptosign, `cryptosign_keys = ["${hex(P.cryptosign.keyPair.publicKey)}"]`),
    ...principal(P.tls, 'tls = true', await ticketLine(bin, P.tls.ticket)),
    '[[realm.role]]',
    'name = "user"',
    '[[realm.role.permission]]',
    'uri = "com.example."',
    'match = "prefix"',
    'allow = ["call", "register", "publish", "subscribe"]',
    '[[realm.role.permission]]',
    'uri = "wamp."',
    'match = "prefix"',
    'allow = ["call"]',
    '[[realm.role]]',
    'name = "restricted"',
    '[[realm.role.permission]]',
    `uri = "${RESTRICTED_PREFIX}"`,
    'match = "prefix"',
    'allow = ["call", "subscribe"]',
    '[[realm.role.permission]]',
    'uri = "com.example.board..news"',
    'match = "wildcard"',
    'allow = ["publish"]',
    '',
    '[[realm]]',
    `name = "${OPEN_REALM}"`,
    ...principal(P.open, await ticketLine(bin, P.open.ticket)),
    '',
    listeners.toml,
  ].join('\n');
  return { toml, info: { tls: listeners.ports } };
}

function assertWelcome(details, { authid, authrole, authmethod }, what) {
  assert.deepEqual(
    { authid: details.authid, authrole: details.authrole, authmethod: details.authmethod },
    { authid, authrole, authmethod },
    `${what}: WELCOME.Details ${show(details)}`,
  );
}

// ---------------------------------------------------------------------------
// autobahn-js

// A login for connect() in lib/wamp.js: its options, and the CHALLENGEs that
// onchallenge saw ({ method, extra }). answer(method, extra) gives the
// AUTHENTICATE signature.
function login(authid, authmethods, answer, more = {}) {
  const challenges = [];
  const opts = {
    realm: AUTH_REALM,
    authid,
    authmethods,
    onchallenge: (session, method, extra) => {
      challenges.push({ method, extra });
      return answer(method, extra);
    },
    ...more,
  };
  return { opts, challenges };
}

const ticketLogin = (authid, ticket, more) => login(authid, ['ticket'], () => ticket, more);
const craLogin = (authid, secret, more) =>
  login(
    authid,
    ['wampcra'],
    (method, extra) => {
      const key = extra.salt ? autobahn.auth_cra.derive_key(secret, extra.salt, extra.iterations, extra.keylen) : secret;
      return autobahn.auth_cra.sign(key, extra.challenge);
    },
    more,
  );
// Cryptosign: HELLO.Details.authextra.pubkey names the key; sign(extra)
// gives the signature (default: autobahn's sign_challenge, signature and
// challenge, 96 bytes in hex).
const cryptosignLogin = (authid, keyPair, sign = (extra) => autobahn.auth_cryptosign.sign_challenge(keyPair, extra)) =>
  login(authid, ['cryptosign'], (method, extra) => sign(extra), {
    authextra: { pubkey: autobahn.auth_cryptosign.public_key(keyPair) },
  });

function assertAbort(err, reason, what) {
  assert.ok(err instanceof ConnectError, `${what}: expected the connection to close before WELCOME, got ${err && (err.stack || show(err))}`);
  assert.equal(err.details.reason, reason, `${what}: ABORT ${show(err.details)}`);
}

function assertWampError(err, uri, what) {
  assert.ok(err instanceof autobahn.Error, `${what}: expected autobahn.Error, got ${err && (err.stack || show(err))}`);
  assert.equal(err.error, uri, `${what}: error URI`);
}

async function closeChecked(h, what) {
  await within(wamp.close(h), WAIT, `${what} to close`);
  assert.equal(h.session.isOpen, false, `${what}: session still open after close`);
  assert.deepEqual(h.internalErrors.map((e) => String(e.err)), [], `${what}: autobahn reported internal (protocol) errors`);
}

// open(opts): a promise of a connect() handle on one transport and serializer.
function autobahnSuite(open) {
  const t = { timeout: TEST_TIMEOUT };
  const failed = (l, what) => rejectionOf(open(l.opts), WAIT, what);

  it('WAMP-Ticket: a principal logs in; WELCOME names its authid, authrole and authmethod', t, async () => {
    const l = ticketLogin(P.ticket.authid, P.ticket.ticket);
    const h = await open(l.opts);
    assert.deepEqual(l.challenges.map((c) => c.method), ['ticket'], 'one CHALLENGE, for ticket');
    assertWelcome(h.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'ticket login');
    const info = await within(h.session.call('wamp.session.get', [h.session.id]), WAIT, 'wamp.session.get');
    assert.equal(info.authid, P.ticket.authid, 'wamp.session.get authid');
    assert.equal(info.authrole, 'user', 'wamp.session.get authrole');
    await closeChecked(h, 'ticket session');
  });

  it('WAMP-Ticket: a wrong ticket gets ABORT wamp.error.authentication_failed', t, async () => {
    const l = ticketLogin(P.ticket.authid, `${P.ticket.ticket}x`);
    assertAbort(await failed(l, 'login with a wrong ticket'), 'wamp.error.authentication_failed', 'wrong ticket');
    assert.deepEqual(l.challenges.map((c) => c.method), ['ticket']);
  });

  it('WAMP-Ticket: an unknown authid gets the same CHALLENGE, then ABORT wamp.error.authentication_failed', t, async () => {
    const l = ticketLogin('com.example.nobody', P.ticket.ticket);
    assertAbort(await failed(l, 'login as an unknown authid'), 'wamp.error.authentication_failed', 'unknown authid');
    assert.deepEqual(l.challenges.map((c) => c.method), ['ticket'], 'the router challenges an unknown authid as a known one');
  });

  it('WAMP-CRA, plain secret: the challenge names the session to be; autobahn.auth_cra.sign logs in', t, async () => {
    const l = craLogin(P.craPlain.authid, P.craPlain.secret);
    const h = await open(l.opts);
    assert.equal(l.challenges.length, 1);
    const { method, extra } = l.challenges[0];
    assert.equal(method, 'wampcra');
    assert.equal(extra.salt, undefined, 'no salt for a plain secret');
    const challenge = JSON.parse(extra.challenge);
    assert.equal(challenge.authid, P.craPlain.authid, `challenge ${extra.challenge}`);
    assert.equal(challenge.authmethod, 'wampcra');
    assert.equal(challenge.session, h.session.id, 'the challenge names the session id WELCOME gives');
    assertWelcome(h.details, { authid: P.craPlain.authid, authrole: 'user', authmethod: 'wampcra' }, 'wampcra login');
    await closeChecked(h, 'wampcra session');
  });

  it('WAMP-CRA, plain secret: a wrong secret gets ABORT wamp.error.authentication_failed', t, async () => {
    const l = craLogin(P.craPlain.authid, `${P.craPlain.secret}x`);
    assertAbort(await failed(l, 'wampcra with a wrong secret'), 'wamp.error.authentication_failed', 'wrong secret');
    assert.equal(l.challenges.length, 1);
  });

  it('WAMP-CRA, salted secret: CHALLENGE carries salt, iterations, keylen; derive_key and sign log in', t, async () => {
    const l = craLogin(P.craSalted.authid, P.craSalted.secret);
    const h = await open(l.opts);
    const { extra } = l.challenges[0];
    assert.deepEqual(
      { salt: extra.salt, iterations: extra.iterations, keylen: extra.keylen },
      { salt: P.craSalted.salt, iterations: P.craSalted.iterations, keylen: P.craSalted.keylen },
      'CHALLENGE.Extra salt parameters',
    );
    assertWelcome(h.details, { authid: P.craSalted.authid, authrole: 'user', authmethod: 'wampcra' }, 'salted wampcra login');
    await closeChecked(h, 'salted wampcra session');
  });

  it('WAMP-CRA, salted secret: a wrong secret gets ABORT wamp.error.authentication_failed', t, async () => {
    const l = craLogin(P.craSalted.authid, `${P.craSalted.secret}x`);
    assertAbort(await failed(l, 'salted wampcra with a wrong secret'), 'wamp.error.authentication_failed', 'wrong secret');
  });

  it('WAMP-Cryptosign: a listed key logs in with autobahn.auth_cryptosign (signature and challenge)', t, async () => {
    const l = cryptosignLogin(undefined, P.cryptosign.keyPair);
    const h = await open(l.opts);
    const { method, extra } = l.challenges[0];
    assert.equal(method, 'cryptosign');
    assert.match(extra.challenge, /^[0-9a-f]{64}$/, 'CHALLENGE.Extra.challenge: 32 bytes in hex');
    assert.equal(extra.channel_binding, null, 'CHALLENGE.Extra.channel_binding');
    // no authid in HELLO: the key's principal
    assertWelcome(h.details, { authid: P.cryptosign.authid, authrole: 'user', authmethod: 'cryptosign' }, 'cryptosign login');
    await closeChecked(h, 'cryptosign session');
  });

  it('WAMP-Cryptosign: the 64-byte signature alone logs in too, with the authid in HELLO', t, async () => {
    const { keyPair } = P.cryptosign;
    const l = cryptosignLogin(P.cryptosign.authid, keyPair, (extra) =>
      hex(nacl.sign.detached(Buffer.from(extra.challenge, 'hex'), keyPair.secretKey)),
    );
    const h = await open(l.opts);
    assertWelcome(h.details, { authid: P.cryptosign.authid, authrole: 'user', authmethod: 'cryptosign' }, 'cryptosign login');
    await closeChecked(h, 'cryptosign session');
  });

  it('WAMP-Cryptosign: a key that is not listed, or a signature by another key, gets ABORT wamp.error.authentication_failed', t, async () => {
    const other = nacl.sign.keyPair();
    const unlisted = cryptosignLogin(undefined, other);
    assertAbort(await failed(unlisted, 'cryptosign with an unlisted key'), 'wamp.error.authentication_failed', 'unlisted key');
    const forged = cryptosignLogin(undefined, P.cryptosign.keyPair, (extra) => autobahn.auth_cryptosign.sign_challenge(other, extra));
    assertAbort(await failed(forged, 'cryptosign signed by another key'), 'wamp.error.authentication_failed', 'forged signature');
    assert.equal(forged.challenges.length, 1, 'the listed key is challenged');
    const wrongAuthid = cryptosignLogin(P.ticket.authid, P.cryptosign.keyPair);
    assertAbort(await failed(wrongAuthid, 'cryptosign as another authid'), 'wamp.error.authentication_failed', "another principal's authid");
  });

  it('the first of HELLO.authmethods that the realm offers is used, in the client order', t, async () => {
    const answer = (method) => (method === 'ticket' ? P.both.ticket : null);
    const sign = (method, extra) => (method === 'ticket' ? P.both.ticket : autobahn.auth_cra.sign(P.both.secret, extra.challenge));
    // wamp-scram is not offered (no principal has it), nor tls (no client
    // certificate on this connection)
    const a = login(P.both.authid, ['wamp-scram', 'tls', 'ticket', 'wampcra'], answer);
    const ha = await open(a.opts);
    assert.deepEqual(a.challenges.map((c) => c.method), ['ticket']);
    assertWelcome(ha.details, { authid: P.both.authid, authrole: 'user', authmethod: 'ticket' }, 'ticket first');
    const b = login(P.both.authid, ['wampcra', 'ticket'], sign);
    const hb = await open(b.opts);
    assert.deepEqual(b.challenges.map((c) => c.method), ['wampcra']);
    assertWelcome(hb.details, { authid: P.both.authid, authrole: 'user', authmethod: 'wampcra' }, 'wampcra first');
    // anonymous is not offered on this realm: the next method is used
    const c = login(P.ticket.authid, ['anonymous', 'ticket'], () => P.ticket.ticket);
    const hc = await open(c.opts);
    assertWelcome(hc.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'anonymous skipped');
    for (const h of [ha, hb, hc]) await closeChecked(h, 'session');
  });

  it('none of the methods asked for offered: ABORT wamp.error.no_auth_method', t, async () => {
    for (const authmethods of [undefined, ['anonymous'], ['wamp-scram'], ['tls'], ['com.example.method']]) {
      const l = login(authmethods ? P.ticket.authid : undefined, authmethods, () => {
        throw new Error('no CHALLENGE expected');
      });
      const err = await failed(l, `login with ${show(authmethods)}`);
      assertAbort(err, 'wamp.error.no_auth_method', `authmethods ${show(authmethods)}`);
      assert.deepEqual(l.challenges, [], 'no CHALLENGE');
    }
  });

  it('anonymous: the router names the session anonymous-<session id>, whatever authid HELLO asks for', t, async () => {
    const plain = await open({ realm: OPEN_REALM });
    const asking = await open({ realm: OPEN_REALM, authid: 'com.example.chosen', authmethods: ['anonymous'] });
    for (const h of [plain, asking]) {
      assertWelcome(h.details, { authid: `anonymous-${h.session.id}`, authrole: 'anonymous', authmethod: 'anonymous' }, 'anonymous');
    }
    const info = await within(plain.session.call('wamp.session.get', [asking.session.id]), WAIT, 'wamp.session.get');
    assert.equal(info.authid, `anonymous-${asking.session.id}`, 'wamp.session.get authid');
    // the client's order decides between anonymous and ticket
    const ticketFirst = ticketLogin(P.open.authid, P.open.ticket, { realm: OPEN_REALM, authmethods: ['ticket', 'anonymous'] });
    const ht = await open(ticketFirst.opts);
    assertWelcome(ht.details, { authid: P.open.authid, authrole: 'member', authmethod: 'ticket' }, 'ticket before anonymous');
    const anonFirst = ticketLogin(P.open.authid, P.open.ticket, { realm: OPEN_REALM, authmethods: ['anonymous', 'ticket'] });
    const hn = await open(anonFirst.opts);
    assertWelcome(hn.details, { authid: `anonymous-${hn.session.id}`, authrole: 'anonymous', authmethod: 'anonymous' }, 'anonymous before ticket');
    assert.deepEqual(anonFirst.challenges, [], 'no CHALLENGE for anonymous');
    // a failed ticket does not fall back to anonymous
    const wrong = ticketLogin(P.open.authid, 'wrong', { realm: OPEN_REALM, authmethods: ['ticket', 'anonymous'] });
    assertAbort(await failed(wrong, 'wrong ticket before anonymous'), 'wamp.error.authentication_failed', 'no fallback');
    for (const h of [plain, asking, ht, hn]) await closeChecked(h, 'session');
  });

  // Sessions for the authorization tests: a `user` and a `restricted` one.
  const openUser = () => open(ticketLogin(P.ticket.authid, P.ticket.ticket).opts);
  const openRestricted = async () => {
    const h = await open(ticketLogin(P.restricted.authid, P.restricted.ticket).opts);
    assertWelcome(h.details, { authid: P.restricted.authid, authrole: 'restricted', authmethod: 'ticket' }, 'restricted login');
    return h;
  };

  it('authorization: a restricted role calls and subscribes under its prefix, and publishes where a wildcard rule lets it', t, async () => {
    const user = await openUser();
    const rick = await openRestricted();
    const proc = restrictedUri('proc');
    const topic = restrictedUri('topic');
    await within(user.session.register(proc, (args) => ['got', ...args]), WAIT, 'REGISTERED (user)');
    const res = await within(rick.session.call(proc, [1, 'two']), WAIT, 'CALL under the prefix');
    assert.deepEqual(res, ['got', 1, 'two']);
    const events = new Collector();
    await within(rick.session.subscribe(topic, events.handler), WAIT, 'SUBSCRIBED under the prefix');
    await within(user.session.publish(topic, ['hello'], {}, { acknowledge: true }), WAIT, 'PUBLISHED (user)');
    await events.until(1, WAIT, 'the event');
    assert.deepEqual(events.items.map((e) => e.args), [['hello']]);
    const board = boardTopic();
    const boardEvents = new Collector();
    await within(user.session.subscribe(board, boardEvents.handler), WAIT, 'SUBSCRIBED (user) to the board');
    const pub = await within(rick.session.publish(board, ['news'], {}, { acknowledge: true }), WAIT, 'PUBLISHED by restricted');
    assert.ok(Number.isSafeInteger(pub.id), `publication id ${show(pub)}`);
    await boardEvents.until(1, WAIT, 'the board event');
    assert.deepEqual(boardEvents.items.map((e) => e.args), [['news']]);
    await closeChecked(rick, 'restricted');
    await closeChecked(user, 'user');
  });

  it('authorization: a restricted role gets wamp.error.not_authorized for register, publish, call and subscribe elsewhere, and wamp.session.count', t, async () => {
    const user = await openUser();
    const rick = await openRestricted();
    const elsewhere = base('elsewhere');
    await within(user.session.register(elsewhere, () => 'reached'), WAIT, 'REGISTERED (user)');
    const denied = [
      ['REGISTER under its prefix', rick.session.register(restrictedUri('mine'), () => null)],
      ['REGISTER elsewhere', rick.session.register(base('reg'), () => null)],
      ['PUBLISH (acknowledge) under its prefix', rick.session.publish(restrictedUri('t'), [], {}, { acknowledge: true })],
      ['PUBLISH (acknowledge) elsewhere', rick.session.publish(base('t'), [], {}, { acknowledge: true })],
      ['PUBLISH (acknowledge) to a board topic the wildcard does not match', rick.session.publish(boardTopic().replace(/news$/, 'gossip'), [], {}, { acknowledge: true })],
      ['CALL elsewhere', rick.session.call(elsewhere)],
      ['SUBSCRIBE elsewhere', rick.session.subscribe(base('t'), () => {})],
      ['CALL wamp.session.count', rick.session.call('wamp.session.count')],
      ['CALL wamp.session.list', rick.session.call('wamp.session.list')],
    ];
    for (const [what, p] of denied) assertWampError(await rejectionOf(p, WAIT, what), 'wamp.error.not_authorized', what);
    // the user role may call the router's procedures and its own procedure
    const count = await within(user.session.call('wamp.session.count'), WAIT, 'wamp.session.count (user)');
    assert.ok(Number.isInteger(count) && count >= 2, `wamp.session.count: ${show(count)}`);
    assert.equal(await within(user.session.call(elsewhere), WAIT, 'CALL (user)'), 'reached');
    assert.equal(rick.session.isOpen, true, 'the restricted session is still open');
    await closeChecked(rick, 'restricted');
    await closeChecked(user, 'user');
  });

  it('authorization: a PUBLISH without acknowledge that the role may not do is dropped; the next allowed one arrives first', t, async () => {
    const user = await openUser();
    const rick = await openRestricted();
    const forbidden = base('forbidden');
    const board = boardTopic();
    const events = new Collector((args, kwargs, details) => ({ args, kwargs, details, topic: details.topic }));
    await within(user.session.subscribe(forbidden, events.handler), WAIT, 'SUBSCRIBED forbidden');
    await within(user.session.subscribe(board, events.handler), WAIT, 'SUBSCRIBED board');
    rick.session.publish(forbidden, ['dropped']);
    await within(rick.session.publish(board, ['sentinel'], {}, { acknowledge: true }), WAIT, 'PUBLISHED sentinel');
    await events.until(1, WAIT, 'the sentinel');
    assert.deepEqual(events.items.map((e) => e.args), [['sentinel']], 'the forbidden event did not arrive before the sentinel');
    assert.equal(rick.session.isOpen, true, 'the restricted session is still open');
    await closeChecked(rick, 'restricted');
    await closeChecked(user, 'user');
  });
}

// ---------------------------------------------------------------------------
// wampy

let wampyAuth = null; // wampy's WAMP-CRA and Cryptosign plugins ({ cra, cryptosign })
async function wampyPlugins() {
  if (!wampyAuth) {
    // wampy/wampcra.js is an ES module (top-level await): import(), not require()
    wampyAuth = { cra: await import('wampy/wampcra.js'), cryptosign: require('wampy/cryptosign.js') };
  }
  return wampyAuth;
}

function assertWampyAbort(err, reason, what) {
  assert.ok(err instanceof wampy.Errors.AbortError, `${what}: expected a wampy AbortError, got ${err && (err.stack || show(err))}`);
  assert.equal(err.errorUri, reason, `${what}: ABORT ${show(err)}`);
}

function assertWampyError(err, cls, uri, what) {
  assert.ok(err instanceof wampy.Errors[cls], `${what}: expected a wampy ${cls}, got ${err && (err.stack || show(err))}`);
  assert.equal(err.errorUri, uri, `${what}: error URI`);
}

async function closeWampy(h, what) {
  await within(wampy.close(h), WAIT, `${what} to close`);
  assert.ok(!h.client.getSessionId(), `${what}: session still open after disconnect()`);
  assert.deepEqual(h.errors.map(String), [], `${what}: wampy reported errors`);
}

// The CHALLENGE a wampy handle got, and the AUTHENTICATE it sent.
function exchange(h) {
  return {
    challenges: h.tap.received.filter((m) => m[0] === wampy.MSG.CHALLENGE),
    authenticates: h.tap.sent.filter((m) => m[0] === wampy.MSG.AUTHENTICATE),
  };
}

function wampySuite(url, ser) {
  const t = { timeout: TEST_TIMEOUT };
  const open = (opts) => within(wampy.connect(url(), { serializer: ser, realm: AUTH_REALM, ...opts }), WAIT, `wampy ${ser} session to open`);
  const failed = (opts, what) => rejectionOf(wampy.connect(url(), { serializer: ser, realm: AUTH_REALM, ...opts }), WAIT, what);
  const ticketAuth = (authid, ticket) => ({ authid, authmethods: ['ticket'], onChallenge: (method) => (method === 'ticket' ? ticket : null) });
  const craAuth = async (authid, secret) => ({
    authid,
    authmethods: ['wampcra'],
    authMode: 'auto',
    authPlugins: { wampcra: (await wampyPlugins()).cra.sign(secret) },
  });
  const subscribe = (h, topic, onEvent) => wampy.subscribe(h, topic, onEvent);

  it('WAMP-Ticket (onChallenge): a principal logs in; WELCOME names its authid, authrole and authmethod', t, async () => {
    const h = await open({ auth: ticketAuth(P.ticket.authid, P.ticket.ticket) });
    assertWelcome(h.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'wampy ticket login');
    const { challenges, authenticates } = exchange(h);
    assert.deepEqual(challenges.map((m) => m[1]), ['ticket'], 'one CHALLENGE, for ticket');
    assert.deepEqual(authenticates.map((m) => m[1]), [P.ticket.ticket], 'AUTHENTICATE carries the ticket');
    await closeWampy(h, 'ticket session');
  });

  it('WAMP-Ticket: a wrong ticket or an unknown authid gets ABORT wamp.error.authentication_failed', t, async () => {
    const wrong = await failed({ auth: ticketAuth(P.ticket.authid, 'wrong') }, 'wrong ticket');
    assertWampyAbort(wrong, 'wamp.error.authentication_failed', 'wrong ticket');
    const unknown = await failed({ auth: ticketAuth('com.example.nobody', P.ticket.ticket) }, 'unknown authid');
    assertWampyAbort(unknown, 'wamp.error.authentication_failed', 'unknown authid');
  });

  it("WAMP-CRA with wampy's plugin (wampy/wampcra.js): plain and salted secrets log in", t, async () => {
    const plain = await open({ auth: await craAuth(P.craPlain.authid, P.craPlain.secret) });
    assertWelcome(plain.details, { authid: P.craPlain.authid, authrole: 'user', authmethod: 'wampcra' }, 'wampy wampcra');
    const salted = await open({ auth: await craAuth(P.craSalted.authid, P.craSalted.secret) });
    assertWelcome(salted.details, { authid: P.craSalted.authid, authrole: 'user', authmethod: 'wampcra' }, 'wampy salted wampcra');
    const [, method, extra] = exchange(salted).challenges[0];
    assert.equal(method, 'wampcra');
    assert.equal(extra.salt, P.craSalted.salt, 'CHALLENGE.Extra.salt');
    await closeWampy(plain, 'wampcra session');
    await closeWampy(salted, 'salted wampcra session');
  });

  it('WAMP-CRA: a wrong secret (plain or salted) gets ABORT wamp.error.authentication_failed', t, async () => {
    for (const p of [P.craPlain, P.craSalted]) {
      const err = await failed({ auth: await craAuth(p.authid, `${p.secret}x`) }, `wampcra ${p.authid} with a wrong secret`);
      assertWampyAbort(err, 'wamp.error.authentication_failed', `wrong secret for ${p.authid}`);
    }
  });

  it("WAMP-Cryptosign with wampy's plugin (wampy/cryptosign.js): a listed key logs in, another key does not", t, async () => {
    const { cryptosign } = await wampyPlugins();
    const csAuth = (keyPair, pubkey = keyPair.publicKey) => ({
      authid: P.cryptosign.authid,
      authmethods: ['cryptosign'],
      authextra: { pubkey: hex(pubkey) },
      authMode: 'auto',
      authPlugins: { cryptosign: cryptosign.sign(hex(keyPair.secretKey)) },
    });
    const h = await open({ auth: csAuth(P.cryptosign.keyPair) });
    assertWelcome(h.details, { authid: P.cryptosign.authid, authrole: 'user', authmethod: 'cryptosign' }, 'wampy cryptosign');
    const other = nacl.sign.keyPair();
    const forged = await failed({ auth: csAuth(other, P.cryptosign.keyPair.publicKey) }, 'cryptosign signed by another key');
    assertWampyAbort(forged, 'wamp.error.authentication_failed', 'forged signature');
    const unlisted = await failed({ auth: csAuth(other) }, 'cryptosign with an unlisted key');
    assertWampyAbort(unlisted, 'wamp.error.authentication_failed', 'unlisted key');
    await closeWampy(h, 'cryptosign session');
  });

  it('no credentials on a realm without anonymous: ABORT wamp.error.no_auth_method', t, async () => {
    const err = await failed({}, 'anonymous login');
    assertWampyAbort(err, 'wamp.error.no_auth_method', 'anonymous');
  });

  it('authorization: a restricted role succeeds under its prefix and gets wamp.error.not_authorized elsewhere', t, async () => {
    const user = await open({ auth: ticketAuth(P.ticket.authid, P.ticket.ticket) });
    const rick = await open({ auth: ticketAuth(P.restricted.authid, P.restricted.ticket) });
    assertWelcome(rick.details, { authid: P.restricted.authid, authrole: 'restricted', authmethod: 'ticket' }, 'restricted login');
    const proc = restrictedUri('proc');
    const topic = restrictedUri('topic');
    const elsewhere = base('elsewhere');
    await within(user.client.register(proc, ({ argsList }) => ({ argsList: ['got', ...argsList] })), WAIT, 'REGISTERED (user)');
    await within(user.client.register(elsewhere, () => ({ argsList: ['reached'] })), WAIT, 'REGISTERED (user) elsewhere');
    const res = await within(rick.client.call(proc, [1]), WAIT, 'CALL under the prefix');
    assert.deepEqual(res.argsList, ['got', 1]);
    const events = wampy.eventCollector();
    await within(subscribe(rick, topic, events.handler), WAIT, 'SUBSCRIBED under the prefix');
    await within(user.client.publish(topic, ['hello']), WAIT, 'PUBLISHED (user)');
    await events.until(1, WAIT, 'the event');
    assert.deepEqual(events.items.map((e) => e.args), [['hello']]);

    const denied = [
      ['REGISTER under its prefix', 'RegisterError', () => rick.client.register(restrictedUri('mine'), () => ({}))],
      ['PUBLISH elsewhere', 'PublishError', () => rick.client.publish(base('t'), ['x'])],
      ['CALL elsewhere', 'CallError', () => rick.client.call(elsewhere)],
      ['SUBSCRIBE elsewhere', 'SubscribeError', () => subscribe(rick, base('t'), () => {})],
      ['CALL wamp.session.count', 'CallError', () => rick.client.call('wamp.session.count')],
    ];
    for (const [what, cls, f] of denied) {
      assertWampyError(await rejectionOf(f(), WAIT, what), cls, 'wamp.error.not_authorized', what);
    }
    // a round trip after the refusals: still in session
    const again = await within(rick.client.call(proc, [2]), WAIT, 'CALL under the prefix again');
    assert.deepEqual(again.argsList, ['got', 2]);
    await closeWampy(rick, 'restricted');
    await closeWampy(user, 'user');
  });
}

// ---------------------------------------------------------------------------
// TLS (wss://): the two TLS listeners of tlsListeners(), AUTH_REALM

// The wss:// URL of a TLS listener ('wss' or 'mtls').
function wssUrl(ctx, listener = 'wss') {
  const ports = ctx.router().info.tls;
  assert.ok(ports, 'the router has no TLS listeners');
  return `wss://127.0.0.1:${ports[listener]}/ws`;
}

// tls.connect options: trust the test CA (unless ca: false), present the
// client certificate `client` (a TLS_CLIENTS or TLS_ROGUE_CLIENTS name), and
// any more (servername).
async function tlsOptions({ ca = true, client, ...more } = {}) {
  const m = await tls();
  const c = client && m.clients[client];
  if (client && !c) throw new Error(`no client certificate ${client}`);
  return { ...(ca ? { ca: m.caPem } : {}), ...(c ? { cert: c.certPem, key: c.keyPem } : {}), ...more };
}

const noChallenge = () => {
  throw new Error('no CHALLENGE expected');
};

// The codes Node gives a server certificate that does not verify against its
// trust store (the chain ends in the test CA, which is not in Node's).
const UNTRUSTED = ['SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'];

function assertTlsRefused(agent, codes, what) {
  const got = agent.errors.map((e) => e.code);
  assert.ok(got.some((c) => codes.includes(c)), `${what}: TLS errors ${show(got)} (${agent.errors.map(String).join('; ')}), expected one of ${show(codes)}`);
}

// Sends `request` over plain TCP to 127.0.0.1:port; resolves to all it got
// back once the other side closed.
function plainReply(port, request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const sock = net.connect({ host: '127.0.0.1', port: Number(port) }, () => sock.write(request));
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

// a XOR b (equal lengths)
const xor = (a, b) => Buffer.from(a.map((x, i) => x ^ b[i]));

function autobahnTlsSuite(ctx, ser) {
  const t = { timeout: TEST_TIMEOUT };
  // An https.Agent for one connection (lib/tls.js), with tlsOptions(o).
  const agentFor = async (o) => new RecordingAgent(await tlsOptions(o));
  const connectWss = (agent, opts, listener = 'wss') =>
    wamp.connect(wssUrl(ctx, listener), { serializer: ser, transport: { type: 'websocket', agent }, ...opts });
  // A session over wss:// ({ h, agent }); tlsOpts: tlsOptions' and `listener`.
  const open = async (opts, { listener, ...tlsOpts } = {}) => {
    const agent = await agentFor(tlsOpts);
    const h = await within(connectWss(agent, opts, listener), WAIT, `wss ${ser} session to open`);
    return { h, agent };
  };
  // A login over wss:// that must fail: { err, agent }.
  const failed = async (opts, { listener, ...tlsOpts } = {}, what) => {
    const agent = await agentFor(tlsOpts);
    return { err: await rejectionOf(connectWss(agent, opts, listener), WAIT, what), agent };
  };
  const openPlain = (opts) => within(wamp.connect(ctx.url(), { serializer: ser, ...opts }), WAIT, `websocket ${ser} session to open`);
  const ticketUser = () => ticketLogin(P.ticket.authid, P.ticket.ticket);

  it("the server's certificate chain verifies against the test CA, for 127.0.0.1 and for localhost; WAMP-Ticket logs in; traffic crosses to a plain WebSocket session", t, async () => {
    const l = ticketUser();
    const { h, agent } = await open(l.opts);
    assertWelcome(h.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'ticket login over wss');
    assert.deepEqual(l.challenges.map((c) => c.method), ['ticket']);
    const sock = agent.socket();
    assert.equal(sock.authorized, true, `server certificate not verified: ${sock.authorizationError}`);
    assert.ok(['TLSv1.3', 'TLSv1.2'].includes(sock.getProtocol()), `protocol ${sock.getProtocol()}`);
    const peer = sock.getPeerCertificate(true);
    assert.equal(peer.subject.CN, 'localhost', 'server certificate subject');
    assert.equal(peer.issuer.CN, 'Switchyard interop test CA', 'server certificate issuer');
    assert.equal(peer.subjectaltname, 'DNS:localhost, IP Address:127.0.0.1');
    assert.equal(peer.ca, false, 'the server certificate is a leaf');
    // by name: SNI localhost, checked against the DNS name in subjectAltName
    const byName = await open(ticketUser().opts, { servername: 'localhost' });
    assert.equal(byName.agent.socket().authorized, true, 'verified as localhost');
    assert.equal(byName.agent.socket().servername, 'localhost');

    const plain = await openPlain(ticketUser().opts);
    const proc = base('tlsecho');
    await within(h.session.register(proc, (args, kwargs) => ['wss', ...args, kwargs]), WAIT, 'REGISTERED (wss)');
    assert.deepEqual(await within(plain.session.call(proc, [1, 'zwei'], { k: [true] }), WAIT, 'CALL (plain) to the wss callee'), ['wss', 1, 'zwei', { k: [true] }]);
    const topic = base('tlstopic');
    const events = new Collector();
    await within(h.session.subscribe(topic, events.handler), WAIT, 'SUBSCRIBED (wss)');
    await within(plain.session.publish(topic, ['grüße 🚀'], { n: 1 }, { acknowledge: true }), WAIT, 'PUBLISHED (plain)');
    await events.until(1, WAIT, 'the event over wss');
    assert.deepEqual(events.items.map((e) => [e.args, e.kwargs]), [[['grüße 🚀'], { n: 1 }]]);
    for (const s of [h, byName.h, plain]) await closeChecked(s, 'session');
  });

  it('WAMP-CRA with a plain and with a salted secret log in over wss://', t, async () => {
    const plain = await open(craLogin(P.craPlain.authid, P.craPlain.secret).opts);
    assertWelcome(plain.h.details, { authid: P.craPlain.authid, authrole: 'user', authmethod: 'wampcra' }, 'wampcra over wss');
    const sl = craLogin(P.craSalted.authid, P.craSalted.secret);
    const salted = await open(sl.opts);
    assert.equal(sl.challenges[0].extra.salt, P.craSalted.salt, 'CHALLENGE.Extra.salt');
    assertWelcome(salted.h.details, { authid: P.craSalted.authid, authrole: 'user', authmethod: 'wampcra' }, 'salted wampcra over wss');
    const wrong = await failed(craLogin(P.craPlain.authid, `${P.craPlain.secret}x`).opts, {}, 'wampcra with a wrong secret over wss');
    assertAbort(wrong.err, 'wamp.error.authentication_failed', 'wrong secret over wss');
    await closeChecked(plain.h, 'wampcra session');
    await closeChecked(salted.h, 'salted wampcra session');
  });

  it('a client that does not trust the test CA refuses the server certificate: no session', t, async () => {
    const { err, agent } = await failed(ticketUser().opts, { ca: false }, 'wss without the test CA');
    assert.ok(err instanceof ConnectError, `expected the connection to fail, got ${err && (err.stack || show(err))}`);
    assertTlsRefused(agent, UNTRUSTED, 'server certificate without the test CA');
  });

  it('plain ws:// to the TLS listener gets no session; the listener goes on serving TLS', t, async () => {
    const url = wssUrl(ctx).replace(/^wss:/, 'ws:');
    const err = await rejectionOf(wamp.connect(url, { serializer: ser, ...ticketUser().opts }), WAIT, 'ws:// to the TLS listener');
    assert.ok(err instanceof ConnectError, `expected the connection to fail, got ${err && (err.stack || show(err))}`);
    // what the router answers a plain HTTP request with: a TLS alert record
    // (content type 21), then it closes
    const reply = await within(plainReply(new URL(url).port, 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'), WAIT, 'the reply to plain HTTP');
    assert.equal(reply[0], 0x15, `reply ${reply.toString('hex')}: not a TLS alert record`);
    assert.equal(reply[5], 2, `reply ${reply.toString('hex')}: not a fatal alert`);
    const { h } = await open(ticketUser().opts);
    assertWelcome(h.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'wss after a plain attempt');
    await closeChecked(h, 'session');
  });

  it('authmethod tls: a client certificate whose CN is a `tls = true` principal logs in without a CHALLENGE', t, async () => {
    const a = login(undefined, ['tls'], noChallenge);
    const { h, agent } = await open(a.opts, { client: 'tobias' });
    assert.deepEqual(a.challenges, [], 'no CHALLENGE for tls');
    assertWelcome(h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'tls login');
    assert.equal(agent.socket().authorized, true);
    const info = await within(h.session.call('wamp.session.get', [h.session.id]), WAIT, 'wamp.session.get');
    assert.deepEqual({ authid: info.authid, authrole: info.authrole, authmethod: info.authmethod }, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' });
    // HELLO may name the authid, when it is the certificate's CN
    const b = login(P.tls.authid, ['tls'], noChallenge);
    const named = await open(b.opts, { client: 'tobias' });
    assertWelcome(named.h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'tls login with the authid in HELLO');
    await closeChecked(h, 'tls session');
    await closeChecked(named.h, 'tls session');
  });

  it("authmethod tls through autobahn's own option, tlsConfiguration { ca, cert, key }", t, async () => {
    const m = await tls();
    const c = m.clients.tobias;
    const a = login(undefined, ['tls'], noChallenge);
    const transport = { type: 'websocket', tlsConfiguration: { ca: m.caPem, cert: c.certPem, key: c.keyPem } };
    const h = await within(wamp.connect(wssUrl(ctx), { serializer: ser, transport, ...a.opts }), WAIT, 'wss session (tlsConfiguration)');
    assertWelcome(h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'tls login (tlsConfiguration)');
    await closeChecked(h, 'tls session');
  });

  it('a client certificate whose CN is not a `tls = true` principal gets ABORT wamp.error.authentication_failed', t, async () => {
    for (const client of ['tess', 'stranger']) {
      const a = login(undefined, ['tls'], noChallenge);
      const { err } = await failed(a.opts, { client }, `tls login with the certificate of ${TLS_CLIENTS[client]}`);
      assertAbort(err, 'wamp.error.authentication_failed', `certificate CN ${TLS_CLIENTS[client]}`);
      assert.deepEqual(a.challenges, [], 'no CHALLENGE');
    }
  });

  it("HELLO naming another authid than the certificate's CN gets ABORT wamp.error.authentication_failed", t, async () => {
    const a = login(P.ticket.authid, ['tls'], noChallenge);
    const { err } = await failed(a.opts, { client: 'tobias' }, 'tls login as another authid');
    assertAbort(err, 'wamp.error.authentication_failed', "authid other than the certificate's CN");
  });

  it('tls among other methods: the client order decides; without a client certificate tls is not on offer', t, async () => {
    const answer = (method) => (method === 'ticket' ? P.tls.ticket : null);
    const ticketFirst = login(P.tls.authid, ['ticket', 'tls'], answer);
    const ht = await open(ticketFirst.opts, { client: 'tobias' });
    assert.deepEqual(ticketFirst.challenges.map((c) => c.method), ['ticket']);
    assertWelcome(ht.h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'ticket' }, 'ticket before tls');
    const tlsFirst = login(P.tls.authid, ['tls', 'ticket'], answer);
    const hl = await open(tlsFirst.opts, { client: 'tobias' });
    assert.deepEqual(tlsFirst.challenges, []);
    assertWelcome(hl.h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'tls before ticket');
    // no client certificate
    const only = login(P.tls.authid, ['tls'], noChallenge);
    assertAbort((await failed(only.opts, {}, 'tls without a client certificate')).err, 'wamp.error.no_auth_method', 'tls without a certificate');
    assert.deepEqual(only.challenges, []);
    const fallback = login(P.tls.authid, ['tls', 'ticket'], answer);
    const hf = await open(fallback.opts);
    assert.deepEqual(fallback.challenges.map((c) => c.method), ['ticket']);
    assertWelcome(hf.h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'ticket' }, 'ticket after tls without a certificate');
    for (const s of [ht, hl, hf]) await closeChecked(s.h, 'session');
  });

  it('a client certificate that another CA signed fails the handshake, though its CN is a principal; the right one then logs in', t, async () => {
    const a = login(undefined, ['tls'], noChallenge);
    const { err, agent } = await failed(a.opts, { client: 'forged' }, 'tls with a certificate of another CA');
    assert.ok(err instanceof ConnectError, `expected the connection to fail, got ${err && (err.stack || show(err))}`);
    assert.deepEqual(a.challenges, []);
    // the router's alert: unknown_ca
    assertTlsRefused(agent, ['ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'], 'client certificate of another CA');
    const { h } = await open(login(undefined, ['tls'], noChallenge).opts, { client: 'tobias' });
    assertWelcome(h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'tls login after the refused one');
    await closeChecked(h, 'tls session');
  });

  it('require_client_certificate = true: no certificate, no session; with one, tls and ticket log in', t, async () => {
    const { err, agent } = await failed(ticketUser().opts, { listener: 'mtls' }, 'mtls listener without a certificate');
    assert.ok(err instanceof ConnectError, `expected the connection to fail, got ${err && (err.stack || show(err))}`);
    // the router's alert: certificate_required (TLS 1.3)
    assertTlsRefused(agent, ['ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'], 'no client certificate');
    const a = login(undefined, ['tls'], noChallenge);
    const withCert = await open(a.opts, { listener: 'mtls', client: 'tobias' });
    assertWelcome(withCert.h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'tls on the mtls listener');
    // a certificate that authenticates nobody still lets the client log in another way
    const ticket = await open(ticketUser().opts, { listener: 'mtls', client: 'tess' });
    assertWelcome(ticket.h.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'ticket on the mtls listener');
    await closeChecked(withCert.h, 'tls session');
    await closeChecked(ticket.h, 'ticket session');
  });

  it('WAMP-Cryptosign bound to the TLS channel (tls-exporter): the router and Node agree on the exporter', t, async () => {
    const { keyPair } = P.cryptosign;
    const boundLogin = (agent, form) => {
      const l = cryptosignLogin(undefined, keyPair, (extra) => {
        const message = xor(Buffer.from(extra.challenge, 'hex'), agent.exporter());
        const sig = hex(nacl.sign.detached(message, keyPair.secretKey));
        return form === 96 ? sig + hex(message) : sig;
      });
      l.opts.authextra.channel_binding = 'tls-exporter';
      return l;
    };
    for (const form of [64, 96]) {
      const agent = await agentFor();
      const l = boundLogin(agent, form);
      const h = await within(connectWss(agent, l.opts), WAIT, `cryptosign bound to tls-exporter (${form} bytes)`);
      assert.equal(l.challenges.length, 1);
      assert.equal(l.challenges[0].extra.channel_binding, 'tls-exporter', 'CHALLENGE.Extra.channel_binding');
      assertWelcome(h.details, { authid: P.cryptosign.authid, authrole: 'user', authmethod: 'cryptosign' }, `bound cryptosign (${form} bytes)`);
      await closeChecked(h, 'cryptosign session');
    }
    // a signature of the bare challenge (autobahn's sign_challenge) does not do
    const unbound = cryptosignLogin(undefined, keyPair);
    unbound.opts.authextra.channel_binding = 'tls-exporter';
    const { err } = await failed(unbound.opts, {}, 'cryptosign bound, signed without the binding');
    assertAbort(err, 'wamp.error.authentication_failed', 'signature without the channel binding');
    assert.equal(unbound.challenges.length, 1, 'the key is challenged');
    // over plain TCP there is no channel to bind to
    const plain = cryptosignLogin(undefined, keyPair);
    plain.opts.authextra.channel_binding = 'tls-exporter';
    const perr = await rejectionOf(wamp.connect(ctx.url(), { serializer: ser, ...plain.opts }), WAIT, 'tls-exporter over plain ws://');
    assertAbort(perr, 'wamp.error.authentication_failed', 'tls-exporter without TLS');
    assert.deepEqual(plain.challenges, [], 'no CHALLENGE');
  });
}

function wampyTlsSuite(ctx, wsClass, ser) {
  const t = { timeout: TEST_TIMEOUT };
  const start = async (opts, { listener, ...tlsOpts } = {}) =>
    wampy.connect(wssUrl(ctx, listener), { serializer: ser, realm: AUTH_REALM, tls: { ws: wsClass, options: await tlsOptions(tlsOpts) }, ...opts });
  const open = async (opts, tlsOpts) => within(start(opts, tlsOpts), WAIT, `wampy wss ${ser} session to open`);
  const failed = async (opts, tlsOpts, what) => rejectionOf(start(opts, tlsOpts), WAIT, what);
  const ticketAuth = (authid, ticket) => ({ authid, authmethods: ['ticket'], onChallenge: (method) => (method === 'ticket' ? ticket : null) });
  const tlsAuth = (authid) => ({ authid, authmethods: ['tls'], onChallenge: noChallenge });

  it('WAMP-Ticket over wss:// (the server verified against the test CA); a call crosses to a plain WebSocket session', t, async () => {
    const h = await open({ auth: ticketAuth(P.ticket.authid, P.ticket.ticket) });
    assertWelcome(h.details, { authid: P.ticket.authid, authrole: 'user', authmethod: 'ticket' }, 'wampy ticket over wss');
    assert.deepEqual(exchange(h).challenges.map((m) => m[1]), ['ticket']);
    const plain = await within(
      wampy.connect(ctx.url(), { serializer: ser, realm: AUTH_REALM, auth: ticketAuth(P.ticket.authid, P.ticket.ticket) }),
      WAIT,
      'wampy plain session',
    );
    const proc = base('tlsecho');
    await within(h.client.register(proc, ({ argsList }) => ({ argsList: ['wss', ...argsList] })), WAIT, 'REGISTERED (wss)');
    const res = await within(plain.client.call(proc, [1, 'zwei']), WAIT, 'CALL (plain) to the wss callee');
    assert.deepEqual(res.argsList, ['wss', 1, 'zwei']);
    const back = await within(h.client.call(proc, [3]), WAIT, 'CALL (wss)');
    assert.deepEqual(back.argsList, ['wss', 3]);
    await closeWampy(h, 'wss session');
    await closeWampy(plain, 'plain session');
  });

  it("WAMP-CRA with wampy's plugin over wss://", t, async () => {
    const auth = { authid: P.craSalted.authid, authmethods: ['wampcra'], authMode: 'auto', authPlugins: { wampcra: (await wampyPlugins()).cra.sign(P.craSalted.secret) } };
    const h = await open({ auth });
    assertWelcome(h.details, { authid: P.craSalted.authid, authrole: 'user', authmethod: 'wampcra' }, 'wampy salted wampcra over wss');
    await closeWampy(h, 'wampcra session');
  });

  it('authmethod tls with a client certificate: WELCOME names its CN, no CHALLENGE', t, async () => {
    const h = await open({ auth: tlsAuth(P.tls.authid) }, { client: 'tobias' });
    assertWelcome(h.details, { authid: P.tls.authid, authrole: 'user', authmethod: 'tls' }, 'wampy tls login');
    assert.deepEqual(exchange(h).challenges, [], 'no CHALLENGE');
    const info = await within(h.client.call('wamp.session.get', [wampy.idArg(h, h.client.getSessionId())]), WAIT, 'wamp.session.get');
    assert.equal(info.argsList[0].authmethod, 'tls');
    await closeWampy(h, 'tls session');
  });

  it('a client certificate whose CN is not a `tls = true` principal gets ABORT wamp.error.authentication_failed', t, async () => {
    for (const client of ['tess', 'stranger']) {
      const err = await failed({ auth: tlsAuth(TLS_CLIENTS[client]) }, { client }, `wampy tls login as ${TLS_CLIENTS[client]}`);
      assertWampyAbort(err, 'wamp.error.authentication_failed', `certificate CN ${TLS_CLIENTS[client]}`);
    }
  });

  it('without the test CA the server certificate is refused: no session', t, async () => {
    const err = await failed({ auth: ticketAuth(P.ticket.authid, P.ticket.ticket) }, { ca: false }, 'wampy wss without the test CA');
    assert.ok(err instanceof wampy.Errors.WebsocketError, `expected a wampy WebsocketError, got ${err && (err.stack || show(err))}`);
    // ws hands over the error (an ErrorEvent); the websocket package's
    // w3cwebsocket says only that the connection failed
    if (wsClass === 'ws') {
      const cause = err.error && err.error.error;
      assert.ok(cause && UNTRUSTED.includes(cause.code), `the WebSocket's error: ${cause && (cause.code || cause.message)}`);
    }
  });
}

// ---------------------------------------------------------------------------

if (kind !== 'switchyard') {
  describe('auth', () => {
    it('is switchyard configuration', { skip: `ROUTER=${kind}: the realms, principals and roles are switchyard configuration` }, () => {});
  });
} else {
  const closeAll = () => {
    wamp.closeAll();
    wampy.closeAll();
  };
  describeEachRouter({ prefix: 'auth: ', closeAll, routerOptions: { extraConfig: authConfig } }, (ctx) => {
    // Without TLS: on the dedicated listeners and on the universal ones
    // (LISTENERS), RawSocket on TCP and on a Unix socket.
    for (const L of ctx.listeners) {
      describe(L.title, () => {
        for (const ser of SERIALIZERS) {
          describe(`autobahn-js websocket ${ser}`, () =>
            autobahnSuite((opts) => within(wamp.connect(L.url(), { serializer: ser, ...opts }), WAIT, `websocket ${ser} session to open`)));
        }
        describe('autobahn-js rawsocket json', () =>
          autobahnSuite((opts) => {
            const transport = { type: 'rawsocket', ...L.rawsocket() };
            return within(wamp.connect(null, { serializer: 'json', transport, ...opts }), WAIT, 'rawsocket json session to open');
          }));
        describe('autobahn-js rawsocket json over a Unix socket', () =>
          autobahnSuite((opts) => {
            const transport = { type: 'rawsocket', path: L.unixRawsocket() };
            return within(wamp.connect(null, { serializer: 'json', transport, ...opts }), WAIT, 'rawsocket json session over a Unix socket to open');
          }));
        for (const ser of SERIALIZERS) {
          describe(`wampy websocket ${ser}`, () => wampySuite(L.url, ser));
        }
      });
    }
    // TLS (its own listeners: lib/router.js's extraConfig authConfig)
    for (const ser of SERIALIZERS) {
      describe(`autobahn-js wss ${ser}`, { skip: NO_TLS || false }, () => autobahnTlsSuite(ctx, ser));
    }
    describe('autobahn-js rawsocket over TLS', () => {
      it('is not available', { skip: "autobahn-js's RawSocket transport (lib/transport/rawsocket.js) opens plain TCP (net.connect) and has no TLS option" }, () => {});
    });
    for (const ws of ['ws', 'websocket']) {
      for (const ser of SERIALIZERS) {
        describe(`wampy wss ${ser} (WebSocket class: ${ws})`, { skip: NO_TLS || false }, () => wampyTlsSuite(ctx, ws, ser));
      }
    }
  });
}
