'use strict';
// Authentication and authorization interop tests: Switchyard driven by
// autobahn-js (WebSocket with JSON and MessagePack, RawSocket with JSON) and
// by wampy (WebSocket with JSON and MessagePack), logging in with WAMP-Ticket,
// WAMP-CRA (plain and salted secrets) and WAMP-Cryptosign, and acting under a
// restricted role. Switchyard only: the realms, principals and roles are
// switchyard configuration, appended to the usual config (lib/router.js).
// Every secret is made up when the test process starts; the config gets what
// `switchyard secret ...` derives from it, and the Ed25519 key pair is made
// here with the tweetnacl that autobahn-js bundles.
//
// Same environment variables as interop.test.js (SWITCHYARD_BIN, SHARDS,
// SERIALIZERS, INTEROP_VERBOSE); with ROUTER=crossbar or ROUTER_URL the file
// is skipped.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');

const wamp = require('./lib/wamp');
const wampy = require('./lib/wampy');
const { show, within, Collector, rejectionOf } = require('./lib/util');
const { newSecret, ticketLine, wampcraLine } = require('./lib/principals');
const { SERIALIZERS, kind, uriBase, describeEachRouter } = require('./lib/suite');

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
};

async function authConfig(bin) {
  const principal = (p, ...lines) => ['[[realm.principal]]', `authid = "${p.authid}"`, `role = "${p.role}"`, ...lines];
  return [
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
  ].join('\n');
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
    // wamp-scram and tls are not offered (no principal has them; no TLS)
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
    for (const ser of SERIALIZERS) {
      describe(`autobahn-js websocket ${ser}`, () =>
        autobahnSuite((opts) => within(wamp.connect(ctx.url(), { serializer: ser, ...opts }), WAIT, `websocket ${ser} session to open`)));
    }
    describe('autobahn-js rawsocket json', () =>
      autobahnSuite((opts) => {
        const transport = { type: 'rawsocket', host: '127.0.0.1', port: ctx.rsPort() };
        return within(wamp.connect(null, { serializer: 'json', transport, ...opts }), WAIT, 'rawsocket json session to open');
      }));
    for (const ser of SERIALIZERS) {
      describe(`wampy websocket ${ser}`, () => wampySuite(ctx.url, ser));
    }
  });
}
