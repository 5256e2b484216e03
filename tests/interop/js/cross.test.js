'use strict';
// Interop tests across client libraries: an autobahn-js session (WebSocket
// with JSON, MessagePack or CBOR, RawSocket with JSON) and a wampy session
// (WebSocket with JSON, MessagePack or CBOR) publishing to and calling each
// other, every combination both ways, on the dedicated listeners and on the
// universal ones. Where both use one serializer the router splices the
// payload, so what one library's encoder wrote reaches the other's decoder
// as it is (node-cbor writes 2**53 as a float32, cbor-x as a float64; msgpack5
// writes floats as float64, msgpackr integers above 2**32 too); otherwise it
// transcodes. Payloads are compared exactly (canonical in lib/payload.js),
// binary values included ("\u0000" + base64 strings on JSON).
//
// Same environment variables as interop.test.js (SWITCHYARD_BIN, ROUTER,
// ROUTER_URL, SHARDS, SERIALIZERS, LISTENERS, INTEROP_VERBOSE).

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');

const wamp = require('./lib/wamp');
const wampy = require('./lib/wampy');
const { within, Collector, rejectionOf } = require('./lib/util');
const { UNICODE, PAYLOAD_ARGS, PAYLOAD_KWARGS, binaryPayload, canonical } = require('./lib/payload');
const { SERIALIZERS, RAWSOCKET, kind, uriBase, describeEachRouter } = require('./lib/suite');

const TEST_TIMEOUT = 30000; // per test; only a bound against hangs, never asserted
const WAIT = 10000; // per awaited step inside a test

// Letters only in the tag (wampy's URI check).
const base = uriBase('cross');

function assertSameValues(actual, expected, what) {
  assert.deepEqual(canonical(actual), canonical(expected), what);
}

// The two libraries behind one interface:
//   collector(): a Collector for the library's event handler (events as
//   { args, kwargs, details }), subscribe(topic, collector),
//   publish(topic, args, kwargs) (acknowledged), register(proc, fn) with
//   fn(args, kwargs) -> { args, kwargs }, registerError(proc, uri, args,
//   kwargs), call(proc, args, kwargs) -> { args, kwargs }, callError(proc) ->
//   { uri, args, kwargs }, close(); bytes(buf): a binary value as the
//   library sends it.

async function autobahnPeer(url, ser, transport) {
  const h = await within(wamp.connect(url, { serializer: ser, transport }), WAIT, `autobahn-js ${ser} session to open`);
  const { session } = h;
  return {
    bytes: (b) => b,
    collector: () => new Collector(),
    subscribe: (topic, col) => within(session.subscribe(topic, col.handler), WAIT, 'SUBSCRIBED'),
    publish: (topic, args, kwargs) => within(session.publish(topic, args, kwargs, { acknowledge: true }), WAIT, 'PUBLISHED'),
    register: (proc, fn) =>
      within(
        session.register(proc, (args, kwargs) => {
          const r = fn(args || [], kwargs || {});
          return new wamp.autobahn.Result(r.args, r.kwargs);
        }),
        WAIT,
        'REGISTERED',
      ),
    registerError: (proc, uri, args, kwargs) =>
      within(
        session.register(proc, () => {
          throw new wamp.autobahn.Error(uri, args, kwargs);
        }),
        WAIT,
        'REGISTERED',
      ),
    call: async (proc, args, kwargs) => {
      const res = await within(session.call(proc, args, kwargs), WAIT, 'RESULT');
      assert.ok(res instanceof wamp.autobahn.Result, `expected a Result with args and kwargs, got ${res}`);
      return { args: res.args, kwargs: res.kwargs };
    },
    callError: async (proc) => {
      const err = await rejectionOf(session.call(proc), WAIT, 'a failing call');
      assert.ok(err instanceof wamp.autobahn.Error, `expected an autobahn.Error, got ${err && err.stack}`);
      return { uri: err.error, args: err.args, kwargs: err.kwargs };
    },
    close: async () => {
      await within(wamp.close(h), WAIT, 'autobahn-js session to close');
      assert.deepEqual(h.internalErrors.map((e) => String(e.err)), [], 'autobahn-js reported internal (protocol) errors');
    },
  };
}

class AppError extends Error {
  constructor(uri, argsList, argsDict) {
    super(uri);
    this.error = uri;
    this.argsList = argsList;
    this.argsDict = argsDict;
  }
}

async function wampyPeer(url, ser) {
  const h = await within(wampy.connect(url, { serializer: ser }), WAIT, `wampy ${ser} session to open`);
  const { client } = h;
  return {
    bytes: (b) => new Uint8Array(b),
    collector: () => wampy.eventCollector(),
    subscribe: (topic, col) => within(wampy.subscribe(h, topic, col.handler), WAIT, 'SUBSCRIBED'),
    publish: (topic, args, kwargs) => within(client.publish(topic, { argsList: args, argsDict: kwargs }), WAIT, 'PUBLISHED'),
    register: (proc, fn) =>
      within(
        client.register(proc, ({ argsList, argsDict }) => {
          const r = fn(argsList || [], argsDict || {});
          return { argsList: r.args, argsDict: r.kwargs };
        }),
        WAIT,
        'REGISTERED',
      ),
    registerError: (proc, uri, args, kwargs) =>
      within(
        client.register(proc, () => {
          throw new AppError(uri, args, kwargs);
        }),
        WAIT,
        'REGISTERED',
      ),
    call: async (proc, args, kwargs) => {
      const res = await within(client.call(proc, { argsList: args, argsDict: kwargs }), WAIT, 'RESULT');
      return { args: res.argsList, kwargs: res.argsDict };
    },
    callError: async (proc) => {
      const err = await rejectionOf(client.call(proc), WAIT, 'a failing call');
      assert.ok(err instanceof wampy.Errors.CallError, `expected a wampy CallError, got ${err && err.stack}`);
      return { uri: err.errorUri, args: err.argsList, kwargs: err.argsDict };
    },
    close: async () => {
      await within(wampy.close(h), WAIT, 'wampy session to close');
      assert.deepEqual(h.errors.map(String), [], 'wampy reported errors');
    },
  };
}

// a, b: { label, ser, open() }.
function crossSuite(a, b) {
  const t = { timeout: TEST_TIMEOUT };
  for (const [src, dst] of [
    [a, b],
    [b, a],
  ]) {
    it(`${src.label} publisher -> ${dst.label} subscriber: payload intact, binary values included`, t, async () => {
      const topic = base('topic');
      const sub = await dst.open();
      const pub = await src.open();
      const col = sub.collector();
      await sub.subscribe(topic, col);
      await pub.publish(topic, PAYLOAD_ARGS, PAYLOAD_KWARGS);
      const sent = binaryPayload(src.ser, pub.bytes);
      await pub.publish(topic, sent.args, sent.kwargs);
      const [ev, bin] = await col.until(2, WAIT, 'the events');
      assertSameValues([ev.args, ev.kwargs], [PAYLOAD_ARGS, PAYLOAD_KWARGS], 'EVENT payload');
      const want = binaryPayload(dst.ser);
      assertSameValues([bin.args, bin.kwargs], [want.args, want.kwargs], `binary EVENT payload (${src.ser} -> ${dst.ser})`);
      await sub.close();
      await pub.close();
    });

    it(`${src.label} caller -> ${dst.label} callee: payload, binary values and errors intact`, t, async () => {
      // The callee answers with its own copy of what the caller sent.
      const root = base('rpc');
      const callee = await dst.open();
      const caller = await src.open();
      const seen = [];
      const answer = (reply) => (args, kwargs) => {
        seen.push({ args, kwargs });
        return reply;
      };
      await callee.register(`${root}.echo`, answer({ args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS }));
      await callee.register(`${root}.bin`, answer(binaryPayload(dst.ser, callee.bytes)));
      await callee.registerError(`${root}.fails`, 'com.example.error', [UNICODE, 2 ** 53, binaryPayload(dst.ser, callee.bytes).args[0]], { ok: false });

      const res = await caller.call(`${root}.echo`, PAYLOAD_ARGS, PAYLOAD_KWARGS);
      assertSameValues(seen[0], { args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS }, 'INVOCATION payload at the callee');
      assertSameValues(res, { args: PAYLOAD_ARGS, kwargs: PAYLOAD_KWARGS }, 'RESULT payload');
      const sent = binaryPayload(src.ser, caller.bytes);
      const bin = await caller.call(`${root}.bin`, sent.args, sent.kwargs);
      assertSameValues(seen[1], binaryPayload(dst.ser), `binary INVOCATION (${src.ser} -> ${dst.ser})`);
      assertSameValues(bin, binaryPayload(src.ser), `binary RESULT (${dst.ser} -> ${src.ser})`);
      const err = await caller.callError(`${root}.fails`);
      assert.equal(err.uri, 'com.example.error', 'ERROR uri');
      assertSameValues(err.args, [UNICODE, 2 ** 53, binaryPayload(src.ser).args[0]], 'ERROR args');
      assert.deepEqual(err.kwargs, { ok: false }, 'ERROR kwargs');
      await callee.close();
      await caller.close();
    });
  }
}

describeEachRouter({
  prefix: 'cross-library: ',
  closeAll: () => {
    wamp.closeAll();
    wampy.closeAll();
  },
}, (ctx) => {
  const noRawSocket = !RAWSOCKET && `the harness starts RawSocket listeners for switchyard only (router: ${kind})`;
  for (const L of ctx.listeners) {
    describe(L.title, () => {
      const autobahns = SERIALIZERS.map((ser) => ({ label: `autobahn-js websocket ${ser}`, ser, open: () => autobahnPeer(L.url(), ser) }));
      autobahns.push({
        label: 'autobahn-js rawsocket json',
        ser: 'json',
        rawsocket: true,
        open: () => autobahnPeer(null, 'json', { type: 'rawsocket', ...L.rawsocket() }),
      });
      const wampys = SERIALIZERS.map((ser) => ({ label: `wampy websocket ${ser}`, ser, open: () => wampyPeer(L.url(), ser) }));
      for (const a of autobahns) {
        for (const w of wampys) {
          describe(`${a.label} <-> ${w.label}`, { skip: a.rawsocket && noRawSocket }, () => crossSuite(a, w));
        }
      }
    });
  }
});
