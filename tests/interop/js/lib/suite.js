'use strict';
// The per-router scaffolding both interop suites share: which routers and
// serializers to run against (SHARDS, SERIALIZERS, ROUTER, ROUTER_URL), one
// describe() per router configuration that starts the router before its tests
// and stops it after them, and the closing "router exits with code 0 on
// SIGTERM" test.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { startRouter, routerKind } = require('./router');

function envList(name, fallback) {
  return (process.env[name] || fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

// Shard counts to run the suites with, and serializers to run them over.
const SHARDS = envList('SHARDS', '1,2').map((s) => parseInt(s, 10));
const SERIALIZERS = envList('SERIALIZERS', 'json,msgpack');

const kind = routerKind();

// Whether the router under test has a RawSocket listener: only a switchyard
// the harness starts (lib/router.js) gets one; Crossbar.io and ROUTER_URL
// routers are driven over WebSocket alone.
const RAWSOCKET = kind === 'switchyard';

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

// For every router configuration: a describe() titled `${prefix}${label}`
// that starts the router in before(), closes every client (closeAll, the
// suite's client library's) and kills the router in after(), and ends with the
// SIGTERM test. body(ctx) declares the tests in between; ctx:
//   shards: the router's shard count
//   router(): the running RouterProcess (fails the test if it did not start)
//   url(): its WebSocket URL
//   rsPort(): the port of its RawSocket listener on 127.0.0.1 (RAWSOCKET only)
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

module.exports = { SHARDS, SERIALIZERS, GOODBYE_REPLIES, RAWSOCKET, kind, uriBase, describeEachRouter };
