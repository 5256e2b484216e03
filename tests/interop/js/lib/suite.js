'use strict';
// The per-router scaffolding the interop suites share: which routers,
// serializers and listeners to run against (SHARDS, SERIALIZERS, LISTENERS,
// ROUTER, ROUTER_URL), one describe() per router configuration that starts the
// router before its tests and stops it after them, and the closing "router
// exits with code 0 on SIGTERM" test.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { startRouter, routerKind, WS_PATH } = require('./router');

function envList(name, fallback) {
  return (process.env[name] || fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

// Shard counts to run the suites with, and serializers to run them over.
const SHARDS = envList('SHARDS', '1,2').map((s) => parseInt(s, 10));
const SERIALIZERS = envList('SERIALIZERS', 'json,msgpack,cbor');
for (const ser of SERIALIZERS) {
  if (!['json', 'msgpack', 'cbor'].includes(ser)) throw new Error(`SERIALIZERS: unknown serializer ${JSON.stringify(ser)}`);
}

const kind = routerKind();

// Whether the router under test has RawSocket listeners (TCP and Unix
// socket), WebSocket ones on Unix sockets and universal ones: only a
// switchyard the harness starts (lib/router.js) gets them; Crossbar.io and
// ROUTER_URL routers are driven over WebSocket on TCP alone.
const RAWSOCKET = kind === 'switchyard';

// The listener sets to run the suites against (LISTENERS, default both):
//   dedicated: a listener per transport (WebSocket on TCP and on a Unix
//     socket, RawSocket on TCP and on a Unix socket);
//   universal: one `type = "universal"` listener on TCP and one on a Unix
//     socket, each serving RawSocket and WebSocket (and GET /metrics).
// Crossbar.io and ROUTER_URL routers: dedicated (their one WebSocket) only.
const LISTENERS = kind === 'switchyard' ? envList('LISTENERS', 'dedicated,universal') : ['dedicated'];
for (const l of LISTENERS) {
  if (!['dedicated', 'universal'].includes(l)) throw new Error(`LISTENERS: unknown listener set ${JSON.stringify(l)}`);
}

// The spec's GOODBYE reply is wamp.close.goodbye_and_out; Crossbar.io (the
// reference router) replies wamp.close.normal instead.
const GOODBYE_REPLIES = kind === 'crossbar' ? ['wamp.close.goodbye_and_out', 'wamp.close.normal'] : ['wamp.close.goodbye_and_out'];

// One configuration per shard count for switchyard; a single one otherwise.
const configs =
  kind === 'switchyard'
    ? SHARDS.map((shards) => ({ label: `switchyard shards=${shards}`, shards }))
    : [{ label: kind === 'external' ? `external router ${process.env.ROUTER_URL}` : kind, shards: 1 }];

// Returns base(name), which gives a fresh URI `com.example.<tag><run>n<k>.<name>`
// on every call (run: the time uriBase was called, in base 36; k: a counter), so
// that tests never see each other's traffic. Letters, digits and dots only.
function uriBase(tag) {
  let counter = 0;
  const run = Date.now().toString(36);
  return (name) => {
    counter += 1;
    return `com.example.${tag}${run}n${counter}.${name}`;
  };
}

// One listener set (see LISTENERS) of the router that router() returns, its
// addresses read when a test asks for them (the router starts in before()):
//   name: 'dedicated' | 'universal'; title: for describe()
//   url(): the WebSocket URL on TCP
//   rawsocket(): { host, port } of RawSocket on TCP (RAWSOCKET only)
//   unixRawsocket(), unixWebsocket(): the Unix socket paths of RawSocket and
//     WebSocket (RAWSOCKET only; one path for both on the universal set)
//   unixWebsocketUrl(): autobahn-js's (the `ws` package's) URL for WebSocket
//     over unixWebsocket(): ws+unix://PATH:/ws
//   metricsPort(): the TCP port that serves GET /metrics
function listenerSet(name, router) {
  const need = (v, what) => {
    assert.ok(v, `router has no ${what}`);
    return v;
  };
  const r = () => router();
  const universal = name === 'universal';
  const port = () => (universal ? need(r().uPort, 'universal listener') : r().port);
  const unix = (k) => need(r().unix, 'Unix socket listeners')[universal ? 'universal' : k];
  return {
    name,
    title: universal ? 'universal listener' : 'dedicated listeners',
    url: () => (universal ? `ws://127.0.0.1:${port()}${WS_PATH}` : r().url),
    rawsocket: () => ({ host: '127.0.0.1', port: universal ? port() : need(r().rsPort, 'RawSocket listener') }),
    unixRawsocket: () => unix('rawsocket'),
    unixWebsocket: () => unix('websocket'),
    unixWebsocketUrl: () => `ws+unix://${unix('websocket')}:${WS_PATH}`,
    metricsPort: port,
  };
}

// For every router configuration: a describe() titled `${prefix}${label}`
// that starts the router in before(), closes every client (closeAll, the
// suite's client library's) and kills the router in after(), and ends with the
// SIGTERM test. body(ctx) declares the tests in between; ctx:
//   shards: the router's shard count
//   router(): the running RouterProcess (fails the test if it did not start)
//   url(): its WebSocket URL (the dedicated listener's)
//   rsPort(): the port of its RawSocket listener on 127.0.0.1 (RAWSOCKET only)
//   listeners: the listener sets to run against (LISTENERS, see listenerSet)
// routerOptions: more startRouter() options (extraConfig).
function describeEachRouter({ prefix = '', closeAll, routerOptions = {} }, body) {
  for (const cfg of configs) {
    describe(`${prefix}${cfg.label}`, () => {
      let router = null;
      const ctx = {
        shards: cfg.shards,
        router: () => {
          assert.ok(router, 'router did not start');
          return router;
        },
        url: () => ctx.router().url,
        rsPort: () => {
          const { rsPort } = ctx.router();
          assert.ok(rsPort, 'router has no RawSocket listener');
          return rsPort;
        },
      };
      ctx.listeners = LISTENERS.map((name) => listenerSet(name, ctx.router));

      before(
        async () => {
          router = await startRouter({ ...routerOptions, shards: cfg.shards });
        },
        { timeout: 120000 },
      );

      after(async () => {
        closeAll();
        if (router) await router.kill();
      });

      body(ctx);

      it('router exits with code 0 on SIGTERM', { timeout: 30000, skip: kind === 'external' }, async () => {
        closeAll();
        const res = await router.stop();
        if (res.code !== 0) process.stderr.write(`${router.logs()}\n`);
        assert.equal(res.killed, undefined, `router ignored SIGTERM and was killed\n${router.logs()}`);
        if (kind === 'crossbar') {
          // Crossbar.io exits with code 1 on SIGTERM; only check that it went away.
          assert.equal(typeof res.code, 'number', `router exit status ${JSON.stringify(res)}`);
          return;
        }
        assert.deepEqual({ code: res.code, signal: res.signal }, { code: 0, signal: null }, `router exit status\n${router.logs()}`);
      });
    });
  }
}

module.exports = { SHARDS, SERIALIZERS, LISTENERS, GOODBYE_REPLIES, RAWSOCKET, kind, uriBase, describeEachRouter };
