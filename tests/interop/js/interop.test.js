'use strict';
// Interop tests: Switchyard (or a reference router) driven by the real
// autobahn-js client over WebSocket, with the JSON, MessagePack and CBOR
// serializers, and over RawSocket (autobahn-js speaks only JSON there), each
// on TCP and on a Unix socket, against the dedicated listeners and against the
// universal ones (lib/suite.js LISTENERS; only switchyard gets RawSocket,
// Unix socket and universal listeners from the harness).
//
// Environment:
//   SWITCHYARD_BIN  router binary (default <repo>/target/debug/switchyard)
//   ROUTER          switchyard (default) | crossbar
//   ROUTER_URL      ws URL of an already running router (nothing is started)
//   SHARDS          comma list of shard counts to run the suite with (default 1,2)
//   SERIALIZERS     comma list out of json,msgpack,cbor (default all three)
//   LISTENERS       comma list out of dedicated,universal (default both)
//   INTEROP_VERBOSE print router output and autobahn warnings

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const { REALM, UNIX_MODES, parseMetrics } = require('./lib/router');
const { autobahn, connect, close, closeAll, within, Collector, deferred, rejectionOf, ConnectError } = require('./lib/wamp');
const { show, spawnScript } = require('./lib/util');
const { REALM1_ROLE, asPrincipal } = require('./lib/principals');
const { UNICODE, PAYLOAD_ARGS, PAYLOAD_KWARGS, binaryPayload, canonical } = require('./lib/payload');
const { SERIALIZERS, GOODBYE_REPLIES, RAWSOCKET, kind, uriBase, describeEachRouter } = require('./lib/suite');

const TEST_TIMEOUT = 30000; // per test; only a bound against hangs, never asserted
const WAIT = 10000; // per awaited step inside a test

// A fresh URI prefix per test (see uriBase).
const base = uriBase('r');

function assertSessionId(id, what) {
  assert.ok(Number.isSafeInteger(id) && id >= 1 && id <= 2 ** 53, `${what}: bad session id ${id}`);
}

function assertWampError(err, uri, what) {
  assert.ok(err instanceof autobahn.Error, `${what}: expected autobahn.Error, got ${err && (err.stack || show(err))}`);
  if (uri instanceof RegExp) {
    assert.match(err.error, uri, `${what}: unexpected error URI ${err.error}`);
  } else {
    assert.equal(err.error, uri, `${what}: unexpected error URI ${err.error}`);
  }
}

async function closeChecked(h, what) {
  const res = await within(close(h), WAIT, `${what} to close`);
  assert.equal(h.session.isOpen, false, `${what}: session still open after close`);
  assert.deepEqual(
    h.internalErrors.map((e) => String(e.err)),
    [],
    `${what}: autobahn reported internal (protocol) errors`,
  );
  return res;
}

// Session openers, each bounded by WAIT; opts: more connect() options (realm).
// A WebSocket session with serializer ser:
function openWebSocket(url, ser, opts = {}) {
  return within(connect(url, { serializer: ser, ...opts }), WAIT, `websocket ${ser} session to open`);
}

// A RawSocket session on JSON (autobahn-js's RawSocket transport speaks
// nothing else) to target: { host, port } (TCP) or { path } (a Unix socket):
function openRawSocket(target, opts = {}) {
  const transport = { type: 'rawsocket', ...target };
  return within(connect(null, { serializer: 'json', transport, ...opts }), WAIT, 'rawsocket json session to open');
}

// Payload values compared exactly, whatever JS type the decoder picked for
// them (see canonical in lib/payload.js: 2**53 arrives as a BigInt when the
// router sends it as a CBOR 64-bit integer, which the `cbor` package decodes
// to a BigInt beyond 2**53 - 1).
function assertSameValues(actual, expected, what) {
  assert.deepEqual(canonical(actual), canonical(expected), what);
}

function spawnCallee(url, serializer, procedure) {
  return spawnScript(path.join(__dirname, 'lib', 'callee-proc.js'), [url, serializer, procedure], WAIT);
}

// ---------------------------------------------------------------------------
// Test bodies shared by the transports. Each opens its sessions with
// open(opts): a promise of a connect() handle (opts: connect() options such as
// realm) on one transport and serializer, bounded by WAIT.

// Opening and closing sessions, and one pub/sub and one RPC round trip.
// transport: 'websocket' | 'rawsocket'; ser: the serializer open() uses.
function roundTripSuite(open, { transport, ser }) {
  const t = { timeout: TEST_TIMEOUT };

  it('session opens with a session id and realm, and closes with GOODBYE', t, async () => {
    const a = await open();
    const b = await open();
    assertSessionId(a.session.id, 'first session');
    assertSessionId(b.session.id, 'second session');
    assert.notEqual(a.session.id, b.session.id, 'two sessions got the same id');
    assert.equal(a.session.realm, REALM);
    assert.equal(a.session.isOpen, true);
    assert.ok(a.details && a.details.roles, `WELCOME.Details.roles missing: ${JSON.stringify(a.details)}`);
    assert.equal(typeof a.details.roles.broker, 'object', 'WELCOME does not announce the broker role');
    assert.equal(typeof a.details.roles.dealer, 'object', 'WELCOME does not announce the dealer role');
    assert.equal(a.details.realm, REALM, 'WELCOME.Details.realm');
    assert.equal(a.connection.transport.info.type, transport, 'transport in use');
    // over WebSocket the negotiated subprotocol; over RawSocket autobahn names
    // the serializer its handshake asked for (and it closes the connection if
    // the router's handshake reply names another)
    assert.equal(a.connection.transport.info.protocol, `wamp.2.${ser}`, 'WAMP serializer in use');

    const res = await closeChecked(a, 'first session');
    // GOODBYE_REPLIES: wamp.close.goodbye_and_out (wamp.close.normal too
    // from Crossbar.io, the reference router).
    assert.ok(GOODBYE_REPLIES.includes(res.details.reason), `router's GOODBYE reply reason: ${JSON.stringify(res)}`);
    await closeChecked(b, 'second session');
  });

  it('joining an unknown realm is rejected with wamp.error.no_such_realm', t, async () => {
    const err = await rejectionOf(open({ realm: 'com.example.no_such_realm' }), WAIT, 'join of an unknown realm');
    assert.ok(err instanceof ConnectError, `expected the connection to close before WELCOME, got ${err && err.stack}`);
    assert.equal(err.details.reason, 'wamp.error.no_such_realm', `ABORT reason: ${JSON.stringify(err.details)}`);
  });

  it('publish with acknowledge reaches another session; publisher is excluded by default', t, async () => {
    const topic = base('topic');
    const sub = await open();
    const pub = await open();
    const subEvents = new Collector();
    const pubEvents = new Collector();
    const s1 = await within(sub.session.subscribe(topic, subEvents.handler), WAIT, 'SUBSCRIBED');
    const s2 = await within(pub.session.subscribe(topic, pubEvents.handler), WAIT, 'SUBSCRIBED');
    assert.ok(Number.isSafeInteger(s1.id) && s1.id > 0, `subscription id ${s1.id}`);
    assert.equal(s1.id, s2.id, 'same topic + match policy must share one subscription id');

    const first = await within(
      pub.session.publish(topic, ['first', ...PAYLOAD_ARGS], PAYLOAD_KWARGS, { acknowledge: true }),
      WAIT,
      'PUBLISHED',
    );
    assert.ok(first && Number.isSafeInteger(first.id) && first.id > 0, `publication id: ${JSON.stringify(first)}`);
    const second = await within(
      pub.session.publish(topic, ['second'], {}, { acknowledge: true, exclude_me: false }),
      WAIT,
      'PUBLISHED',
    );
    assert.notEqual(first.id, second.id, 'two publications got the same id');

    const got = await subEvents.until(2, WAIT, 'subscriber events');
    assert.deepEqual(got[0].args, ['first', ...PAYLOAD_ARGS]);
    assert.deepEqual(got[0].kwargs, PAYLOAD_KWARGS);
    assert.equal(got[0].details.publication, first.id, 'EVENT publication id matches PUBLISHED');
    assert.deepEqual(got[1].args, ['second']);
    assert.equal(got[1].details.publication, second.id);

    // Events from one publisher arrive in publication order: had the first
    // event been sent back to its publisher, it would arrive before 'second'.
    const own = await pubEvents.until(1, WAIT, 'the exclude_me:false event at the publisher');
    assert.deepEqual(own[0].args, ['second'], 'publisher received its own event despite exclude_me default');

    await closeChecked(sub, 'subscriber');
    await closeChecked(pub, 'publisher');
  });

  it('register/call round-trips args and kwargs (unicode, nested, 2**53, booleans, null)', t, async () => {
    const proc = base('echo');
    const procAdd = base('add');
    const callee = await open();
    const caller = await open();
    let seen = null;
    const reg = await within(
      callee.session.register(proc, (args, kwargs) => {
        seen = { args, kwargs };
        return new autobahn.Result(args, kwargs);
      }),
      WAIT,
      'REGISTERED',
    );
    assert.ok(Number.isSafeInteger(reg.id) && reg.id > 0, `registration id ${reg.id}`);
    await within(callee.session.register(procAdd, (args) => args[0] + args[1]), WAIT, 'REGISTERED');

    const res = await within(caller.session.call(proc, PAYLOAD_ARGS, PAYLOAD_KWARGS), WAIT, 'RESULT');
    assert.deepEqual(seen, { args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS }, 'INVOCATION payload at the callee');
    assert.ok(res instanceof autobahn.Result, `expected a Result with args+kwargs, got ${JSON.stringify(res)}`);
    assert.deepEqual(res.args, PAYLOAD_ARGS, 'RESULT args');
    assert.deepEqual(res.kwargs, PAYLOAD_KWARGS, 'RESULT kwargs');

    assert.equal(await within(caller.session.call(procAdd, [2 ** 52, 3]), WAIT, 'RESULT'), 2 ** 52 + 3);
    assert.equal(await within(caller.session.call(procAdd, [UNICODE, '!']), WAIT, 'RESULT'), `${UNICODE}!`);

    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });
}

// Advanced RPC: call timeouts and canceling, progressive results, caller
// disclosure, call rerouting, registration revocation, session meta procedures.
function advancedRpcSuite(open) {
  const t = { timeout: TEST_TIMEOUT };

  it('a call past its timeout fails with wamp.error.timeout (callee not interrupted: it announces no call_canceling)', t, async () => {
    const proc = base('slow');
    const callee = await open();
    const caller = await open();
    const late = deferred();
    await within(callee.session.register(proc, () => late.promise), WAIT, 'REGISTERED');
    const err = await rejectionOf(caller.session.call(proc, [], {}, { timeout: 200 }), WAIT, 'timed-out call');
    assertWampError(err, 'wamp.error.timeout', 'call timeout');
    // the callee answers late: the router discards it, and a later call on
    // the same path gets its own RESULT
    late.resolve('too late');
    await within(callee.session.register(`${proc}.next`, () => 'next'), WAIT, 'REGISTERED');
    assert.equal(await within(caller.session.call(`${proc}.next`, [], {}, { timeout: 5000 }), WAIT, 'RESULT'), 'next');
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('a call canceled with mode kill, at a callee that cannot be interrupted, fails with wamp.error.canceled', t, async () => {
    // autobahn-js keeps a call it cancels only in mode "kill"; after "skip" or
    // "killnowait" it forgets the call and takes the ERROR the spec has the
    // dealer send as a protocol violation (see README)
    const proc = base('long');
    const callee = await open();
    const caller = await open();
    const started = deferred();
    const release = deferred();
    await within(
      callee.session.register(proc, () => {
        started.resolve();
        return release.promise;
      }),
      WAIT,
      'REGISTERED',
    );
    const call = caller.session.call(proc);
    await within(started.promise, WAIT, 'INVOCATION');
    call.cancel({ mode: 'kill' });
    const err = await rejectionOf(call, WAIT, 'canceled call');
    assertWampError(err, 'wamp.error.canceled', 'cancel kill');
    release.resolve('finished');
    await within(callee.session.register(`${proc}.next`, () => 'next'), WAIT, 'REGISTERED');
    assert.equal(await within(caller.session.call(`${proc}.next`), WAIT, 'RESULT'), 'next');
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('an autobahn-js callee (progressive results without call canceling) is not asked for progress, as the spec says', t, async () => {
    const proc = base('chunks');
    const callee = await open();
    const caller = await open();
    let askedForProgress = null;
    await within(
      callee.session.register(proc, (args, kwargs, details) => {
        askedForProgress = Boolean(details.progress);
        return 'whole';
      }),
      WAIT,
      'REGISTERED',
    );
    const res = await within(caller.session.call(proc, [], {}, { receive_progress: true }), WAIT, 'RESULT');
    assert.equal(res, 'whole');
    assert.equal(askedForProgress, false, 'INVOCATION carried receive_progress to a callee without call_canceling');
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('a caller with disclose_me is named to the callee (details.caller)', t, async () => {
    const proc = base('who');
    const callee = await open();
    const caller = await open();
    await within(callee.session.register(proc, (args, kwargs, details) => (details.caller === undefined ? null : details.caller)), WAIT, 'REGISTERED');
    assert.deepEqual(await within(caller.session.call(proc, [], {}, { disclose_me: true }), WAIT, 'RESULT'), caller.session.id);
    assert.deepEqual(await within(caller.session.call(proc), WAIT, 'RESULT'), null);
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('a callee answering wamp.error.unavailable has the call rerouted to the next callee (roundrobin)', t, async () => {
    const proc = base('reroute');
    const callees = [await open(), await open(), await open()];
    let declined = 0;
    await within(
      callees[0].session.register(
        proc,
        () => {
          declined += 1;
          throw new autobahn.Error('wamp.error.unavailable');
        },
        { invoke: 'roundrobin' },
      ),
      WAIT,
      'REGISTERED',
    );
    for (const k of [1, 2]) {
      await within(callees[k].session.register(proc, () => k, { invoke: 'roundrobin' }), WAIT, 'REGISTERED');
    }
    const caller = await open();
    const got = [];
    for (let i = 0; i < 6; i += 1) got.push(await within(caller.session.call(proc), WAIT, 'RESULT'));
    assert.deepEqual(got, [1, 2, 1, 2, 1, 2], 'the busy callee declined, the next in turn answered');
    assert.equal(declined, 3);
    for (const h of [...callees, caller]) await closeChecked(h, 'session');
  });

  it('a callee removed by wamp.registration.remove_callee is told (registration.on_unregister)', t, async () => {
    const proc = base('revoked');
    const callee = await open();
    const caller = await open();
    const reg = await within(callee.session.register(proc, () => 'here'), WAIT, 'REGISTERED');
    assert.equal(await within(caller.session.call(proc), WAIT, 'RESULT'), 'here');
    await within(
      caller.session.call('wamp.registration.remove_callee', [reg.id, callee.session.id], { reason: 'com.example.moved' }),
      WAIT,
      'remove_callee',
    );
    assert.equal(await within(reg.on_unregister, WAIT, 'on_unregister'), 'com.example.moved');
    assert.equal(reg.active, false);
    const err = await rejectionOf(caller.session.call(proc), WAIT, 'call after the revocation');
    assertWampError(err, 'wamp.error.no_such_procedure', 'call after the revocation');
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('the session meta procedures count, list and describe the sessions of the realm', t, async () => {
    const a = await open();
    const b = await open();
    const listed = await within(a.session.call('wamp.session.list'), WAIT, 'list');
    assert.ok(listed.includes(a.session.id) && listed.includes(b.session.id), `listed ${JSON.stringify(listed)}`);
    assert.equal(await within(a.session.call('wamp.session.count'), WAIT, 'count'), listed.length);
    const info = await within(a.session.call('wamp.session.get', [b.session.id]), WAIT, 'get');
    assert.equal(info.session, b.session.id);
    assert.equal(info.authrole, 'anonymous');
    const err = await rejectionOf(a.session.call('wamp.session.get', [1]), WAIT, 'get of an unknown session');
    assertWampError(err, 'wamp.error.no_such_session', 'get of an unknown session');
    await closeChecked(a, 'a');
    await closeChecked(b, 'b');
  });
}

// Advanced PubSub and the meta API around it: publisher identification,
// subscriber black/white listing, event retention, session meta events,
// wamp.session.kill, the subscription and registration meta API, testaments,
// subscription revocation. Where a test needs "X did not arrive", a later
// sentinel event from the same publisher, which every subscriber gets, must
// be the next one there: the spec orders one publisher's events to one
// subscriber, across topics too.
function advancedPubSubSuite(open) {
  const t = { timeout: TEST_TIMEOUT };
  const argsOf = (col) => col.items.map((e) => e.args);
  const isNull = (v) => v === null || v === undefined;
  // Tests whose sessions log in as realm1's principals (WAMP-Ticket): an
  // external router (ROUTER_URL) has not got them.
  const tp = { ...t, skip: kind === 'external' && "ROUTER_URL: the router has not got realm1's principals" };
  // A session logged in as the realm1 principal authid, with its ticket.
  const openAs = (authid, opts = {}) => open({ ...asPrincipal(authid), ...opts });

  // Subscribes each handle's collector to topic; resolves to the subscriptions.
  async function subscribeAll(topic, entries, options) {
    return within(Promise.all(entries.map(([h, col]) => h.session.subscribe(topic, col.handler, options))), WAIT, 'all SUBSCRIBED');
  }
  const publisher = (pub, topic) => (args, options = {}) =>
    within(pub.session.publish(topic, args, {}, { acknowledge: true, ...options }), WAIT, `PUBLISHED ${JSON.stringify(args)}`);

  it('wamp.subscription.get_events returns the kept events of a subscription (realm1 keeps 5 per com.example.history.* topic)', t, async (ctx) => {
    if (kind !== 'switchyard') {
      ctx.skip('the history rule is switchyard configuration');
      return;
    }
    const topic = `com.example.history.${base('h').split('.').slice(2, 3)[0]}`;
    const pub = await open();
    const reader = await open();
    const live = new Collector();
    const sub = await within(reader.session.subscribe(topic, live.handler), WAIT, 'SUBSCRIBED');
    const ids = [];
    for (let i = 0; i < 7; i += 1) {
      const p = await within(pub.session.publish(topic, [i], { n: i }, { acknowledge: true }), WAIT, 'PUBLISHED');
      ids.push(p.id);
    }
    // PUBLISHED does not wait for the topic's home shard to keep the event:
    // with 2 shards, a get_events right after the last PUBLISHED can reach
    // the home shard before the last events do (seen: [1, 2, 3, 4, 5]). The
    // publishing shard hands an event to the home shard right after it sends
    // it to the subscribers' shards, so the reader first waits for its own
    // EVENTs.
    await live.until(7, WAIT, 'the reader to get the 7 events');
    const events = await within(reader.session.call('wamp.subscription.get_events', [sub.id]), WAIT, 'get_events');
    assert.deepEqual(events.map((e) => e.args[0]), [2, 3, 4, 5, 6], JSON.stringify(events));
    assert.equal(events[0].subscription, sub.id);
    assert.equal(events[0].publication, ids[2]);
    assert.deepEqual(events[0].kwargs, { n: 2 });
    assert.match(events[0].timestamp, /Z$/);
    const newest = await within(reader.session.call('wamp.subscription.get_events', [sub.id], { reverse: true, limit: 2 }), WAIT, 'get_events');
    assert.deepEqual(newest.map((e) => e.args[0]), [6, 5]);
    await closeChecked(pub, 'publisher');
    await closeChecked(reader, 'reader');
  });

  it('a publisher with disclose_me is named to subscribers (details.publisher, publisher_authid, publisher_authrole)', tp, async () => {
    const topic = base('disclosed');
    const sub = await open();
    const pub = await openAs('com.example.publisher');
    const events = new Collector();
    await subscribeAll(topic, [[sub, events]]);
    const publish = publisher(pub, topic);
    await publish(['named'], { disclose_me: true });
    await publish(['anonymous']);
    await publish(['anonymous too'], { disclose_me: false });
    const got = await events.until(3, WAIT, 'events');
    assert.deepEqual(argsOf(events), [['named'], ['anonymous'], ['anonymous too']]);
    assert.equal(got[0].details.publisher, pub.session.id, 'EVENT.Details.publisher');
    assert.equal(got[0].details.publisher_authid, 'com.example.publisher', 'EVENT.Details.publisher_authid');
    assert.equal(got[0].details.publisher_authrole, REALM1_ROLE, 'EVENT.Details.publisher_authrole');
    for (const e of got.slice(1)) {
      assert.ok(isNull(e.details.publisher), `publisher disclosed without disclose_me: ${e.details.publisher}`);
      assert.ok(isNull(e.details.publisher_authid), `publisher_authid disclosed: ${e.details.publisher_authid}`);
    }
    await closeChecked(sub, 'subscriber');
    await closeChecked(pub, 'publisher');
  });

  it('exclude and eligible (session ids) pick the receivers; excluded subscribers see the sentinel next', t, async () => {
    const topic = base('bw_session');
    const [a, b, c] = [await open(), await open(), await open()];
    const pub = await open();
    const col = [new Collector(), new Collector(), new Collector()];
    await subscribeAll(topic, [
      [a, col[0]],
      [b, col[1]],
      [c, col[2]],
    ]);
    const [ia, ib] = [a.session.id, b.session.id];
    const publish = publisher(pub, topic);
    await publish(['not b'], { exclude: [ib] });
    await publish(['only b'], { eligible: [ib] });
    await publish(['a or b, not a'], { eligible: [ia, ib], exclude: [ia] });
    await publish(['nobody'], { eligible: [] });
    await publish(['sentinel']);
    const expected = [
      [['not b'], ['sentinel']],
      [['only b'], ['a or b, not a'], ['sentinel']],
      [['not b'], ['sentinel']],
    ];
    for (let k = 0; k < 3; k++) {
      await col[k].until(expected[k].length, WAIT, `subscriber ${'abc'[k]} events`);
      assert.deepEqual(argsOf(col[k]), expected[k], `subscriber ${'abc'[k]}`);
    }
    for (const h of [a, b, c, pub]) await closeChecked(h, 'session');
  });

  it('exclude_authid and eligible_authid (principals logged in with WAMP-Ticket) pick the receivers', tp, async () => {
    const topic = base('bw_authid');
    const names = ['alice', 'bob', 'carol'].map((n) => `com.example.${n}`);
    const subs = [];
    for (const authid of names) subs.push(await openAs(authid));
    subs.forEach((h, k) => {
      assert.equal(h.details.authid, names[k], 'WELCOME.Details.authid is the principal logged in as');
      assert.equal(h.details.authmethod, 'ticket', 'WELCOME.Details.authmethod');
    });
    const info = await within(subs[0].session.call('wamp.session.get', [subs[1].session.id]), WAIT, 'wamp.session.get');
    assert.equal(info.authid, names[1], 'wamp.session.get authid');
    const pub = await open();
    const col = names.map(() => new Collector());
    await subscribeAll(topic, subs.map((h, k) => [h, col[k]]));
    const [alice, bob, carol] = names;
    const publish = publisher(pub, topic);
    await publish(['not bob'], { exclude_authid: [bob] });
    await publish(['bob or carol'], { eligible_authid: [bob, carol] });
    await publish(['alice, but not alice'], { eligible_authid: [alice], exclude_authid: [alice] });
    await publish(['carol'], { eligible_authid: [alice, carol], exclude: [subs[0].session.id] });
    await publish(['sentinel']);
    const expected = [
      [['not bob'], ['sentinel']],
      [['bob or carol'], ['sentinel']],
      [['not bob'], ['bob or carol'], ['carol'], ['sentinel']],
    ];
    for (let k = 0; k < 3; k++) {
      await col[k].until(expected[k].length, WAIT, `${names[k]} events`);
      assert.deepEqual(argsOf(col[k]), expected[k], names[k]);
    }
    for (const h of [...subs, pub]) await closeChecked(h, 'session');
  });

  it('exclude_authrole and eligible_authrole pick the receivers (every session is anonymous)', t, async () => {
    const topic = base('bw_authrole');
    const [a, b] = [await open(), await open()];
    const pub = await open();
    const col = [new Collector(), new Collector()];
    await subscribeAll(topic, [
      [a, col[0]],
      [b, col[1]],
    ]);
    const publish = publisher(pub, topic);
    await publish(['no anonymous'], { exclude_authrole: ['anonymous'] });
    await publish(['nobody role'], { eligible_authrole: ['com.example.nobody'] });
    await publish(['anonymous'], { eligible_authrole: ['anonymous'], exclude_authrole: ['com.example.nobody'] });
    await publish(['anonymous, not b'], { eligible_authrole: ['anonymous'], exclude: [b.session.id] });
    await publish(['sentinel']);
    await col[0].until(3, WAIT, 'subscriber a events');
    assert.deepEqual(argsOf(col[0]), [['anonymous'], ['anonymous, not b'], ['sentinel']]);
    await col[1].until(2, WAIT, 'subscriber b events');
    assert.deepEqual(argsOf(col[1]), [['anonymous'], ['sentinel']]);
    for (const h of [a, b, pub]) await closeChecked(h, 'session');
  });

  it('retain: a subscriber with get_retained gets the last retained event first (details.retained), others only live events', t, async () => {
    // autobahn-js 22.11 passes EVENT.Details.retained on (Event.retained,
    // false when absent)
    const topic = base('retained');
    const pub = await open();
    const publish = publisher(pub, topic);
    await publish(['old'], { retain: true });
    const last = await publish(['last'], { retain: true, disclose_me: true });
    await publish(['not kept']); // no subscriber yet, and not retained
    const late = await open();
    const plain = await open();
    const withRetained = new Collector();
    const without = new Collector();
    await within(late.session.subscribe(topic, withRetained.handler, { get_retained: true }), WAIT, 'SUBSCRIBED get_retained');
    await within(plain.session.subscribe(topic, without.handler), WAIT, 'SUBSCRIBED');
    const [first] = await withRetained.until(1, WAIT, 'the retained event');
    assert.deepEqual(first.args, ['last'], 'the last retained event, not an older one nor the unretained one');
    assert.equal(first.details.retained, true, 'EVENT.Details.retained');
    assert.equal(first.details.publication, last.id, 'the retained event keeps its publication id');
    assert.equal(first.details.publisher, pub.session.id, 'the retained event keeps its disclosed publisher');
    const live = await publish(['live']);
    const got = await withRetained.until(2, WAIT, 'the live event');
    assert.deepEqual(argsOf(withRetained), [['last'], ['live']]);
    assert.equal(got[1].details.retained, false, 'a live event is not marked retained');
    assert.equal(got[1].details.publication, live.id);
    // the subscriber without get_retained: its first event is the live one
    await without.until(1, WAIT, 'the live event without get_retained');
    assert.deepEqual(argsOf(without), [['live']]);
    for (const h of [pub, late, plain]) await closeChecked(h, 'session');
  });

  it('wamp.session.on_join and on_leave announce another session joining and leaving', tp, async () => {
    const watcher = await open();
    const joins = new Collector();
    const leaves = new Collector();
    await within(watcher.session.subscribe('wamp.session.on_join', joins.handler), WAIT, 'SUBSCRIBED on_join');
    await within(watcher.session.subscribe('wamp.session.on_leave', leaves.handler), WAIT, 'SUBSCRIBED on_leave');
    const other = await openAs('com.example.visitor');
    const id = other.session.id;
    const joined = await joins.find((e) => e.args[0] && e.args[0].session === id, WAIT, 'on_join of the other session');
    const info = joined.args[0];
    assert.equal(info.authid, 'com.example.visitor', 'on_join authid');
    assert.equal(info.authrole, REALM1_ROLE, 'on_join authrole');
    assert.equal(info.transport && info.transport.type, other.transport, 'on_join transport.type');
    await closeChecked(other, 'other session');
    const left = await leaves.find((e) => e.args[0] === id, WAIT, 'on_leave of the other session');
    assert.deepEqual(left.args, [id, 'com.example.visitor', REALM1_ROLE], 'on_leave args: session, authid, authrole');
    assert.ok(!leaves.items.some((e) => e.args[0] === watcher.session.id), 'on_leave for the watcher itself');
    await closeChecked(watcher, 'watcher');
  });

  it('wamp.session.kill closes another session with the reason and message (its testament is published); not the caller', t, async () => {
    const will = base('victim_will');
    const killer = await open();
    const victim = await open();
    const victimId = victim.session.id;
    const testament = new Collector();
    await within(killer.session.subscribe(will, testament.handler), WAIT, 'SUBSCRIBED');
    await within(victim.session.call('wamp.session.add_testament', [will, ['killed'], {}]), WAIT, 'add_testament');
    const res = await within(
      killer.session.call('wamp.session.kill', [victimId], { reason: 'com.example.bye', message: 'go away' }),
      WAIT,
      'wamp.session.kill',
    );
    assert.ok(isNull(res), `kill result ${JSON.stringify(res)}`);
    // the router's GOODBYE: autobahn answers it and closes the transport;
    // Connection.onclose gets the GOODBYE reason and message in its details
    const closed = await within(victim.closed, WAIT, 'the killed connection to close');
    assert.equal(closed.details.reason, 'com.example.bye', `killed session's close details: ${JSON.stringify(closed)}`);
    assert.equal(closed.details.message, 'go away', 'GOODBYE.Details.message');
    assert.equal(closed.reason, 'closed', 'a clean close');
    assert.equal(victim.session.isOpen, false);
    assert.deepEqual(
      victim.internalErrors.map((e) => String(e.err)),
      [],
      'autobahn reported internal errors at the victim',
    );
    await testament.until(1, WAIT, "the killed session's testament");
    assert.deepEqual(argsOf(testament), [['killed']]);
    const listed = await within(killer.session.call('wamp.session.list'), WAIT, 'wamp.session.list');
    assert.ok(!listed.includes(victimId), 'the killed session is still listed');
    const own = await rejectionOf(killer.session.call('wamp.session.kill', [killer.session.id]), WAIT, 'kill of the own session');
    assertWampError(own, 'wamp.error.no_such_session', 'kill of the own session');
    const unknown = await rejectionOf(killer.session.call('wamp.session.kill', [1]), WAIT, 'kill of an unknown session');
    assertWampError(unknown, 'wamp.error.no_such_session', 'kill of an unknown session');
    assert.equal(killer.session.isOpen, true, 'the killer is still open');
    await closeChecked(killer, 'killer');
  });

  it('wamp.session.kill_by_authid closes the sessions with that authid, never the caller, and lists them', tp, async () => {
    const authid = 'com.example.doomed';
    const killer = await openAs(authid);
    const doomed = [await openAs(authid), await openAs(authid)];
    const spared = await openAs(`${authid}.spared`);
    const bystander = await open(); // anonymous
    const ids = doomed.map((h) => h.session.id);
    const res = await within(killer.session.call('wamp.session.kill_by_authid', [authid], { reason: 'com.example.bye' }), WAIT, 'kill_by_authid');
    assert.deepEqual([...res].sort(), [...ids].sort(), 'kill_by_authid lists the killed sessions');
    for (const h of doomed) {
      const closed = await within(h.closed, WAIT, 'a killed connection to close');
      assert.equal(closed.details.reason, 'com.example.bye');
    }
    // a round trip each, after the kill's result: they are still in the session
    for (const [h, what] of [
      [killer, 'the caller, with the same authid'],
      [spared, 'a session with another authid'],
      [bystander, 'an anonymous session'],
    ]) {
      const info = await within(h.session.call('wamp.session.get', [h.session.id]), WAIT, `wamp.session.get by ${what}`);
      assert.equal(info.session, h.session.id, `${what}: wamp.session.get of itself`);
      assert.equal(h.session.isOpen, true, `${what} is still open`);
    }
    await closeChecked(spared, 'spared');
    await closeChecked(bystander, 'bystander');
    await closeChecked(killer, 'killer');
  });

  it('wamp.subscription.lookup, get, count_subscribers, list_subscribers describe the subscriptions', t, async () => {
    const topic = base('looked_up');
    const root = base('pfx');
    const [a, b] = [await open(), await open()];
    const s1 = await within(a.session.subscribe(topic, () => {}), WAIT, 'SUBSCRIBED');
    await within(b.session.subscribe(topic, () => {}), WAIT, 'SUBSCRIBED');
    const sp = await within(a.session.subscribe(root, () => {}, { match: 'prefix' }), WAIT, 'SUBSCRIBED prefix');
    const call = (proc, args) => within(b.session.call(proc, args), WAIT, proc);
    assert.equal(await call('wamp.subscription.lookup', [topic]), s1.id, 'lookup (exact)');
    assert.equal(await call('wamp.subscription.lookup', [root, { match: 'prefix' }]), sp.id, 'lookup (prefix)');
    assert.ok(isNull(await call('wamp.subscription.lookup', [root])), 'lookup of an exact subscription nobody has');
    assert.ok(isNull(await call('wamp.subscription.lookup', [`${topic}.nobody`])), 'lookup of an unknown topic');
    const info = await call('wamp.subscription.get', [s1.id]);
    assert.equal(info.id, s1.id);
    assert.equal(info.uri, topic);
    assert.equal(info.match, 'exact');
    assert.ok(typeof info.created === 'string' && !Number.isNaN(Date.parse(info.created)), `created: ${info.created}`);
    assert.equal((await call('wamp.subscription.get', [sp.id])).match, 'prefix');
    assert.equal(await call('wamp.subscription.count_subscribers', [s1.id]), 2);
    assert.equal(await call('wamp.subscription.count_subscribers', [sp.id]), 1);
    const listed = await call('wamp.subscription.list_subscribers', [s1.id]);
    assert.deepEqual([...listed].sort(), [a.session.id, b.session.id].sort());
    const matched = await call('wamp.subscription.match', [`${root}.x`]);
    assert.deepEqual(matched, [sp.id], 'match');
    const err = await rejectionOf(b.session.call('wamp.subscription.get', [1]), WAIT, 'get of an unknown subscription');
    assertWampError(err, 'wamp.error.no_such_subscription', 'get of an unknown subscription');
    await closeChecked(a, 'a');
    await closeChecked(b, 'b');
  });

  it('wamp.registration.lookup and list_callees describe the registrations', t, async () => {
    const proc = base('looked_up_proc');
    const callee = await open();
    const caller = await open();
    const reg = await within(callee.session.register(proc, () => null), WAIT, 'REGISTERED');
    const call = (p, args) => within(caller.session.call(p, args), WAIT, p);
    assert.equal(await call('wamp.registration.lookup', [proc]), reg.id, 'lookup');
    assert.ok(isNull(await call('wamp.registration.lookup', [`${proc}.nobody`])), 'lookup of an unknown procedure');
    assert.deepEqual(await call('wamp.registration.list_callees', [reg.id]), [callee.session.id], 'list_callees');
    assert.equal(await call('wamp.registration.count_callees', [reg.id]), 1, 'count_callees');
    const info = await call('wamp.registration.get', [reg.id]);
    assert.equal(info.uri, proc);
    assert.equal(info.match, 'exact');
    const err = await rejectionOf(caller.session.call('wamp.registration.list_callees', [1]), WAIT, 'list_callees of an unknown registration');
    assertWampError(err, 'wamp.error.no_such_registration', 'list_callees of an unknown registration');
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('wamp.subscription.on_create / on_subscribe and wamp.registration.on_create / on_register announce another session', t, async () => {
    const topic = base('watched_topic');
    const proc = base('watched_proc');
    const watcher = await open();
    const meta = {};
    const topics = ['wamp.subscription.on_create', 'wamp.subscription.on_subscribe', 'wamp.registration.on_create', 'wamp.registration.on_register'];
    for (const ev of topics) {
      meta[ev] = new Collector();
      await within(watcher.session.subscribe(ev, meta[ev].handler), WAIT, `SUBSCRIBED ${ev}`);
    }
    const other = await open();
    const id = other.session.id;
    const sub = await within(other.session.subscribe(topic, () => {}), WAIT, 'SUBSCRIBED');
    const reg = await within(other.session.register(proc, () => null), WAIT, 'REGISTERED');
    const bySession = (e) => e.args[0] === id;
    const subCreated = await meta['wamp.subscription.on_create'].find(bySession, WAIT, 'subscription on_create');
    assert.equal(subCreated.args[1].id, sub.id, 'on_create SubscriptionDetails.id');
    assert.equal(subCreated.args[1].uri, topic, 'on_create SubscriptionDetails.uri');
    assert.equal(subCreated.args[1].match, 'exact');
    const subscribed = await meta['wamp.subscription.on_subscribe'].find(bySession, WAIT, 'on_subscribe');
    assert.deepEqual(subscribed.args, [id, sub.id], 'on_subscribe args: session, subscription');
    const regCreated = await meta['wamp.registration.on_create'].find(bySession, WAIT, 'registration on_create');
    assert.equal(regCreated.args[1].id, reg.id, 'on_create RegistrationDetails.id');
    assert.equal(regCreated.args[1].uri, proc, 'on_create RegistrationDetails.uri');
    const registered = await meta['wamp.registration.on_register'].find(bySession, WAIT, 'on_register');
    assert.deepEqual(registered.args, [id, reg.id], 'on_register args: session, registration');
    // the watcher's own subscriptions to wamp. topics are not announced
    assert.ok(
      !meta['wamp.subscription.on_subscribe'].items.some((e) => e.args[0] === watcher.session.id),
      'on_subscribe announced a subscription to a wamp. topic',
    );
    await closeChecked(other, 'other');
    await closeChecked(watcher, 'watcher');
  });

  it('testaments are published when the testator leaves: the detached ones, then the destroyed ones', t, async () => {
    const will = base('will');
    const heir = await open();
    const testator = await open();
    const events = new Collector();
    await within(heir.session.subscribe(will, events.handler), WAIT, 'SUBSCRIBED');
    const add = (args, kwargs) => within(testator.session.call('wamp.session.add_testament', args, kwargs), WAIT, 'add_testament');
    await add([will, ['bye'], { k: 1 }]);
    await add([will, ['detached'], { k: 2 }], { scope: 'detached' });
    await add([will, ['destroyed, disclosed']], { publish_options: { disclose_me: true } });
    const badScope = testator.session.call('wamp.session.add_testament', [will], { scope: 'forever' });
    const err = await rejectionOf(badScope, WAIT, 'add_testament with a bad scope');
    assertWampError(err, 'wamp.error.invalid_argument', 'add_testament with a bad scope');
    assert.equal(events.items.length, 0, 'a testament was published while the testator was still there');
    const testatorId = testator.session.id;
    await closeChecked(testator, 'testator');
    const got = await events.until(3, WAIT, 'the testaments');
    assert.deepEqual(
      got.map((e) => [e.args, e.kwargs]),
      [
        [['detached'], { k: 2 }],
        [['bye'], { k: 1 }],
        [['destroyed, disclosed'], {}],
      ],
    );
    assert.ok(isNull(got[0].details.publisher), 'a testament without disclose_me names its testator');
    assert.equal(got[2].details.publisher, testatorId, 'publish_options disclose_me names the testator');
    await closeChecked(heir, 'heir');
  });

  it('wamp.subscription.remove_subscriber revokes a subscription: autobahn-js resolves subscription.on_unsubscribe with the reason', t, async () => {
    const topic = base('revoked_topic');
    const sentinel = base('sentinel');
    const [removed, kept] = [await open(), await open()];
    const admin = await open();
    const onTopic = [new Collector(), new Collector()];
    const onSentinel = new Collector();
    const subs = await subscribeAll(topic, [
      [removed, onTopic[0]],
      [kept, onTopic[1]],
    ]);
    await within(removed.session.subscribe(sentinel, onSentinel.handler), WAIT, 'SUBSCRIBED sentinel');
    const id = subs[0].id;
    const res = await within(
      admin.session.call('wamp.subscription.remove_subscriber', [id, removed.session.id], { reason: 'com.example.moved' }),
      WAIT,
      'remove_subscriber',
    );
    assert.ok(isNull(res), `remove_subscriber result ${JSON.stringify(res)}`);
    // [UNSUBSCRIBED, 0, {subscription, reason}]: autobahn-js marks the
    // subscription inactive and resolves its on_unsubscribe with the reason
    assert.equal(await within(subs[0].on_unsubscribe, WAIT, 'on_unsubscribe'), 'com.example.moved');
    assert.equal(subs[0].active, false, 'subscription.active after the revocation');
    assert.equal(subs[1].active, true, "the other session's subscription");
    assert.deepEqual(await within(admin.session.call('wamp.subscription.list_subscribers', [id]), WAIT, 'list_subscribers'), [kept.session.id]);
    assert.equal(await within(admin.session.call('wamp.subscription.count_subscribers', [id]), WAIT, 'count_subscribers'), 1);
    // a second removal finds nothing to remove
    const removeAgain = admin.session.call('wamp.subscription.remove_subscriber', [id, removed.session.id]);
    const again = await rejectionOf(removeAgain, WAIT, 'second remove_subscriber');
    assertWampError(again, 'wamp.error.no_such_subscription', 'second remove_subscriber');
    // the revoked session gets no more events on the topic (an EVENT for it
    // would be an autobahn-js protocol violation, closing the connection):
    // the sentinel, published after, is its next event
    await within(admin.session.publish(topic, ['after'], {}, { acknowledge: true }), WAIT, 'PUBLISHED');
    await within(admin.session.publish(sentinel, ['sentinel'], {}, { acknowledge: true }), WAIT, 'PUBLISHED');
    await onSentinel.until(1, WAIT, 'the sentinel');
    await onTopic[1].until(1, WAIT, "the kept subscriber's event");
    assert.deepEqual(argsOf(onTopic[0]), [], 'the revoked subscriber got an event');
    assert.deepEqual(argsOf(onTopic[1]), [['after']]);
    assert.equal(removed.session.isOpen, true);
    for (const h of [removed, kept, admin]) await closeChecked(h, 'session');
  });
}

// ---------------------------------------------------------------------------
// The WebSocket suite for one serializer, all sessions using it.

function serializerSuite(getUrl, ser) {
  const open = (opts) => openWebSocket(getUrl(), ser, opts);
  const t = { timeout: TEST_TIMEOUT };

  roundTripSuite(open, { transport: 'websocket', ser });

  it('6 subscriber sessions each receive 50 numbered events in order', t, async () => {
    const topic = base('fanout');
    const subs = await Promise.all(Array.from({ length: 6 }, () => open()));
    const collectors = subs.map(() => new Collector());
    await within(
      Promise.all(subs.map((s, i) => s.session.subscribe(topic, collectors[i].handler))),
      WAIT,
      'all SUBSCRIBED',
    );
    const pub = await open();
    const acks = await within(
      Promise.all(
        Array.from({ length: 50 }, (_, i) => pub.session.publish(topic, [i], { n: i }, { acknowledge: true })),
      ),
      WAIT,
      '50 PUBLISHED',
    );
    const expected = Array.from({ length: 50 }, (_, i) => [i]);
    for (let k = 0; k < subs.length; k++) {
      const got = await collectors[k].until(50, WAIT, `subscriber ${k} events`);
      assert.deepEqual(
        got.map((e) => e.args),
        expected,
        `subscriber ${k} got events out of order or altered`,
      );
      assert.deepEqual(
        got.map((e) => e.details.publication),
        acks.map((a) => a.id),
        `subscriber ${k}: publication ids differ from the PUBLISHED acks`,
      );
    }
    await Promise.all(subs.map((s, k) => closeChecked(s, `subscriber ${k}`)));
    await closeChecked(pub, 'publisher');
  });

  it('call to an unknown procedure fails with wamp.error.no_such_procedure', t, async () => {
    const caller = await open();
    const err = await rejectionOf(caller.session.call(base('nobody_home'), [1]), WAIT, 'call to unknown procedure');
    assertWampError(err, 'wamp.error.no_such_procedure', 'unknown procedure');
    await closeChecked(caller, 'caller');
  });

  it('registering a taken procedure from another session fails with wamp.error.procedure_already_exists', t, async () => {
    const proc = base('taken');
    const first = await open();
    const second = await open();
    await within(first.session.register(proc, () => 'first'), WAIT, 'REGISTERED');
    const err = await rejectionOf(second.session.register(proc, () => 'second'), WAIT, 'duplicate REGISTER');
    assertWampError(err, 'wamp.error.procedure_already_exists', 'duplicate register (other session)');
    // the original registration still works
    assert.equal(await within(second.session.call(proc), WAIT, 'RESULT'), 'first');
    await closeChecked(first, 'first');
    await closeChecked(second, 'second');
  });

  it('registering a taken procedure from the same session fails with wamp.error.procedure_already_exists', t, async () => {
    const proc = base('taken_twice');
    const callee = await open();
    await within(callee.session.register(proc, () => 'first'), WAIT, 'REGISTERED');
    const err = await rejectionOf(callee.session.register(proc, () => 'again'), WAIT, 'duplicate REGISTER');
    assertWampError(err, 'wamp.error.procedure_already_exists', 'duplicate register (same session)');
    await closeChecked(callee, 'callee');
  });

  it('an application error raised by the callee reaches the caller with uri, args and kwargs', t, async () => {
    const proc = base('fails');
    const callee = await open();
    const caller = await open();
    await within(
      callee.session.register(proc, () => {
        throw new autobahn.Error('com.example.error', [1, 2], { foo: 'bar' });
      }),
      WAIT,
      'REGISTERED',
    );
    const err = await rejectionOf(caller.session.call(proc, ['x']), WAIT, 'failing call');
    assertWampError(err, 'com.example.error', 'callee error');
    assert.deepEqual(err.args, [1, 2]);
    assert.deepEqual(err.kwargs, { foo: 'bar' });
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  advancedRpcSuite(open);
  advancedPubSubSuite(open);

  it('prefix subscription gets matching events with details.topic', t, async () => {
    const root = base('pfx');
    const prefix = `${root}.sensors`;
    const sub = await open();
    const pub = await open();
    const events = new Collector();
    await within(sub.session.subscribe(prefix, events.handler, { match: 'prefix' }), WAIT, 'SUBSCRIBED');
    const publish = (topic, args) => within(pub.session.publish(topic, args, {}, { acknowledge: true }), WAIT, 'PUBLISHED');
    await publish(`${root}.other.temp`, ['no match']);
    await publish(`${prefix}.kitchen.temp`, [1]);
    await publish(prefix, [2]);
    const got = await events.until(2, WAIT, 'prefix events');
    assert.deepEqual(
      got.map((e) => [e.details.topic, e.args]),
      [
        [`${prefix}.kitchen.temp`, [1]],
        [prefix, [2]],
      ],
    );
    await closeChecked(sub, 'subscriber');
    await closeChecked(pub, 'publisher');
  });

  it('wildcard subscription gets matching events with details.topic', t, async () => {
    const root = base('wc');
    const pattern = `${root}..temp`; // empty component matches any one component
    const sub = await open();
    const pub = await open();
    const events = new Collector();
    await within(sub.session.subscribe(pattern, events.handler, { match: 'wildcard' }), WAIT, 'SUBSCRIBED');
    const publish = (topic, args) => within(pub.session.publish(topic, args, {}, { acknowledge: true }), WAIT, 'PUBLISHED');
    await publish(`${root}.a.b.temp`, ['too deep']);
    await publish(`${root}.a.humidity`, ['wrong last component']);
    await publish(`${root}.kitchen.temp`, [1]);
    await publish(`${root}.garage.temp`, [2]);
    const got = await events.until(2, WAIT, 'wildcard events');
    assert.deepEqual(
      got.map((e) => [e.details.topic, e.args]),
      [
        [`${root}.kitchen.temp`, [1]],
        [`${root}.garage.temp`, [2]],
      ],
    );
    await closeChecked(sub, 'subscriber');
    await closeChecked(pub, 'publisher');
  });

  it('pattern registrations (prefix, wildcard) pass details.procedure to the callee', t, async () => {
    const root = base('rpc');
    const callee = await open();
    const caller = await open();
    const who = (tag) => (args, kwargs, details) => [tag, details.procedure, args];
    await within(callee.session.register(`${root}.math`, who('prefix'), { match: 'prefix' }), WAIT, 'REGISTERED');
    await within(callee.session.register(`${root}..wc`, who('wildcard'), { match: 'wildcard' }), WAIT, 'REGISTERED');
    const call = (p, a) => within(caller.session.call(p, a), WAIT, `call ${p}`);
    assert.deepEqual(await call(`${root}.math.add`, [1, 2]), ['prefix', `${root}.math.add`, [1, 2]]);
    assert.deepEqual(await call(`${root}.anything.wc`, [UNICODE]), ['wildcard', `${root}.anything.wc`, [UNICODE]]);
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('pattern registrations: exact beats prefix, longest prefix wins', t, async () => {
    const root = base('prec');
    const callee = await open();
    const caller = await open();
    const tag = (name) => (args, kwargs, details) => [name, details.procedure];
    await within(callee.session.register(`${root}.a`, tag('short'), { match: 'prefix' }), WAIT, 'REGISTERED');
    await within(callee.session.register(`${root}.a.b`, tag('long'), { match: 'prefix' }), WAIT, 'REGISTERED');
    await within(callee.session.register(`${root}.a.b.exact`, tag('exact')), WAIT, 'REGISTERED');
    const call = (p) => within(caller.session.call(p), WAIT, `call ${p}`);
    assert.deepEqual(await call(`${root}.a.b.exact`), ['exact', `${root}.a.b.exact`]);
    assert.deepEqual(await call(`${root}.a.b.other`), ['long', `${root}.a.b.other`]);
    assert.deepEqual(await call(`${root}.a.x`), ['short', `${root}.a.x`]);
    await closeChecked(callee, 'callee');
    await closeChecked(caller, 'caller');
  });

  it('callee leaving (GOODBYE) with a call pending: caller gets an error', t, async () => {
    const proc = base('leaver');
    const callee = await open();
    const caller = await open();
    const invoked = deferred();
    await within(
      callee.session.register(proc, () => {
        invoked.resolve();
        return new Promise(() => {}); // never answered
      }),
      WAIT,
      'REGISTERED',
    );
    const pending = caller.session.call(proc, ['hello']);
    pending.catch(() => {}); // observed below
    await within(invoked.promise, WAIT, 'INVOCATION at the callee');
    await closeChecked(callee, 'callee');
    const err = await rejectionOf(pending, WAIT, 'call whose callee left');
    assertWampError(err, /^wamp\.error\.cancell?ed$/, 'pending call after callee GOODBYE');
    await closeChecked(caller, 'caller');
  });

  it('callee process killed with a call pending: caller gets an error', t, async () => {
    const proc = base('crasher');
    const caller = await open();
    const callee = spawnCallee(getUrl(), ser, proc);
    try {
      await callee.waitLine('READY');
      const pending = caller.session.call(proc, ['hello']);
      pending.catch(() => {}); // observed below
      await callee.waitLine('INVOKED');
      callee.child.kill('SIGKILL');
      await callee.exited;
      const err = await rejectionOf(pending, WAIT, 'call whose callee died');
      assertWampError(err, /^wamp\.error\.cancell?ed$/, 'pending call after callee crash');
    } finally {
      callee.child.kill('SIGKILL');
    }
    await closeChecked(caller, 'caller');
  });
}

// ---------------------------------------------------------------------------
// The RawSocket suite: autobahn-js's RawSocket transport (TCP), JSON only.

function rawSocketSuite(getTarget) {
  const open = (opts) => openRawSocket(getTarget(), opts);
  roundTripSuite(open, { transport: 'rawsocket', ser: 'json' });
  advancedRpcSuite(open);
  advancedPubSubSuite(open);
}

// ---------------------------------------------------------------------------
// Sessions on different serializers or transports talking to each other (the
// router transcodes payloads between JSON, MessagePack and CBOR, and splices
// them where both use one serializer). a and b: { label, ser, open }, ser the
// serializer, open() a promise of a connect() handle bounded by WAIT.
// Binary values: autobahn-js's MessagePack (msgpack5) and CBOR (`cbor`)
// serializers send a Buffer as bin / a byte string and decode those to a
// Buffer; its JSON serializer knows no bytes, so a JSON session sends and
// gets the spec's "\u0000" + base64 strings (binaryPayload).

function mixedSuite(a, b) {
  const t = { timeout: TEST_TIMEOUT };

  for (const [src, dst] of [
    [a, b],
    [b, a],
  ]) {
    const [from, to] = [src.label, dst.label];
    it(`${from} publisher -> ${to} subscriber: payload intact`, t, async () => {
      const topic = base('mixed_topic');
      const sub = await dst.open();
      const pub = await src.open();
      const events = new Collector();
      await within(sub.session.subscribe(topic, events.handler), WAIT, 'SUBSCRIBED');
      await within(pub.session.publish(topic, PAYLOAD_ARGS, PAYLOAD_KWARGS, { acknowledge: true }), WAIT, 'PUBLISHED');
      const sent = binaryPayload(src.ser);
      await within(pub.session.publish(topic, sent.args, sent.kwargs, { acknowledge: true }), WAIT, 'PUBLISHED binary');
      const [ev, bin] = await events.until(2, WAIT, 'events');
      assertSameValues(ev.args, PAYLOAD_ARGS, 'EVENT args');
      assertSameValues(ev.kwargs, PAYLOAD_KWARGS, 'EVENT kwargs');
      const want = binaryPayload(dst.ser);
      assertSameValues(bin.args, want.args, `binary EVENT args (${src.ser} -> ${dst.ser})`);
      assertSameValues(bin.kwargs, want.kwargs, `binary EVENT kwargs (${src.ser} -> ${dst.ser})`);
      await closeChecked(sub, 'subscriber');
      await closeChecked(pub, 'publisher');
    });

    it(`${from} caller -> ${to} callee: payload and errors intact`, t, async () => {
      // The callee answers with its own copy of what the caller sent (not
      // the values it decoded, which the `cbor` package may have made
      // BigInts: see bignumSuite for what those become).
      const proc = base('mixed_echo');
      const procBin = base('mixed_bin');
      const procErr = base('mixed_error');
      const callee = await dst.open();
      const caller = await src.open();
      let seen = null;
      const answer = (reply) => (args, kwargs) => {
        seen = { args, kwargs };
        return new autobahn.Result(reply.args, reply.kwargs);
      };
      await within(callee.session.register(proc, answer({ args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS })), WAIT, 'REGISTERED');
      await within(callee.session.register(procBin, answer(binaryPayload(dst.ser))), WAIT, 'REGISTERED');
      await within(
        callee.session.register(procErr, () => {
          throw new autobahn.Error('com.example.error', [UNICODE, 2 ** 53, binaryPayload(dst.ser).args[0]], { nested: { ok: false } });
        }),
        WAIT,
        'REGISTERED',
      );
      const res = await within(caller.session.call(proc, PAYLOAD_ARGS, PAYLOAD_KWARGS), WAIT, 'RESULT');
      assertSameValues(seen, { args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS }, 'INVOCATION payload at the callee');
      assertSameValues(res.args, PAYLOAD_ARGS, 'RESULT args');
      assertSameValues(res.kwargs, PAYLOAD_KWARGS, 'RESULT kwargs');
      // bytes from the caller reach the callee in its serializer's form, and
      // the callee's reply reaches the caller in the caller's
      const sent = binaryPayload(src.ser);
      const echoed = await within(caller.session.call(procBin, sent.args, sent.kwargs), WAIT, 'RESULT binary');
      assertSameValues(seen, binaryPayload(dst.ser), `binary INVOCATION (${src.ser} -> ${dst.ser})`);
      assertSameValues(echoed.args, sent.args, `binary RESULT args (${dst.ser} -> ${src.ser})`);
      assertSameValues(echoed.kwargs, sent.kwargs, `binary RESULT kwargs (${dst.ser} -> ${src.ser})`);
      const err = await rejectionOf(caller.session.call(procErr), WAIT, 'failing call');
      assertWampError(err, 'com.example.error', 'callee error');
      assertSameValues(err.args, [UNICODE, 2 ** 53, binaryPayload(src.ser).args[0]], 'ERROR args');
      assert.deepEqual(err.kwargs, { nested: { ok: false } });
      await closeChecked(callee, 'callee');
      await closeChecked(caller, 'caller');
    });
  }
}

// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// BigInts from autobahn-js's CBOR serializer. The `cbor` package encodes
// every BigInt as a bignum, tag 2 (or 3, negative) on the big-endian bytes
// (2n**53n: c2 47 20 00 00 00 00 00 00), and decodes integers beyond
// 2**53 - 1 as BigInts, so a CBOR session that passes on an integer it got
// sends a bignum. RFC 8949 (3.4.3) makes a bignum an integer. ws(ser): a
// { label, ser, open } for a WebSocket session on ser.

// Integers a double holds exactly, so that JSON.parse keeps them.
const BIGINTS = [2n ** 53n, 2n ** 60n, -(2n ** 63n), 5n, -5n];

function bignumSuite(ws) {
  const t = { timeout: TEST_TIMEOUT };
  const others = SERIALIZERS.filter((s) => s !== 'cbor');
  // One publish from a CBOR session to a subscriber on each serializer;
  // resolves to { ser: EVENT args }.
  async function publishBigints(serializers) {
    const topic = base('bignum');
    const subs = [];
    for (const ser of serializers) subs.push({ ser, h: await ws(ser).open(), col: new Collector() });
    for (const s of subs) await within(s.h.session.subscribe(topic, s.col.handler), WAIT, `SUBSCRIBED (${s.ser})`);
    const pub = await ws('cbor').open();
    await within(pub.session.publish(topic, BIGINTS, {}, { acknowledge: true }), WAIT, 'PUBLISHED');
    const got = {};
    for (const s of subs) got[s.ser] = (await s.col.until(1, WAIT, `the EVENT (${s.ser})`))[0].args;
    for (const s of subs) await closeChecked(s.h, `subscriber (${s.ser})`);
    await closeChecked(pub, 'publisher');
    return got;
  }

  it('BigInts (CBOR bignums, tags 2 and 3) spliced CBOR to CBOR arrive as the same BigInts', t, async () => {
    const got = await publishBigints(['cbor']);
    assert.deepEqual(got.cbor, BIGINTS);
  });

  // The router reads a bignum as the integer it stands for (RFC 8949
  // 3.4.3), so JSON and MessagePack sessions get integers. (It used to read
  // the value under the tag, the content bytes: 2n**53n arrived as
  // "\u0000IAAAAAAAAA==" in JSON.)
  it('BigInts (CBOR bignums) transcoded to JSON and MessagePack arrive as the integers', { ...t, skip: !others.length && 'SERIALIZERS has only cbor' }, async () => {
    const got = await publishBigints(others);
    for (const ser of others) assertSameValues(got[ser], BIGINTS.map(Number), `EVENT args at the ${ser} subscriber`);
  });
}

// Every pair of distinct items of xs, each once.
function pairs(xs) {
  return xs.flatMap((x, i) => xs.slice(i + 1).map((y) => [x, y]));
}

// GET `path` over HTTP on TCP port or Unix socket socketPath:
// { status, type, body }.
function httpGet({ port, socketPath, path: reqPath }) {
  return new Promise((resolve, reject) => {
    const target = socketPath ? { socketPath } : { host: '127.0.0.1', port };
    const req = http.get({ ...target, path: reqPath, timeout: WAIT }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${reqPath} timed out`)));
    req.on('error', reject);
  });
}

// Tests of one listener set itself (switchyard only): which transport a
// session on each of its endpoints has (wamp.session.get), GET /metrics on
// the universal listener's TCP port and Unix socket, the Unix sockets' modes.
function listenerSuite(ctx, L) {
  const t = { timeout: TEST_TIMEOUT };
  const universal = L.name === 'universal';

  it(`every endpoint of the ${L.title} gives a session on the transport it was opened with (wamp.session.get)`, t, async () => {
    const opened = [
      ['websocket', 'TCP', await openWebSocket(L.url(), SERIALIZERS[0])],
      ['rawsocket', 'TCP', await openRawSocket(L.rawsocket())],
      ['websocket', 'a Unix socket', await openWebSocket(L.unixWebsocketUrl(), SERIALIZERS[0])],
      ['rawsocket', 'a Unix socket', await openRawSocket({ path: L.unixRawsocket() })],
    ];
    const [observer] = opened[0].slice(2);
    for (const [type, over, h] of opened) {
      const info = await within(observer.session.call('wamp.session.get', [h.session.id]), WAIT, 'wamp.session.get');
      assert.equal(info.transport && info.transport.type, type, `${type} over ${over}: wamp.session.get transport ${JSON.stringify(info.transport)}`);
    }
    for (const [type, over, h] of opened.reverse()) await closeChecked(h, `${type} over ${over}`);
  });

  if (universal) {
    it('GET /metrics on the universal listener (TCP port and Unix socket) answers what the WebSocket listener does', t, async () => {
      const h = await openRawSocket(L.rawsocket()); // one session at least
      const got = [];
      for (const [what, target] of [
        ['the WebSocket listener', { port: ctx.router().port }],
        ['the universal TCP port', { port: L.metricsPort() }],
        ['the universal Unix socket', { socketPath: L.unixRawsocket() }],
      ]) {
        const res = await within(httpGet({ ...target, path: '/metrics' }), WAIT, `GET /metrics on ${what}`);
        assert.equal(res.status, 200, `GET /metrics on ${what}: HTTP ${res.status}: ${res.body.slice(0, 200)}`);
        assert.match(res.type || '', /^text\/plain/, `GET /metrics on ${what}: Content-Type`);
        const m = parseMetrics(res.body);
        assert.equal((m.sessions || []).length, ctx.shards, `GET /metrics on ${what}: a sessions gauge per shard: ${res.body.slice(0, 300)}`);
        got.push([what, Object.keys(m).sort()]);
      }
      for (const [what, names] of got.slice(1)) assert.deepEqual(names, got[0][1], `the metrics ${what} lists`);
      await closeChecked(h, 'rawsocket session');
    });
  } else {
    it('the Unix sockets carry the permission bits their listeners set (mode = "660", "600")', t, () => {
      for (const [k, p] of [
        ['rawsocket', L.unixRawsocket()],
        ['websocket', L.unixWebsocket()],
      ]) {
        const st = fs.statSync(p);
        assert.ok(st.isSocket(), `${p} is not a socket`);
        assert.equal((st.mode & 0o777).toString(8), UNIX_MODES[k], `mode of the ${k} listener's socket ${p}`);
      }
    });
  }
}

describeEachRouter({ closeAll }, (ctx) => {
  // RawSocket, Unix sockets and the universal listener: switchyard only (the
  // harness gives Crossbar.io and ROUTER_URL routers a WebSocket listener on
  // TCP alone); autobahn-js speaks JSON alone over RawSocket.
  const noRawSocket = !RAWSOCKET && `the harness starts RawSocket and Unix socket listeners for switchyard only (router: ${kind})`;
  for (const L of ctx.listeners) {
    describe(L.title, () => {
      for (const ser of SERIALIZERS) {
        describe(`websocket ${ser}`, () => serializerSuite(L.url, ser));
      }
      describe('rawsocket json', { skip: noRawSocket }, () => rawSocketSuite(L.rawsocket));
      describe('rawsocket json over a Unix socket', { skip: noRawSocket }, () => rawSocketSuite(() => ({ path: L.unixRawsocket() })));
      for (const ser of SERIALIZERS) {
        describe(`websocket ${ser} over a Unix socket`, { skip: noRawSocket }, () =>
          roundTripSuite((opts) => openWebSocket(L.unixWebsocketUrl(), ser, opts), { transport: 'websocket', ser }));
      }
      describe('the listeners themselves', { skip: noRawSocket }, () => listenerSuite(ctx, L));

      // Across serializers: every pair, each way round (mixedSuite), binary
      // values included.
      const ws = (ser) => ({ label: `websocket ${ser}`, ser, open: () => openWebSocket(L.url(), ser) });
      for (const [x, y] of pairs(SERIALIZERS)) {
        describe(`websocket ${x} <-> websocket ${y}`, () => mixedSuite(ws(x), ws(y)));
      }
      if (SERIALIZERS.includes('cbor')) describe('websocket cbor BigInts', () => bignumSuite(ws));
      // Across transports: RawSocket JSON sessions (TCP, Unix socket) and
      // WebSocket sessions on every serializer, both roles.
      const rs = { label: 'rawsocket json', ser: 'json', open: () => openRawSocket(L.rawsocket()) };
      const rsUnix = { label: 'rawsocket json (Unix socket)', ser: 'json', open: () => openRawSocket({ path: L.unixRawsocket() }) };
      const wsUnix = (ser) => ({ label: `websocket ${ser} (Unix socket)`, ser, open: () => openWebSocket(L.unixWebsocketUrl(), ser) });
      for (const ser of SERIALIZERS) {
        describe(`rawsocket json <-> websocket ${ser}`, { skip: noRawSocket }, () => mixedSuite(rs, ws(ser)));
        describe(`rawsocket json (Unix socket) <-> websocket ${ser} (Unix socket)`, { skip: noRawSocket }, () => mixedSuite(rsUnix, wsUnix(ser)));
      }
    });
  }
});
