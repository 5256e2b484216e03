'use strict';
// Interop tests: Switchyard (or a reference router) driven by the wampy client
// (npm `wampy`, https://github.com/KSDaemon/wampy.js) over WebSocket, with the
// JSON, MessagePack and CBOR serializers, on TCP and on a Unix socket, against
// the dedicated listeners and the universal ones; and wampy sessions on
// different serializers talking to each other. Same environment variables as
// interop.test.js (SWITCHYARD_BIN, ROUTER, ROUTER_URL, SHARDS, SERIALIZERS,
// LISTENERS, INTEROP_VERBOSE). wampy has no RawSocket transport and no
// batched WebSocket (wamp.2.*.batched) support.
//
// On a router with more than one shard the tests place their sessions: each
// session's shard is read from the per-shard `sessions` gauge of GET /metrics
// before and after it joins, and sessions are opened until every shard holds
// enough of them. Publishers, subscribers, callers and callees are then picked
// so that traffic both stays on a shard and crosses between shards.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');

const { REALM } = require('./lib/router');
const {
  Errors,
  MSG,
  connect,
  close,
  closeAll,
  openCount,
  eventCollector,
  subscribe,
  publishIncludingMe,
  idArg,
} = require('./lib/wampy');
const { show, within, rejectionOf, spawnScript } = require('./lib/util');
const { UNICODE, PAYLOAD_ARGS, PAYLOAD_KWARGS, binaryPayload, canonical } = require('./lib/payload');
const { SERIALIZERS, GOODBYE_REPLIES, RAWSOCKET, kind, uriBase, describeEachRouter } = require('./lib/suite');

const TEST_TIMEOUT = 30000; // per test; only a bound against hangs, never asserted
const WAIT = 10000; // per awaited step inside a test
const MAX_PLACED = 40; // sessions opened at most while filling every shard

// A fresh URI prefix per test (see uriBase). The tag keeps to letters, as
// wampy's strict URI check allows only letters, digits and dots.
const base = uriBase('wampy');

// A WAMP id as a number. wampy's MessagePack decoder (msgpackr) returns 64-bit
// integers as BigInt, so ids above 2**32 arrive as BigInt over MessagePack.
function idOf(v, what) {
  const ok =
    typeof v === 'bigint' ? v >= 1n && v <= 2n ** 53n : Number.isInteger(v) && v >= 1 && v <= 2 ** 53;
  assert.ok(ok, `${what}: not a WAMP id: ${show(v)}`);
  return Number(v);
}

// Payload values compared exactly, whatever JS type the decoder picked (see
// canonical in lib/payload.js: msgpackr returns 64-bit integers as BigInt,
// cbor-x byte strings as Uint8Array).
function assertSameValues(actual, expected, what) {
  assert.deepEqual(canonical(actual), canonical(expected), what);
}

// A binary value as wampy sends it: a Uint8Array. msgpackr writes it as bin;
// cbor-x as a byte string under tag 64 (RFC 8746 uint8 typed array), which
// the router drops when it transcodes and keeps when it splices CBOR to CBOR.
const wampyBytes = (b) => new Uint8Array(b);

function assertCallError(err, uri, what) {
  assert.ok(err instanceof Errors.CallError, `${what}: expected a wampy CallError, got ${err && (err.stack || show(err))}`);
  assert.equal(err.errorUri, uri, `${what}: error URI`);
}

async function closeChecked(h, what) {
  await within(close(h), WAIT, `${what} to close`);
  assert.ok(!h.client.getSessionId(), `${what}: session still open after disconnect()`);
  assert.ok(
    h.tap.sent.some((m) => m[0] === MSG.GOODBYE),
    `${what}: wampy sent no GOODBYE`,
  );
  const reply = h.tap.received.find((m) => m[0] === MSG.GOODBYE);
  assert.ok(reply, `${what}: no GOODBYE reply from the router; last received: ${show(h.tap.received.slice(-3))}`);
  assert.ok(GOODBYE_REPLIES.includes(reply[2]), `${what}: router's GOODBYE reply ${show(reply)}`);
  assert.deepEqual(h.errors.map(String), [], `${what}: wampy reported errors`);
}

const closeEach = (hs, what) => Promise.all(hs.map((h, i) => closeChecked(h, `${what} ${i} (shard ${h.shard})`)));

// ---------------------------------------------------------------------------
// Placing sessions on shards.

// port: the TCP port whose GET /metrics to read (default: the WebSocket
// listener's).
async function sessionsPerShard(router, port = router.port) {
  const m = await router.metrics(5000, port);
  assert.ok(Array.isArray(m.sessions), 'GET /metrics has no switchyard_sessions gauge');
  return m.sessions;
}

const sum = (a) => a.reduce((x, y) => x + y, 0);

// Waits until the router counts exactly the sessions this process holds open
// (sessions an earlier test closed or dropped are gone), so that the gauge
// changes only when the next session joins.
async function quiesce(router, port) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const s = await sessionsPerShard(router, port);
    if (sum(s) === openCount()) return;
    if (Date.now() > deadline) {
      throw new Error(`router counts sessions ${show(s)}, this process holds ${openCount()} open`);
    }
    await sleep(20);
  }
}

// Opens one session and finds the shard it joined on. The router counts a
// session before it sends WELCOME, so the gauge has moved once open() returns.
async function openPlaced(router, port, open) {
  const before = await sessionsPerShard(router, port);
  const h = await open();
  const after = await sessionsPerShard(router, port);
  const diff = after.map((n, i) => n - (before[i] || 0));
  const grown = diff.findIndex((d) => d !== 0);
  if (grown < 0 || diff[grown] !== 1 || diff.some((d, i) => d !== 0 && i !== grown)) {
    throw new Error(`sessions per shard went from ${show(before)} to ${show(after)} while one session joined`);
  }
  h.shard = grown;
  return h;
}

// Opens sessions until every shard holds at least perShard of them and
// returns them all, each with .shard. With one shard, or a router without
// Switchyard's /metrics, opens perShard * shards sessions (.shard 0 or null).
async function spread(ctx, open, perShard) {
  const router = ctx.router();
  if (ctx.shards === 1 || !router.hasMetrics()) {
    const hs = [];
    for (let i = 0; i < perShard * ctx.shards; i++) hs.push(await open());
    for (const h of hs) h.shard = ctx.shards === 1 ? 0 : null;
    return hs;
  }
  const port = ctx.metricsPort ? ctx.metricsPort() : router.port;
  await quiesce(router, port);
  const hs = [];
  const count = new Array(ctx.shards).fill(0);
  while (count.some((c) => c < perShard)) {
    if (hs.length >= MAX_PLACED) {
      throw new Error(`after ${hs.length} sessions the shards hold ${show(count)}: the kernel did not spread connections`);
    }
    const h = await openPlaced(router, port, open);
    count[h.shard] += 1;
    hs.push(h);
  }
  return hs;
}

// The first session on each shard (one session when shards are unknown).
function firstOnEach(hs) {
  const seen = new Set();
  return hs.filter((h) => {
    if (seen.has(h.shard)) return false;
    seen.add(h.shard);
    return true;
  });
}

// Opens two sessions per shard (see spread) and splits them into the first
// session on each shard (`firsts`) and the others (`rest`).
async function spreadSplit(ctx, open) {
  const hs = await spread(ctx, open, 2);
  const firsts = firstOnEach(hs);
  return { hs, firsts, rest: hs.filter((h) => !firsts.includes(h)) };
}

// Opens two sessions per shard (see spread) and picks the first one opened
// (`first`) and, among the others, the first session on each shard (`others`).
async function spreadFirstAndOthers(ctx, open) {
  const hs = await spread(ctx, open, 2);
  return { hs, first: hs[0], others: firstOnEach(hs.slice(1)) };
}

// Runs fn(caller, k, what) for every caller and every callee, in order:
// k is the callee's index, what names both sessions and their shards.
async function eachCallerCallee(callers, callees, fn) {
  for (const [i, caller] of callers.entries()) {
    for (const [k, callee] of callees.entries()) {
      await fn(caller, k, `caller ${i} (shard ${caller.shard}) -> callee ${k} (shard ${callee.shard})`);
    }
  }
}

// Calls proc until the router answers wamp.error.no_such_procedure; returns
// the error URIs seen. The router drops a registration when it notices that
// the callee's transport is gone, and other shards learn of it through their
// queues, so a call in between may still be routed to the old callee and come
// back wamp.error.canceled. A RESULT never may, and the wait is bounded.
async function untilNoSuchProcedure(caller, proc, what) {
  const outcomes = [];
  const deadline = Date.now() + WAIT;
  for (;;) {
    const err = await rejectionOf(caller.client.call(proc, ['ping']), WAIT, `${what}: call`);
    assert.ok(err instanceof Errors.CallError, `${what}: expected a CallError, got ${err && (err.stack || show(err))}`);
    outcomes.push(err.errorUri);
    if (err.errorUri === 'wamp.error.no_such_procedure') return outcomes;
    assert.match(err.errorUri, /^wamp\.error\.cancell?ed$/, `${what}: unexpected errors ${show(outcomes)}`);
    if (Date.now() > deadline) {
      throw new Error(`${what}: no wamp.error.no_such_procedure within ${WAIT} ms; got ${show(outcomes)}`);
    }
    await sleep(20);
  }
}

// An application error a wampy callee throws: wampy sends ERROR with the
// error, argsList and argsDict properties of what the procedure throws.
class AppError extends Error {
  constructor(uri, argsList, argsDict) {
    super(uri);
    this.error = uri;
    this.argsList = argsList;
    this.argsDict = argsDict;
  }
}

// ---------------------------------------------------------------------------
// The suite for one serializer, all sessions using it, on the listener set L
// (lib/suite.js listenerSet): its WebSocket URL, and its GET /metrics for
// placing sessions on shards.

function wampySuite(parent, L, ser) {
  const ctx = { ...parent, url: L.url, metricsPort: L.metricsPort };
  const open = (opts = {}) => within(connect(ctx.url(), { serializer: ser, ...opts }), WAIT, `${ser} session to open`);
  const t = { timeout: TEST_TIMEOUT };

  it('connects to realm1 with a session id and WELCOME details, and disconnects with GOODBYE', t, async () => {
    const hs = await spread(ctx, open, 1);
    const ids = new Set();
    for (const h of hs) {
      ids.add(idOf(h.client.getSessionId(), 'session id'));
      assert.equal(h.tap.sent[0][0], MSG.HELLO, 'first message sent is HELLO');
      assert.equal(h.tap.sent[0][1], REALM, 'HELLO realm');
      assert.equal(h.tap.received[0][0], MSG.WELCOME, 'first message received is WELCOME');
      assert.equal(h.details.realm, REALM, 'WELCOME.Details.realm');
      assert.equal(typeof h.details.roles, 'object', `WELCOME.Details.roles missing: ${show(h.details)}`);
      assert.equal(typeof h.details.roles.broker, 'object', 'WELCOME does not announce the broker role');
      assert.equal(typeof h.details.roles.dealer, 'object', 'WELCOME does not announce the dealer role');
    }
    assert.equal(ids.size, hs.length, 'two sessions got the same id');
    // closeChecked: wampy's GOODBYE (reason wamp.close.system_shutdown) gets
    // the router's GOODBYE reply, then the WebSocket closes.
    await closeEach(hs, 'session');
  });

  it('joining an unknown realm is refused with ABORT wamp.error.no_such_realm', t, async () => {
    const err = await rejectionOf(
      connect(ctx.url(), { serializer: ser, realm: 'com.example.no_such_realm' }),
      WAIT,
      'join of an unknown realm',
    );
    assert.ok(err instanceof Errors.AbortError, `expected a wampy AbortError, got ${err && (err.stack || show(err))}`);
    assert.equal(err.errorUri, 'wamp.error.no_such_realm', `ABORT reason: ${show(err)}`);
  });

  it('publish: args and kwargs arrive intact at subscribers on every shard; PUBLISHED acknowledges', t, async () => {
    const topic = base('topic');
    // One publisher per shard, not subscribed.
    const { hs, firsts: pubs, rest: subs } = await spreadSplit(ctx, open);
    const cols = subs.map(() => eventCollector());
    const subscribed = await within(
      Promise.all(subs.map((s, i) => subscribe(s, topic, cols[i].handler))),
      WAIT,
      'all SUBSCRIBED',
    );
    for (const s of subscribed) idOf(s.subscriptionId, 'subscription id');

    const pubIds = [];
    for (const [k, p] of pubs.entries()) {
      const ack = await within(
        p.client.publish(topic, { argsList: [k, ...PAYLOAD_ARGS], argsDict: PAYLOAD_KWARGS }),
        WAIT,
        'PUBLISHED',
      );
      pubIds.push(idOf(ack.publicationId, 'publication id'));
      const sent = p.tap.sent.find((m) => m[0] === MSG.PUBLISH);
      assert.equal(sent[2].acknowledge, true, `wampy publishes with acknowledge: true: ${show(sent)}`);
    }
    assert.equal(new Set(pubIds).size, pubIds.length, 'two publications got the same id');
    // A last 'fence' event from every publisher: events of one publisher
    // arrive in publication order, so once a subscriber has every fence, a
    // duplicate of an earlier event would have arrived too.
    for (const p of pubs) await within(p.client.publish(topic, ['fence']), WAIT, 'PUBLISHED');

    for (const [i, col] of cols.entries()) {
      const what = `subscriber ${i} (shard ${subs[i].shard})`;
      const got = (await col.until(2 * pubs.length, WAIT, `events at ${what}`)).slice();
      const payloads = got.filter((e) => e.args[0] !== 'fence').sort((a, b) => a.args[0] - b.args[0]);
      assert.equal(got.length, 2 * pubs.length, `${what}: event count`);
      assert.equal(payloads.length, pubs.length, `${what}: payload events`);
      for (const [k, ev] of payloads.entries()) {
        assert.deepEqual(ev.args, [k, ...PAYLOAD_ARGS], `${what}: args from publisher ${k}`);
        assert.deepEqual(ev.kwargs, PAYLOAD_KWARGS, `${what}: kwargs from publisher ${k}`);
      }
    }
    await closeEach(hs, 'session');
  });

  it('events of one publisher arrive in order at subscribers on every shard', t, async () => {
    const topic = base('order');
    const N = 30;
    const { hs, firsts: pubs, rest: subs } = await spreadSplit(ctx, open);
    const cols = subs.map(() => eventCollector());
    await within(Promise.all(subs.map((s, i) => subscribe(s, topic, cols[i].handler))), WAIT, 'all SUBSCRIBED');
    // Every publisher sends N numbered events without waiting in between.
    const acks = await within(
      Promise.all(pubs.flatMap((p, k) => Array.from({ length: N }, (_, n) => p.client.publish(topic, [k, n])))),
      WAIT,
      'all PUBLISHED',
    );
    assert.equal(new Set(acks.map((a) => idOf(a.publicationId, 'publication id'))).size, acks.length);
    for (const [i, col] of cols.entries()) {
      const what = `subscriber ${i} (shard ${subs[i].shard})`;
      const got = await col.until(N * pubs.length, WAIT, `events at ${what}`);
      for (const k of pubs.keys()) {
        assert.deepEqual(
          got.filter((e) => e.args[0] === k).map((e) => e.args[1]),
          Array.from({ length: N }, (_, n) => n),
          `${what}: events of publisher ${k} (shard ${pubs[k].shard}) missing or out of order`,
        );
      }
    }
    await closeEach(hs, 'session');
  });

  it('publisher exclusion: no own event by default or with exclude_me: true; own event with exclude_me: false', t, async () => {
    const topic = base('exclusion');
    const hs = await spread(ctx, open, 2);
    const cols = hs.map(() => eventCollector());
    await within(Promise.all(hs.map((h, i) => subscribe(h, topic, cols[i].handler))), WAIT, 'all SUBSCRIBED');
    const pubs = firstOnEach(hs); // subscribed publishers, one per shard
    for (const [k, p] of pubs.entries()) {
      await within(p.client.publish(topic, ['default', k]), WAIT, 'PUBLISHED');
      await within(p.client.publish(topic, ['exclude_me true', k], { exclude_me: true }), WAIT, 'PUBLISHED');
      await within(publishIncludingMe(p.client, topic, ['exclude_me false', k]), WAIT, 'PUBLISHED');
      assert.deepEqual(
        p.tap.sent.filter((m) => m[0] === MSG.PUBLISH).map((m) => m[2].exclude_me),
        [undefined, true, false],
        'PUBLISH.Options.exclude_me on the wire',
      );
    }
    // Events of one publisher arrive in publication order: an own event the
    // router should have withheld would arrive before the publisher's own
    // 'exclude_me false' event, and so would be among the events compared.
    for (const [i, h] of hs.entries()) {
      const what = `session ${i} (shard ${h.shard})`;
      const expected = pubs.map((p) =>
        p === h ? ['exclude_me false'] : ['default', 'exclude_me true', 'exclude_me false'],
      );
      const got = await cols[i].until(sum(expected.map((e) => e.length)), WAIT, `events at ${what}`);
      for (const [k, p] of pubs.entries()) {
        assert.deepEqual(
          got.filter((e) => e.args[1] === k).map((e) => e.args[0]),
          expected[k],
          `${what}: events of publisher ${k} (shard ${p.shard})${p === h ? ' (itself)' : ''}`,
        );
      }
    }
    await closeEach(hs, 'session');
  });

  it('progressive call invocations: progressiveCall chunks reach one callee as INVOCATIONs of one request, in order', t, async (tc) => {
    if (kind !== 'switchyard') {
      tc.skip('wampy does not announce the feature; the test adds it, which only the Switchyard run checks');
      return;
    }
    // wampy 8.0.2 implements progressiveCall (caller) and passes
    // INVOCATION.Details.progress to its callee's handler, but announces
    // progressive_call_invocations for neither role; the spec has the dealer
    // refuse both then, so the test adds the announcement (and, for the
    // callee, call_canceling, which the spec requires beside it; no
    // INTERRUPT is sent in this test).
    const root = base('chunks');
    const features = {
      caller: { progressive_call_invocations: true },
      callee: { progressive_call_invocations: true, call_canceling: true },
    };
    const hs = await spread(ctx, () => open({ features }), 2);
    // on 2 shards: the callee on one, the caller on the other
    const callee = hs[0];
    const caller = hs.find((h) => h !== callee && (ctx.shards === 1 || h.shard !== callee.shard));
    const seen = [];
    await within(
      callee.client.register(`${root}.sum`, ({ argsList, details }) => {
        seen.push({ n: argsList[0], progress: !!details.progress });
        const sum = seen.reduce((a, s) => a + s.n, 0);
        // a progressive YIELD for the chunks (dropped: the caller asked for
        // no progressive results), the sum for the final one
        return details.progress ? { argsList: [sum], options: { progress: true } } : { argsList: [sum] };
      }),
      WAIT,
      'REGISTERED',
    );
    const call = caller.client.progressiveCall(`${root}.sum`, [1]);
    call.sendData([2]);
    call.sendData([3], { progress: false });
    const res = await within(call.result, WAIT, 'RESULT');
    assert.deepEqual(res.argsList, [6]);
    assert.deepEqual(seen, [
      { n: 1, progress: true },
      { n: 2, progress: true },
      { n: 3, progress: false },
    ]);
    await closeEach(hs, 'session');
  });

  it('register + call: args and kwargs round-trip between callers and callees on every shard', t, async () => {
    const root = base('rpc');
    const { hs, firsts: callees, rest: callers } = await spreadSplit(ctx, open);
    const seen = [];
    for (const [k, c] of callees.entries()) {
      const reg = await within(
        c.client.register(`${root}.echo${k}`, ({ argsList, argsDict }) => {
          seen.push({ k, argsList, argsDict });
          return { argsList, argsDict };
        }),
        WAIT,
        'REGISTERED',
      );
      idOf(reg.registrationId, 'registration id');
      await within(c.client.register(`${root}.add${k}`, ({ argsList }) => [argsList[0] + argsList[1]]), WAIT, 'REGISTERED');
    }
    await eachCallerCallee(callers, callees, async (caller, k, what) => {
      const call = (proc, payload) => within(caller.client.call(`${root}.${proc}${k}`, payload), WAIT, `${what}: RESULT`);
      const res = await call('echo', { argsList: PAYLOAD_ARGS, argsDict: PAYLOAD_KWARGS });
      assert.deepEqual(res.argsList, PAYLOAD_ARGS, `${what}: RESULT args`);
      assert.deepEqual(res.argsDict, PAYLOAD_KWARGS, `${what}: RESULT kwargs`);
      assert.deepEqual((await call('add', [2 ** 52, 3])).argsList, [2 ** 52 + 3], `${what}: add`);
      assert.deepEqual((await call('add', [UNICODE, '!'])).argsList, [`${UNICODE}!`], `${what}: add strings`);
    });
    assert.equal(seen.length, callers.length * callees.length, 'INVOCATION count');
    for (const s of seen) {
      assert.deepEqual(s.argsList, PAYLOAD_ARGS, `INVOCATION args at callee ${s.k}`);
      assert.deepEqual(s.argsDict, PAYLOAD_KWARGS, `INVOCATION kwargs at callee ${s.k}`);
    }
    await closeEach(hs, 'session');
  });

  it('a call to an unregistered procedure fails with wamp.error.no_such_procedure', t, async () => {
    const proc = base('nobody_home');
    const hs = await spread(ctx, open, 1);
    for (const h of hs) {
      const err = await rejectionOf(h.client.call(proc, [1]), WAIT, 'call to an unregistered procedure');
      assertCallError(err, 'wamp.error.no_such_procedure', `caller on shard ${h.shard}`);
    }
    await closeEach(hs, 'session');
  });

  it('an error thrown by the callee reaches the caller with its URI, args and kwargs', t, async () => {
    const root = base('errors');
    const { hs, firsts: callees, rest: callers } = await spreadSplit(ctx, open);
    for (const [k, c] of callees.entries()) {
      await within(
        c.client.register(`${root}.fails${k}`, () => {
          throw new AppError('com.example.error', [1, 2, UNICODE], { foo: 'bar', big: 2 ** 53 });
        }),
        WAIT,
        'REGISTERED',
      );
      // Any other exception: wampy answers wamp.error.invocation_exception.
      await within(
        c.client.register(`${root}.crashes${k}`, () => {
          throw new TypeError('boom');
        }),
        WAIT,
        'REGISTERED',
      );
    }
    await eachCallerCallee(callers, callees, async (caller, k, what) => {
      const err = await rejectionOf(caller.client.call(`${root}.fails${k}`, ['x']), WAIT, `${what}: failing call`);
      assertCallError(err, 'com.example.error', what);
      assert.deepEqual(err.argsList, [1, 2, UNICODE], `${what}: ERROR args`);
      assert.deepEqual(err.argsDict, { foo: 'bar', big: 2 ** 53 }, `${what}: ERROR kwargs`);
      const crash = await rejectionOf(caller.client.call(`${root}.crashes${k}`), WAIT, `${what}: crashing call`);
      assertCallError(crash, 'wamp.error.invocation_exception', `${what} (TypeError in the callee)`);
    });
    await closeEach(hs, 'session');
  });

  it('payload passthru mode: ppt_* options reach INVOCATION, RESULT and EVENT details with the payload (wampy packs it)', t, async () => {
    const root = base('ppt');
    const { hs, firsts: callees, rest: callers } = await spreadSplit(ctx, open);
    const ppt = { ppt_scheme: 'x_custom', ppt_serializer: 'json' };
    for (const [k, c] of callees.entries()) {
      await within(
        c.client.register(`${root}.sealed${k}`, ({ argsList, argsDict, details }) => {
          assert.equal(details.ppt_scheme, 'x_custom', 'INVOCATION.Details.ppt_scheme');
          assert.equal(details.ppt_serializer, 'json', 'INVOCATION.Details.ppt_serializer');
          return { argsList: [argsList[0] * 2], argsDict, options: { ppt_scheme: 'x_custom', ppt_serializer: 'json' } };
        }),
        WAIT,
        'REGISTERED',
      );
    }
    await eachCallerCallee(callers, callees, async (caller, k, what) => {
      const res = await within(caller.client.call(`${root}.sealed${k}`, { argsList: [21], argsDict: { k } }, ppt), WAIT, `${what}: RESULT`);
      assert.deepEqual(res.argsList, [42], `${what}: RESULT args`);
      assert.deepEqual(res.argsDict, { k }, `${what}: RESULT kwargs`);
      assert.equal(res.details.ppt_scheme, 'x_custom', `${what}: RESULT.Details.ppt_scheme`);
    });
    // events
    const [sub, pub] = [callees[0], callers[callers.length - 1]];
    const got = eventCollector();
    await within(subscribe(sub, `${root}.topic`, got.handler), WAIT, 'SUBSCRIBED');
    await within(pub.client.publish(`${root}.topic`, { argsList: [1, 'two'], argsDict: { three: 3 } }, { ...ppt, acknowledge: true }), WAIT, 'PUBLISHED');
    const [ev] = await got.until(1, WAIT);
    assert.deepEqual(ev.args, [1, 'two'], 'EVENT args');
    assert.deepEqual(ev.kwargs, { three: 3 }, 'EVENT kwargs');
    assert.equal(ev.details.ppt_scheme, 'x_custom', 'EVENT.Details.ppt_scheme');
    await closeEach(hs, 'session');
  });

  it('prefix and wildcard subscriptions get matching events with details.topic', t, async () => {
    const root = base('patterns');
    const prefix = `${root}.sensors`;
    const wildcard = `${root}..temp`; // an empty component matches any one component
    const hs = await spread(ctx, open, 2);
    const subs = firstOnEach(hs);
    const pub = hs.find((h) => !subs.includes(h));
    const pcols = subs.map(() => eventCollector());
    const wcols = subs.map(() => eventCollector());
    await within(
      Promise.all(
        subs.flatMap((s, i) => [
          subscribe(s, prefix, pcols[i].handler, { match: 'prefix' }),
          subscribe(s, wildcard, wcols[i].handler, { match: 'wildcard' }),
        ]),
      ),
      WAIT,
      'all SUBSCRIBED',
    );
    // Non-matching topics first, a topic both patterns match last: events of
    // one publisher arrive in order, so a wrongly delivered event would be
    // among the ones compared.
    const topics = [
      `${root}.other.humidity`, // neither
      `${root}.a.b.temp`, // neither: one component too many for the wildcard
      `${root}.sensors.kitchen.humidity`, // prefix only
      prefix, // prefix only: the prefix itself
      `${root}.garage.temp`, // wildcard only
      `${root}.sensorsx.temp`, // both: a prefix match is a string prefix (spec: "emergency" matches "emergency-low")
      `${root}.sensors.temp`, // both
    ];
    for (const [n, topic] of topics.entries()) {
      await within(pub.client.publish(topic, [n]), WAIT, `PUBLISHED to ${topic}`);
    }
    const want = (names) => names.map((topic) => [topic, [topics.indexOf(topic)]]);
    for (const [i, s] of subs.entries()) {
      const what = `subscriber on shard ${s.shard}, publisher on shard ${pub.shard}`;
      const p = await pcols[i].until(4, WAIT, `prefix events (${what})`);
      assert.deepEqual(
        p.map((e) => [e.details.topic, e.args]),
        want([`${root}.sensors.kitchen.humidity`, prefix, `${root}.sensorsx.temp`, `${root}.sensors.temp`]),
        `prefix subscription: ${what}`,
      );
      const w = await wcols[i].until(3, WAIT, `wildcard events (${what})`);
      assert.deepEqual(
        w.map((e) => [e.details.topic, e.args]),
        want([`${root}.garage.temp`, `${root}.sensorsx.temp`, `${root}.sensors.temp`]),
        `wildcard subscription: ${what}`,
      );
    }
    await closeEach(hs, 'session');
  });

  it('prefix and wildcard registrations pass details.procedure to the callee', t, async () => {
    const root = base('rpcpatterns');
    const { hs, first: callee, others: callers } = await spreadFirstAndOthers(ctx, open);
    const who = (tag) => ({ argsList, details }) => [tag, details.procedure, argsList];
    await within(callee.client.register(`${root}.math`, who('prefix'), { match: 'prefix' }), WAIT, 'REGISTERED');
    await within(callee.client.register(`${root}..wc`, who('wildcard'), { match: 'wildcard' }), WAIT, 'REGISTERED');
    for (const caller of callers) {
      const what = `caller on shard ${caller.shard}, callee on shard ${callee.shard}`;
      const call = (p, a) => within(caller.client.call(p, a), WAIT, `${what}: call ${p}`);
      assert.deepEqual((await call(`${root}.math.add`, [1, 2])).argsList, ['prefix', `${root}.math.add`, [1, 2]], what);
      assert.deepEqual(
        (await call(`${root}.anything.wc`, [UNICODE])).argsList,
        ['wildcard', `${root}.anything.wc`, [UNICODE]],
        what,
      );
      const err = await rejectionOf(caller.client.call(`${root}.a.b.wc`), WAIT, `${what}: call matching nothing`);
      assertCallError(err, 'wamp.error.no_such_procedure', `${what}: ${root}.a.b.wc`);
    }
    await closeEach(hs, 'session');
  });

  it('a callee that closes its WebSocket without GOODBYE loses its registration', t, async () => {
    const proc = base('leaver');
    const { hs, first: callee, others: callers } = await spreadFirstAndOthers(ctx, open);
    await within(callee.client.register(proc, () => ['alive']), WAIT, 'REGISTERED');
    for (const c of callers) {
      assert.deepEqual((await within(c.client.call(proc), WAIT, 'RESULT')).argsList, ['alive']);
    }
    // abort() on an established session closes the WebSocket (close
    // handshake) without a WAMP GOODBYE.
    callee.client.abort();
    await within(callee.closed, WAIT, 'the callee WebSocket to close');
    assert.ok(!callee.tap.sent.some((m) => m[0] === MSG.GOODBYE), 'wampy sent GOODBYE on abort()');

    for (const c of callers) {
      await untilNoSuchProcedure(c, proc, `caller on shard ${c.shard}, callee was on shard ${callee.shard}`);
    }
    // The URI is free again, for a session on any shard.
    const again = await open();
    await within(again.client.register(proc, () => ['again']), WAIT, 'REGISTERED by a new callee');
    for (const c of callers) {
      assert.deepEqual((await within(c.client.call(proc), WAIT, 'RESULT')).argsList, ['again']);
    }
    await closeEach([...hs.slice(1), again], 'session');
  });

  it('a callee whose process is killed (no GOODBYE, no close frame) loses its registration', t, async () => {
    const proc = base('crasher');
    const callers = firstOnEach(await spread(ctx, open, 1));
    const callee = spawnScript(path.join(__dirname, 'lib', 'wampy-callee-proc.js'), [ctx.url(), ser, proc], WAIT);
    try {
      await callee.waitLine('READY');
      for (const c of callers) {
        assert.deepEqual((await within(c.client.call(proc), WAIT, 'RESULT')).argsList, ['alive']);
      }
      callee.child.kill('SIGKILL');
      await within(callee.exited, WAIT, 'the callee process to exit');
      for (const c of callers) {
        await untilNoSuchProcedure(c, proc, `caller on shard ${c.shard}`);
      }
    } finally {
      callee.child.kill('SIGKILL');
    }
    const again = await open();
    await within(again.client.register(proc, () => ['again']), WAIT, 'REGISTERED by a new callee');
    for (const c of callers) {
      assert.deepEqual((await within(c.client.call(proc), WAIT, 'RESULT')).argsList, ['again']);
    }
    await closeEach([...callers, again], 'session');
  });

  if (ser !== 'json') {
    // wampy's SUBSCRIBE carries `match: undefined, get_retained: undefined`
    // unless both are given. msgpackr encodes undefined as the MessagePack
    // extension value d4 00 00, which is no WAMP type; cbor-x as CBOR
    // `undefined` (f7), which the router reads as null, and a null match
    // policy is none. Either way the router must refuse the message
    // (lib/wampy.js subscribe() passes both options).
    const wire = ser === 'msgpack' ? ['MessagePack ext values', [0xd4, 0x00, 0x00]] : ['CBOR undefined', [0x65, ...Buffer.from('match'), 0xf7]];
    const title = `SUBSCRIBE with wampy's default options (${wire[0]}) gets ABORT wamp.error.protocol_violation`;
    it(title, t, async () => {
      const topic = base('ext');
      const bad = await open();
      const other = await open();
      const pending = bad.client.subscribe(topic, () => {});
      pending.catch(() => {}); // observed below
      const sent = bad.tap.sent.find((m) => m[0] === MSG.SUBSCRIBE);
      assert.ok(
        Buffer.from(bad.tap.inner.encode(sent)).includes(Buffer.from(wire[1])),
        `wampy's SUBSCRIBE no longer carries ${wire[0]} (drop this test and the workaround): ${show(sent)}`,
      );
      const err = await rejectionOf(pending, WAIT, 'SUBSCRIBE with ext values');
      assert.ok(err instanceof Error, `expected the subscribe to fail, got ${show(err)}`);
      await within(bad.closed, WAIT, 'the offending session to be closed');
      const abort = bad.tap.received.find((m) => m[0] === MSG.ABORT);
      if (kind === 'crossbar') {
        // Crossbar.io drops the connection (abort=True) without an ABORT message.
        assert.ok(!abort || abort[2] === 'wamp.error.protocol_violation', `ABORT ${show(abort)}`);
      } else {
        assert.ok(abort, `no ABORT before the close; received ${show(bad.tap.received)}`);
        assert.equal(abort[2], 'wamp.error.protocol_violation', `ABORT ${show(abort)}`);
      }
      // The router goes on serving everybody else.
      const ok = await within(subscribe(other, topic, () => {}), WAIT, 'SUBSCRIBED on another session');
      idOf(ok.subscriptionId, 'subscription id');
      await closeChecked(other, 'other session');
    });
  }
}

// ---------------------------------------------------------------------------
// WebSocket over a Unix socket (lib/wampy.js connect's unixPath): sessions,
// one pub/sub and one RPC round trip, for one serializer.

function unixSuite(L, ser) {
  const open = () => within(connect(null, { serializer: ser, unixPath: L.unixWebsocket() }), WAIT, `${ser} session over a Unix socket to open`);
  const t = { timeout: TEST_TIMEOUT };

  it('connects with WELCOME and disconnects with GOODBYE; the router names the transport websocket', t, async () => {
    const [a, b] = [await open(), await open()];
    assert.equal(a.details.realm, REALM, 'WELCOME.Details.realm');
    assert.notEqual(idOf(a.client.getSessionId(), 'session id'), idOf(b.client.getSessionId(), 'session id'));
    const info = await within(b.client.call('wamp.session.get', [idArg(b, a.client.getSessionId())]), WAIT, 'wamp.session.get');
    assert.equal(info.argsList[0].transport && info.argsList[0].transport.type, 'websocket', show(info.argsList[0].transport));
    await closeChecked(a, 'first session');
    await closeChecked(b, 'second session');
  });

  it('publish and call round-trip args and kwargs', t, async () => {
    const root = base('unix');
    const [sub, pub] = [await open(), await open()];
    const col = eventCollector();
    await within(subscribe(sub, `${root}.topic`, col.handler), WAIT, 'SUBSCRIBED');
    await within(pub.client.publish(`${root}.topic`, { argsList: PAYLOAD_ARGS, argsDict: PAYLOAD_KWARGS }), WAIT, 'PUBLISHED');
    const [ev] = await col.until(1, WAIT, 'the event');
    assert.deepEqual(ev.args, PAYLOAD_ARGS, 'EVENT args');
    assert.deepEqual(ev.kwargs, PAYLOAD_KWARGS, 'EVENT kwargs');
    await within(sub.client.register(`${root}.echo`, ({ argsList, argsDict }) => ({ argsList, argsDict })), WAIT, 'REGISTERED');
    const res = await within(pub.client.call(`${root}.echo`, { argsList: PAYLOAD_ARGS, argsDict: PAYLOAD_KWARGS }), WAIT, 'RESULT');
    assert.deepEqual(res.argsList, PAYLOAD_ARGS, 'RESULT args');
    assert.deepEqual(res.argsDict, PAYLOAD_KWARGS, 'RESULT kwargs');
    await closeChecked(sub, 'subscriber');
    await closeChecked(pub, 'publisher');
  });
}

// ---------------------------------------------------------------------------
// wampy sessions on different serializers talking to each other: a and b
// { label, ser, open }. Binary values: wampy's MessagePack and CBOR
// serializers send Uint8Arrays (wampyBytes) and decode bin / byte strings to
// Buffer / Uint8Array; its JSON serializer knows no bytes, so a JSON session
// sends and gets the spec's "\u0000" + base64 strings (binaryPayload).

function mixedSuite(a, b) {
  const t = { timeout: TEST_TIMEOUT };
  for (const [src, dst] of [
    [a, b],
    [b, a],
  ]) {
    it(`${src.label} publisher -> ${dst.label} subscriber: payload intact, binary values included`, t, async () => {
      const topic = base('mixed');
      const sub = await dst.open();
      const pub = await src.open();
      const col = eventCollector();
      await within(subscribe(sub, topic, col.handler), WAIT, 'SUBSCRIBED');
      await within(pub.client.publish(topic, { argsList: PAYLOAD_ARGS, argsDict: PAYLOAD_KWARGS }), WAIT, 'PUBLISHED');
      const sent = binaryPayload(src.ser, wampyBytes);
      await within(pub.client.publish(topic, { argsList: sent.args, argsDict: sent.kwargs }), WAIT, 'PUBLISHED binary');
      const [ev, bin] = await col.until(2, WAIT, 'the events');
      assertSameValues(ev.args, PAYLOAD_ARGS, 'EVENT args');
      assertSameValues(ev.kwargs, PAYLOAD_KWARGS, 'EVENT kwargs');
      const want = binaryPayload(dst.ser);
      assertSameValues(bin.args, want.args, `binary EVENT args (${src.ser} -> ${dst.ser})`);
      assertSameValues(bin.kwargs, want.kwargs, `binary EVENT kwargs (${src.ser} -> ${dst.ser})`);
      await closeChecked(sub, 'subscriber');
      await closeChecked(pub, 'publisher');
    });

    it(`${src.label} caller -> ${dst.label} callee: payload, binary values and errors intact`, t, async () => {
      // The callee answers with its own copy of what the caller sent.
      const root = base('mixedrpc');
      const callee = await dst.open();
      const caller = await src.open();
      const seen = [];
      const answer = (reply) => ({ argsList, argsDict }) => {
        seen.push({ args: argsList, kwargs: argsDict });
        return { argsList: reply.args, argsDict: reply.kwargs };
      };
      await within(callee.client.register(`${root}.echo`, answer({ args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS })), WAIT, 'REGISTERED');
      await within(callee.client.register(`${root}.bin`, answer(binaryPayload(dst.ser, wampyBytes))), WAIT, 'REGISTERED');
      const bytesAt = (ser) => binaryPayload(ser, wampyBytes).args[0];
      await within(
        callee.client.register(`${root}.fails`, () => {
          throw new AppError('com.example.error', [UNICODE, 2 ** 53, bytesAt(dst.ser)], { nested: { ok: false } });
        }),
        WAIT,
        'REGISTERED',
      );
      const res = await within(caller.client.call(`${root}.echo`, { argsList: PAYLOAD_ARGS, argsDict: PAYLOAD_KWARGS }), WAIT, 'RESULT');
      assertSameValues(seen[0], { args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS }, 'INVOCATION payload at the callee');
      assertSameValues(res.argsList, PAYLOAD_ARGS, 'RESULT args');
      assertSameValues(res.argsDict, PAYLOAD_KWARGS, 'RESULT kwargs');
      const sent = binaryPayload(src.ser, wampyBytes);
      const bin = await within(caller.client.call(`${root}.bin`, { argsList: sent.args, argsDict: sent.kwargs }), WAIT, 'RESULT binary');
      assertSameValues(seen[1], binaryPayload(dst.ser), `binary INVOCATION (${src.ser} -> ${dst.ser})`);
      assertSameValues({ args: bin.argsList, kwargs: bin.argsDict }, binaryPayload(src.ser), `binary RESULT (${dst.ser} -> ${src.ser})`);
      const err = await rejectionOf(caller.client.call(`${root}.fails`), WAIT, 'failing call');
      assertCallError(err, 'com.example.error', 'callee error');
      assertSameValues(err.argsList, [UNICODE, 2 ** 53, binaryPayload(src.ser).args[0]], 'ERROR args');
      assert.deepEqual(err.argsDict, { nested: { ok: false } }, 'ERROR kwargs');
      await closeChecked(callee, 'callee');
      await closeChecked(caller, 'caller');
    });
  }
}

// What wampy's CBOR serializer (cbor-x, with wampy's options: int64AsNumber)
// sends that the other serializers have no form for. ws(ser): { open } for a
// session on ser.
function cborSuite(ws) {
  // what the router does with these is switchyard's (src/codec/cbor.rs)
  const t = { timeout: TEST_TIMEOUT, skip: kind !== 'switchyard' && `switchyard's CBOR handling (router: ${kind})` };
  const serializers = SERIALIZERS;

  it('CBOR undefined in a payload: kept spliced CBOR to CBOR, null in JSON and MessagePack', t, async () => {
    // cbor-x writes undefined as f7; the router reads it as null where it
    // transcodes.
    const topic = base('undef');
    const subs = [];
    for (const ser of serializers) subs.push({ ser, h: await ws(ser).open(), col: eventCollector() });
    for (const s of subs) await within(subscribe(s.h, topic, s.col.handler), WAIT, `SUBSCRIBED (${s.ser})`);
    const pub = await ws('cbor').open();
    await within(pub.client.publish(topic, { argsList: [1, undefined, [undefined]], argsDict: { u: undefined, n: null } }), WAIT, 'PUBLISHED');
    for (const s of subs) {
      const [ev] = await s.col.until(1, WAIT, `the event (${s.ser})`);
      const u = s.ser === 'cbor' ? undefined : null;
      // JSON.parse has no undefined, and MessagePack none either: the
      // router must send null; CBOR to CBOR the bytes go as they came
      assert.deepEqual([ev.args, ev.kwargs], [[1, u, [u]], { u, n: null }], `at the ${s.ser} subscriber`);
    }
    for (const s of subs) await closeChecked(s.h, `subscriber (${s.ser})`);
    await closeChecked(pub, 'publisher');
  });

  it('CBOR: a session ID above 2**32 goes out as a float (cbor-x) and wamp.session.get takes it, as it takes a BigInt', t, async () => {
    // WAMP IDs are integers; cbor-x writes a JS number above 2**32 as a
    // float64 (fb ...) and only a BigInt as an integer. Session IDs are
    // random in [1, 2**53], so almost all of them are above 2**32; the
    // router takes a whole float as an ID in its procedures' arguments.
    const b = await ws('cbor').open();
    // (one in 2**21 is not: then open another)
    let a = await ws('cbor').open();
    while (a.client.getSessionId() <= 2 ** 32) {
      await closeChecked(a, 'session with a small id');
      a = await ws('cbor').open();
    }
    const id = a.client.getSessionId();
    assert.equal(Buffer.from(b.tap.inner.encode(id))[0], 0xfb, 'cbor-x wrote the id as a float64');
    const asFloat = await within(b.client.call('wamp.session.get', [id]), WAIT, 'wamp.session.get with a float id');
    assert.equal(Number(asFloat.argsList[0].session), id, 'wamp.session.get of the id as a CBOR float');
    // a float that is not a whole number is still no ID
    const err = await rejectionOf(b.client.call('wamp.session.get', [1.5]), WAIT, 'wamp.session.get with 1.5');
    assertCallError(err, 'wamp.error.invalid_argument', 'wamp.session.get with a fractional id');
    const info = await within(b.client.call('wamp.session.get', [BigInt(id)]), WAIT, 'wamp.session.get with a BigInt id');
    assert.equal(Number(info.argsList[0].session), id, 'wamp.session.get of the id as a CBOR integer');
    await closeChecked(a, 'a');
    await closeChecked(b, 'b');
  });
}

// Every pair of distinct items of xs, each once.
function pairs(xs) {
  return xs.flatMap((x, i) => xs.slice(i + 1).map((y) => [x, y]));
}

// ---------------------------------------------------------------------------

describeEachRouter({ prefix: 'wampy: ', closeAll }, (ctx) => {
  const noUnix = !RAWSOCKET && `the harness starts Unix socket listeners for switchyard only (router: ${kind})`;
  for (const L of ctx.listeners) {
    describe(L.title, () => {
      for (const ser of SERIALIZERS) {
        describe(`websocket ${ser}`, () => wampySuite(ctx, L, ser));
      }
      for (const ser of SERIALIZERS) {
        describe(`websocket ${ser} over a Unix socket`, { skip: noUnix }, () => unixSuite(L, ser));
      }
      const ws = (ser) => ({ label: `websocket ${ser}`, ser, open: () => within(connect(L.url(), { serializer: ser }), WAIT, `${ser} session to open`) });
      for (const [x, y] of pairs(SERIALIZERS)) {
        describe(`websocket ${x} <-> websocket ${y}`, () => mixedSuite(ws(x), ws(y)));
      }
      if (SERIALIZERS.includes('cbor')) describe('websocket cbor: undefined and IDs', () => cborSuite(ws));
    });
  }
});
