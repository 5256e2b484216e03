'use strict';
// autobahn-js over two transports of switchyard's that need their own
// listener config:
// - HTTP long-poll (the WAMP spec's beta transport): autobahn-js's
//   `longpoll` transport (lib/transport/longpoll.js), JSON only, with the
//   `xhr2` package as the XMLHttpRequest it needs (Node has none); join,
//   WELCOME, pub/sub and RPC both ways with WebSocket sessions of every
//   serializer, leave (GOODBYE, then autobahn's POST <base>/<transport>/close).
// - WebSocket with permessage-deflate (RFC 7692): autobahn-js on Node makes
//   its WebSocket with the `ws` package (7.x), passing only agent, headers,
//   the subprotocols and TLS options (lib/transport/websocket.js); ws offers
//   permessage-deflate by default (perMessageDeflate: true:
//   "permessage-deflate; client_max_window_bits", compressing what it sends
//   from 1024 bytes on). The tests use that default offer as it is, and, to
//   offer no context takeover, a subclass of ws that adds perMessageDeflate
//   options to what autobahn-js passes (TappedWebSocket below; it also
//   records, per message received, whether it came compressed and its size
//   on the wire).
//
// The router gets three more listeners (extraConfig): `dfl` (websocket,
// [listener.deflate] threshold 256, 15-bit window, context takeover),
// `dflNct` (websocket, threshold 0, max_window_bits 10, context_takeover =
// false) and `lp` (universal, [listener.longpoll] path /lp, poll_timeout_ms
// 1000). Switchyard only.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');

// autobahn-js's long-poll transport makes its requests with XMLHttpRequest.
globalThis.XMLHttpRequest = require('xhr2');

const wamp = require('./lib/wamp');
const { within, Collector, rejectionOf } = require('./lib/util');
const { PAYLOAD_ARGS, PAYLOAD_KWARGS, binaryPayload, canonical } = require('./lib/payload');
const { SERIALIZERS, GOODBYE_REPLIES, kind, uriBase, describeEachRouter } = require('./lib/suite');

const TEST_TIMEOUT = 30000; // per test; only a bound against hangs, never asserted
const WAIT = 10000; // per awaited step inside a test
const THRESHOLD = 256;
const NCT_BITS = 10;
const LP_PATH = '/lp';

const base = uriBase('dfllp');

// ---------------------------------------------------------------------------
// The `ws` autobahn-js requires (it calls require('ws') each time it makes a
// WebSocket, so the module's exports can be swapped for a subclass).

const wsPath = require.resolve('ws', { paths: [path.dirname(require.resolve('autobahn'))] });
const WS = require(wsPath);
const wsState = { perMessageDeflate: null, sockets: [] };

class TappedWebSocket extends WS {
  constructor(address, protocols, options) {
    const pmd = wsState.perMessageDeflate;
    super(address, protocols, pmd === null ? options : { ...options, perMessageDeflate: pmd });
    // per data message received: { compressed (RSV1 of its first frame), wire (payload bytes on the wire) }
    this.received = [];
    wsState.sockets.push(this);
  }

  setSocket(...args) {
    super.setSocket(...args);
    // ws 7.5's Receiver: dataMessage() runs when a message is complete
    // (_fin), with _compressed and _totalPayloadLength still those of the
    // message.
    const rx = this._receiver;
    const dataMessage = rx.dataMessage.bind(rx);
    rx.dataMessage = () => {
      if (rx._fin) this.received.push({ compressed: rx._compressed, wire: rx._totalPayloadLength });
      return dataMessage();
    };
  }
}
require.cache[wsPath].exports = TappedWebSocket;

// An autobahn-js WebSocket session (tapped: handle.received has its WAMP
// messages), with handle.ws its ws WebSocket; perMessageDeflate: ws options
// to offer instead of ws's default (true).
async function openWs(url, ser, perMessageDeflate = null) {
  wsState.perMessageDeflate = perMessageDeflate;
  let p;
  try {
    p = wamp.connect(url, { serializer: ser, tap: true });
  } finally {
    wsState.perMessageDeflate = null;
  }
  const ws = wsState.sockets[wsState.sockets.length - 1];
  const h = await within(p, WAIT, `websocket ${ser} session to ${url} to open`);
  assert.ok(ws instanceof TappedWebSocket, 'autobahn-js made its WebSocket with the tapped ws');
  h.ws = ws;
  return h;
}

function openLp(router) {
  const url = `http://127.0.0.1:${router.info.lp}${LP_PATH}`;
  return within(wamp.connect(null, { serializer: 'json', transport: { type: 'longpoll', url }, tap: true }), WAIT, 'long-poll session to open');
}

function welcomeTransport(h) {
  const w = h.received[0];
  assert.ok(Array.isArray(w) && w[0] === 2, `first message is WELCOME: ${JSON.stringify(w)}`);
  assert.ok(w[2] && w[2].transport, `WELCOME.Details.transport: ${JSON.stringify(w[2])}`);
  return w[2].transport;
}

async function metricSum(router, name) {
  const m = await router.metrics();
  assert.ok(m[name], `switchyard_${name} on /metrics`);
  return m[name].reduce((a, b) => a + (b || 0), 0);
}

function same(actual, expected, what) {
  assert.deepEqual(canonical(actual), canonical(expected), what);
}

async function extraConfig(bin, { ports }) {
  const [dfl, dflNct, lp] = await ports(3);
  const toml = [
    '[[listener]]',
    'type = "websocket"',
    `bind = "127.0.0.1:${dfl}"`,
    'path = "/ws"',
    '[listener.deflate]',
    `threshold = ${THRESHOLD}`,
    'max_window_bits = 15',
    'context_takeover = true',
    '',
    '[[listener]]',
    'type = "websocket"',
    `bind = "127.0.0.1:${dflNct}"`,
    'path = "/ws"',
    '[listener.deflate]',
    'threshold = 0',
    `max_window_bits = ${NCT_BITS}`,
    'context_takeover = false',
    '',
    '[[listener]]',
    'type = "universal"',
    `bind = "127.0.0.1:${lp}"`,
    'path = "/ws"',
    '[listener.longpoll]',
    `path = "${LP_PATH}"`,
    'poll_timeout_ms = 1000',
    'session_timeout_ms = 20000',
    '',
  ].join('\n');
  return { toml, info: { dfl, dflNct, lp } };
}

// ---------------------------------------------------------------------------

function longpollSuite(ctx) {
  it('joins: WELCOME over long-poll; the router sees a longpoll transport', { timeout: TEST_TIMEOUT }, async () => {
    const router = ctx.router();
    const before = await metricSum(router, 'longpoll_transports');
    const lp = await openLp(router);
    assert.equal(lp.connection.transport.info.type, 'longpoll', 'autobahn-js transport in use');
    assert.equal(lp.connection.transport.info.protocol, 'wamp.2.json');
    assert.ok(lp.connection.transport.info.url.startsWith(`http://127.0.0.1:${router.info.lp}${LP_PATH}/`), lp.connection.transport.info.url);
    assert.ok(Number.isSafeInteger(lp.session.id) && lp.session.id > 0, `session id ${lp.session.id}`);
    assert.equal(lp.details.realm, 'realm1');
    assert.ok(lp.details.roles.broker && lp.details.roles.dealer, 'broker and dealer roles');
    const t = welcomeTransport(lp);
    assert.equal(t.type, 'longpoll', JSON.stringify(t));
    assert.equal(t.protocol, 'wamp.2.json', JSON.stringify(t));
    assert.equal(t.compression, undefined, JSON.stringify(t));
    assert.equal(await metricSum(router, 'longpoll_transports'), before + 1, 'longpoll_transports while open');
    const peer = await openWs(ctx.url(), 'json');
    const info = await within(peer.session.call('wamp.session.get', [lp.session.id]), WAIT, 'wamp.session.get');
    assert.equal(info.session, lp.session.id);
    assert.equal(info.transport.type, 'longpoll', JSON.stringify(info.transport));
    const own = await within(lp.session.call('wamp.session.get', [lp.session.id]), WAIT, 'wamp.session.get over long-poll');
    assert.equal(own.transport.type, 'longpoll');
    await within(wamp.close(lp), WAIT, 'long-poll session to close');
    await within(wamp.close(peer), WAIT, 'peer to close');
  });

  for (const ser of SERIALIZERS) {
    it(`pub/sub both ways with a WebSocket ${ser} session`, { timeout: TEST_TIMEOUT }, async () => {
      const lp = await openLp(ctx.router());
      const peer = await openWs(ctx.url(), ser);
      const toLp = base('to.lp');
      const toPeer = base('to.peer');
      const lpEvents = new Collector();
      const peerEvents = new Collector();
      await within(lp.session.subscribe(toLp, lpEvents.handler), WAIT, 'SUBSCRIBED (long-poll)');
      await within(peer.session.subscribe(toPeer, peerEvents.handler), WAIT, 'SUBSCRIBED (peer)');
      const bin = { lp: binaryPayload('json'), peer: binaryPayload(ser) };

      const p1 = await within(peer.session.publish(toLp, PAYLOAD_ARGS, PAYLOAD_KWARGS, { acknowledge: true }), WAIT, 'PUBLISHED');
      await within(peer.session.publish(toLp, bin.peer.args, bin.peer.kwargs, { acknowledge: true }), WAIT, 'PUBLISHED');
      await within(peer.session.publish(toLp, ['sentinel'], {}, { acknowledge: true }), WAIT, 'PUBLISHED');
      const got = await lpEvents.until(3, WAIT, 'events over long-poll');
      assert.equal(got.length, 3, 'no more than the three events');
      same(got[0].args, PAYLOAD_ARGS, 'event args over long-poll');
      same(got[0].kwargs, PAYLOAD_KWARGS, 'event kwargs over long-poll');
      same(got[0].details.publication, p1.id, 'publication id');
      same(got[1].args, bin.lp.args, 'binary args, in JSON form');
      same(got[1].kwargs, bin.lp.kwargs, 'binary kwargs, in JSON form');
      assert.deepEqual(got[2].args, ['sentinel']);

      // one at a time: autobahn-js's long-poll transport POSTs each message on
      // its own request, so messages it sends at once may overtake each other
      await within(lp.session.publish(toPeer, PAYLOAD_ARGS, PAYLOAD_KWARGS, { acknowledge: true }), WAIT, 'PUBLISHED over long-poll');
      await within(lp.session.publish(toPeer, bin.lp.args, bin.lp.kwargs, { acknowledge: true }), WAIT, 'PUBLISHED over long-poll');
      await within(lp.session.publish(toPeer, ['sentinel'], {}, { acknowledge: true }), WAIT, 'PUBLISHED over long-poll');
      const back = await peerEvents.until(3, WAIT, 'events from long-poll');
      assert.equal(back.length, 3);
      same(back[0].args, PAYLOAD_ARGS, 'event args from long-poll');
      same(back[0].kwargs, PAYLOAD_KWARGS, 'event kwargs from long-poll');
      same(back[1].args, bin.peer.args, `binary args, in ${ser} form`);
      same(back[1].kwargs, bin.peer.kwargs, `binary kwargs, in ${ser} form`);
      assert.deepEqual(back[2].args, ['sentinel']);
      await within(wamp.close(lp), WAIT, 'long-poll session to close');
      await within(wamp.close(peer), WAIT, 'peer to close');
    });

    it(`RPC both ways with a WebSocket ${ser} session (results and errors)`, { timeout: TEST_TIMEOUT }, async () => {
      const lp = await openLp(ctx.router());
      const peer = await openWs(ctx.url(), ser);
      const onLp = base('on.lp');
      const onPeer = base('on.peer');
      const failing = base('fails');
      const seen = [];
      await within(
        lp.session.register(onLp, (args, kwargs) => {
          seen.push({ args, kwargs });
          return new wamp.autobahn.Result([...(args || []), 'from long-poll'], kwargs);
        }),
        WAIT,
        'REGISTERED over long-poll',
      );
      await within(peer.session.register(onPeer, (args, kwargs) => new wamp.autobahn.Result(args, kwargs)), WAIT, 'REGISTERED');
      await within(
        peer.session.register(failing, () => {
          throw new wamp.autobahn.Error('com.example.error', [1, 'two'], { three: 3 });
        }),
        WAIT,
        'REGISTERED',
      );

      // the WebSocket session calls the long-poll callee
      const r1 = await within(peer.session.call(onLp, PAYLOAD_ARGS, PAYLOAD_KWARGS), WAIT, 'RESULT from the long-poll callee');
      assert.ok(r1 instanceof wamp.autobahn.Result, `a Result: ${r1}`);
      same(r1.args, [...PAYLOAD_ARGS, 'from long-poll'], 'result args');
      same(r1.kwargs, PAYLOAD_KWARGS, 'result kwargs');
      same(seen[0].args, PAYLOAD_ARGS, 'invocation args over long-poll');
      same(seen[0].kwargs, PAYLOAD_KWARGS, 'invocation kwargs over long-poll');
      const binPeer = binaryPayload(ser);
      const r2 = await within(peer.session.call(onLp, binPeer.args, binPeer.kwargs), WAIT, 'RESULT (binary)');
      same(r2.args, [...binPeer.args, 'from long-poll'], 'binary result args');
      same(r2.kwargs, binPeer.kwargs, 'binary result kwargs');
      same(seen[1].args, binaryPayload('json').args, 'binary invocation args, in JSON form');

      // the long-poll session calls the WebSocket callee
      const r3 = await within(lp.session.call(onPeer, PAYLOAD_ARGS, PAYLOAD_KWARGS), WAIT, 'RESULT over long-poll');
      assert.ok(r3 instanceof wamp.autobahn.Result, `a Result: ${r3}`);
      same(r3.args, PAYLOAD_ARGS, 'result args over long-poll');
      same(r3.kwargs, PAYLOAD_KWARGS, 'result kwargs over long-poll');
      const err = await rejectionOf(lp.session.call(failing, []), WAIT, 'a failing call over long-poll');
      assert.ok(err instanceof wamp.autobahn.Error, `an autobahn.Error: ${err && err.stack}`);
      assert.equal(err.error, 'com.example.error');
      assert.deepEqual(err.args, [1, 'two']);
      assert.deepEqual(err.kwargs, { three: 3 });
      const missing = await rejectionOf(lp.session.call(base('nobody')), WAIT, 'a call to no procedure');
      assert.equal(missing.error, 'wamp.error.no_such_procedure');
      await within(wamp.close(lp), WAIT, 'long-poll session to close');
      await within(wamp.close(peer), WAIT, 'peer to close');
    });
  }

  it('leaves: GOODBYE, then autobahn-js closes the transport; the router forgets both', { timeout: TEST_TIMEOUT }, async () => {
    const router = ctx.router();
    const before = await metricSum(router, 'longpoll_transports');
    const lp = await openLp(router);
    const peer = await openWs(ctx.url(), 'json');
    const id = lp.session.id;
    const leaves = new Collector();
    await within(peer.session.subscribe('wamp.session.on_leave', leaves.handler), WAIT, 'SUBSCRIBED on_leave');
    const { reason, details } = await within(wamp.close(lp), WAIT, 'long-poll session to close');
    assert.equal(reason, 'closed', `Connection.onclose reason (${JSON.stringify(details)})`);
    assert.ok(GOODBYE_REPLIES.includes(details.reason), `GOODBYE reply ${details.reason}`);
    assert.deepEqual(lp.internalErrors, [], 'no autobahn internal errors');
    const goodbye = lp.received[lp.received.length - 1];
    assert.equal(goodbye[0], 6, `last message received is GOODBYE: ${JSON.stringify(goodbye)}`);
    const left = await leaves.find((e) => e.args[0] === id, WAIT, 'on_leave of the long-poll session');
    assert.equal(left.args[0], id);
    const err = await rejectionOf(peer.session.call('wamp.session.get', [id]), WAIT, 'wamp.session.get of the closed session');
    assert.equal(err.error, 'wamp.error.no_such_session');
    assert.equal(await metricSum(router, 'longpoll_transports'), before, 'longpoll_transports after close');
    await within(wamp.close(peer), WAIT, 'peer to close');
  });

  // The suite's last test, `router exits with code 0 on SIGTERM`, then has a
  // long-poll session to close (closeAll) as the router gets SIGTERM.
  it('a long-poll session stays open for the SIGTERM test', { timeout: TEST_TIMEOUT }, async () => {
    const lp = await openLp(ctx.router());
    const res = await within(lp.session.call('wamp.session.get', [lp.session.id]), WAIT, 'wamp.session.get');
    assert.equal(res.transport.type, 'longpoll');
  });
}

// ---------------------------------------------------------------------------

const LINE = 'the quick brown fox jumps over the lazy dog 0123456789 grüße 🚀\n';
const BIG = LINE.repeat(320); // about 20 KB

// What ws negotiated: the params of its PerMessageDeflate (ws 7.5: `params`
// once accepted), or null.
function negotiated(h) {
  const ext = h.ws._extensions && h.ws._extensions['permessage-deflate'];
  return ext ? ext.params : null;
}

// offer: null (ws's default) or ws perMessageDeflate options.
// expect: { serverNct, clientNct (undefined: either), bits (server and client) }
function deflateCase(ctx, { ser, listener, offer, expect }) {
  return async () => {
    const router = ctx.router();
    const url = `ws://127.0.0.1:${router.info[listener]}/ws`;
    const before = await metricSum(router, 'deflate_messages');
    const sub = await openWs(url, ser, offer);
    const pub = await openWs(url, ser, offer);
    const plain = await openWs(ctx.url(), ser, offer); // a listener without [listener.deflate]

    for (const h of [sub, pub]) {
      assert.equal(h.ws.extensions, 'permessage-deflate', 'Sec-WebSocket-Extensions in use');
      const p = negotiated(h);
      assert.ok(p, 'ws accepted permessage-deflate');
      assert.equal(!!p.server_no_context_takeover, expect.serverNct, `server_no_context_takeover: ${JSON.stringify(p)}`);
      if (expect.clientNct !== undefined) assert.equal(!!p.client_no_context_takeover, expect.clientNct, `client_no_context_takeover: ${JSON.stringify(p)}`);
      assert.equal(p.server_max_window_bits || 15, expect.bits, `server_max_window_bits: ${JSON.stringify(p)}`);
      assert.equal(p.client_max_window_bits === true ? 15 : p.client_max_window_bits || 15, expect.bits, `client_max_window_bits: ${JSON.stringify(p)}`);
      const t = welcomeTransport(h);
      assert.equal(t.type, 'websocket', JSON.stringify(t));
      assert.equal(t.protocol, `wamp.2.${ser}`, JSON.stringify(t));
      assert.equal(t.compression, 'permessage-deflate', JSON.stringify(t));
    }
    assert.equal(plain.ws.extensions, '', 'no extension on the plain listener');
    assert.equal(welcomeTransport(plain).compression, undefined);
    const info = await within(sub.session.call('wamp.session.get', [sub.session.id]), WAIT, 'wamp.session.get');
    assert.equal(info.transport.compression, 'permessage-deflate', JSON.stringify(info.transport));

    const topic = base('deflate');
    const events = new Collector();
    const plainEvents = new Collector();
    await within(sub.session.subscribe(topic, events.handler), WAIT, 'SUBSCRIBED');
    await within(plain.session.subscribe(topic, plainEvents.handler), WAIT, 'SUBSCRIBED');
    const rep = crypto.randomBytes(2048).toString('hex').repeat(3);
    const published = [
      { args: ['hi', 1], kwargs: { k: true } },
      { args: [BIG, PAYLOAD_ARGS], kwargs: { text: BIG, more: PAYLOAD_KWARGS } },
      { args: [rep], kwargs: {} },
      { args: [rep], kwargs: {} },
      { args: ['sentinel'], kwargs: {} },
    ];
    const frames0 = sub.ws.received.length;
    const sent0 = pub.ws._socket.bytesWritten;
    for (const m of published) {
      await within(pub.session.publish(topic, m.args, m.kwargs, { acknowledge: true }), WAIT, 'PUBLISHED');
    }
    for (const c of [events, plainEvents]) {
      const got = await c.until(published.length, WAIT, 'events');
      assert.equal(got.length, published.length);
      published.forEach((m, i) => {
        same(got[i].args, m.args, `event ${i} args`);
        same(got[i].kwargs || {}, m.kwargs, `event ${i} kwargs`);
      });
    }
    // ws compressed what it sent from 1024 bytes on (its default threshold)
    const wrote = pub.ws._socket.bytesWritten - sent0;
    assert.ok(wrote < (BIG.length * 2 + rep.length * 2) / 2, `publisher wrote ${wrote} bytes`);

    // the subscriber's EVENTs on the wire
    const frames = sub.ws.received.slice(frames0);
    assert.equal(frames.length, published.length, JSON.stringify(frames));
    const [small, big, rep1, rep2] = frames;
    assert.equal(small.compressed, listener === 'dflNct', `a small EVENT is compressed only from threshold 0: ${JSON.stringify(frames)}`);
    assert.ok(big.compressed && rep1.compressed && rep2.compressed, JSON.stringify(frames));
    assert.ok(big.wire < BIG.length / 2, `large EVENT: ${JSON.stringify(frames)}`);
    if (expect.serverNct) {
      assert.ok(rep2.wire > rep1.wire * 0.8, `no context takeover: the repeat is no smaller: ${JSON.stringify(frames)}`);
    } else {
      assert.ok(rep2.wire < rep1.wire / 4, `context takeover: the repeat refers to the last message: ${JSON.stringify(frames)}`);
    }

    // RPC: small and large, through compressing and plain sessions
    const proc = base('echo');
    await within(pub.session.register(proc, (args, kwargs) => new wamp.autobahn.Result(args, kwargs)), WAIT, 'REGISTERED');
    const r0 = sub.ws.received.length;
    for (const m of published.slice(0, 2)) {
      for (const caller of [sub, plain]) {
        const res = await within(caller.session.call(proc, m.args, m.kwargs), WAIT, 'RESULT');
        same(res.args, m.args, 'result args');
        same(res.kwargs || {}, m.kwargs, 'result kwargs');
      }
    }
    const results = sub.ws.received.slice(r0);
    assert.equal(results.length, 2, JSON.stringify(results));
    assert.equal(results[0].compressed, listener === 'dflNct', JSON.stringify(results));
    assert.ok(results[1].compressed, JSON.stringify(results));

    const after = await metricSum(router, 'deflate_messages');
    const compressed = frames.concat(results).filter((f) => f.compressed).length;
    assert.ok(after - before >= compressed, `switchyard_deflate_messages grew by ${after - before}, the subscriber alone got ${compressed} compressed`);
    for (const h of [sub, pub, plain]) await within(wamp.close(h), WAIT, 'session to close');
  };
}

function deflateSuite(ctx) {
  for (const ser of SERIALIZERS) {
    it(`${ser}: ws's default offer, context takeover (dedicated deflate listener)`, { timeout: TEST_TIMEOUT }, deflateCase(ctx, { ser, listener: 'dfl', offer: null, expect: { serverNct: false, clientNct: false, bits: 15 } }));
    it(`${ser}: offering server_ and client_no_context_takeover`, { timeout: TEST_TIMEOUT },
      deflateCase(ctx, { ser, listener: 'dfl', offer: { serverNoContextTakeover: true, clientNoContextTakeover: true }, expect: { serverNct: true, bits: 15 } }));
    it(`${ser}: a listener with context_takeover = false and max_window_bits = ${NCT_BITS}`, { timeout: TEST_TIMEOUT },
      deflateCase(ctx, { ser, listener: 'dflNct', offer: null, expect: { serverNct: true, clientNct: true, bits: NCT_BITS } }));
  }
}

// ---------------------------------------------------------------------------

if (kind !== 'switchyard') {
  describe('deflate and long-poll', () => {
    it('is switchyard configuration', { skip: `ROUTER=${kind}: [listener.deflate] and [listener.longpoll] are switchyard configuration` }, () => {});
  });
} else {
  describeEachRouter({ prefix: 'deflate/long-poll: ', closeAll: wamp.closeAll, routerOptions: { extraConfig } }, (ctx) => {
    describe('autobahn-js websocket with permessage-deflate', () => deflateSuite(ctx));
    describe('autobahn-js long-poll', () => longpollSuite(ctx));
  });
}
