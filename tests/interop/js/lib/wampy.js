'use strict';
// Thin wrappers around the wampy client (npm `wampy`,
// https://github.com/KSDaemon/wampy.js) for the interop tests.

const net = require('node:net');
const path = require('node:path');
const { Wampy, Errors } = require('wampy');
const { JsonSerializer } = require('wampy/JsonSerializer.js');
const { MsgpackSerializer } = require('wampy/MsgpackSerializer.js');
const { CborSerializer } = require('wampy/CborSerializer.js');
const { Collector } = require('./util');

// On Node without a global WebSocket (Node 20) wampy needs a WebSocket class.
// Use the `ws` that wampy itself depends on (8.x); the top-level `ws` (7.x) is
// the one pinned for autobahn.
const wampyDir = path.dirname(require.resolve('wampy'));
const WebSocket = require(require.resolve('ws', { paths: [wampyDir] }));

// TLS (wss://) from Node. wampy makes its WebSocket as
// `new ws(url, protocols, null, additionalHeaders, wsRequestOptions)`: the
// constructor of the `websocket` package's w3cwebsocket (WebSocket-Node,
// which wampy depends on and its README uses for TLS), whose requestOptions
// go to https.request, hence to tls.connect (ca, cert, key, ...). `ws`
// takes (url, protocols, options), so wampy's wsRequestOptions never reach
// it; TlsWs is `ws` taking wampy's arguments, with wsRequestOptions as ws's
// options (ws passes them to https.request and tls.connect too).
class TlsWs extends WebSocket {
  constructor(url, protocols, origin, headers, requestOptions) {
    super(url, protocols, { ...(requestOptions || {}), ...(headers ? { headers } : {}) });
  }
}
const W3CWebSocket = require(require.resolve('websocket', { paths: [wampyDir] })).w3cwebsocket;
// WebSocket over a Unix socket. wampy takes ws:// and wss:// URLs only
// (isWebSocketSchemeSpecified), not ws's ws+unix:, so the URL stays
// ws://localhost/ws and the socket comes from ws's createConnection option,
// passed as wampy's wsRequestOptions through TlsWs (ws ignores a socketPath
// option: it keeps that for ws+unix: URLs).
const UNIX_WS_URL = 'ws://localhost/ws';
// The WebSocket classes a wss:// test may give connect() (`ws`).
const WEBSOCKETS = { ws: TlsWs, websocket: W3CWebSocket };

// WAMP message codes the tests look at.
const MSG = { HELLO: 1, WELCOME: 2, ABORT: 3, CHALLENGE: 4, AUTHENTICATE: 5, GOODBYE: 6, PUBLISH: 16, SUBSCRIBE: 32 };

// A custom PUBLISH option that the serializer tap turns into exclude_me: false.
// wampy 8.0.2 sends exclude_me only when it is true (`...exclude_me ? { exclude_me } : {}`),
// so `publish(..., { exclude_me: false })` goes out without the option and a
// publisher cannot ask for its own event. wampy passes options matching
// /^_[a-z0-9_]{3,}$/ through unchanged, and the tap rewrites this one on the wire.
const INCLUDE_ME = '_include_me';

const SERIALIZERS = {
  json: () => new JsonSerializer(),
  msgpack: () => new MsgpackSerializer(),
  cbor: () => new CborSerializer(),
};

// Wraps a wampy serializer: records every message as sent and as received
// (decoded), and applies the INCLUDE_ME rewrite to outgoing PUBLISH messages.
class Tap {
  constructor(inner) {
    this.inner = inner;
    this.protocol = inner.protocol;
    this.isBinary = inner.isBinary;
    this.sent = [];
    this.received = [];
  }

  encode(msg) {
    let out = msg;
    if (msg[0] === MSG.PUBLISH && msg[2] && msg[2][INCLUDE_ME]) {
      const { [INCLUDE_ME]: _, ...options } = msg[2];
      out = [msg[0], msg[1], { ...options, exclude_me: false }, ...msg.slice(3)];
    }
    this.sent.push(out);
    return this.inner.encode(out);
  }

  decode(data) {
    const msg = this.inner.decode(data);
    this.received.push(msg);
    return msg;
  }
}

// Every client opened by the suite whose WebSocket has not closed yet.
const openClients = new Set();

// Opens a wampy session. Resolves to a handle:
//   { client, details, tap, errors, closed, serializer }
// details: WELCOME.Details; errors: what wampy passed to onError (WebSocket
// errors, protocol violations it detected); closed: resolves once the
// WebSocket has closed. Rejects with wampy's error (AbortError for ABORT).
// features: { role: { feature: true } } added to what wampy announces in
// HELLO (for what wampy implements but does not announce).
// auth: wampy's authentication options, passed on as given: authid,
// authmethods, authextra (HELLO.Details; wampy sends them only with an
// authid), and onChallenge(method, extra) (authMode 'manual', wampy's
// default) or authPlugins { method: fn } with authMode 'auto'.
// tls: for a wss:// url, { ws: 'ws' | 'websocket' (WEBSOCKETS), options }:
// options (tls.connect's: ca, cert, key, ...) go in as wampy's
// wsRequestOptions.
// unixPath: WebSocket over the Unix socket at this path (url is then
// ignored: see UNIX_WS_URL).
async function connect(url, { realm = 'realm1', serializer = 'json', features = {}, auth = {}, tls, unixPath } = {}) {
  const tap = new Tap(SERIALIZERS[serializer]());
  const errors = [];
  let resolveClosed;
  const closed = new Promise((resolve) => {
    resolveClosed = resolve;
  });
  if (tls && !WEBSOCKETS[tls.ws]) throw new Error(`unknown WebSocket class ${tls.ws} (${Object.keys(WEBSOCKETS)})`);
  if (tls && unixPath) throw new Error('wss:// over a Unix socket is not supported here');
  const handle = { client: null, details: null, tap, errors, closed, serializer };
  const wsOptions = tls
    ? { ws: WEBSOCKETS[tls.ws], wsRequestOptions: tls.options }
    : unixPath
      ? { ws: TlsWs, wsRequestOptions: { createConnection: () => net.connect({ path: unixPath }) } }
      : { ws: WebSocket };
  handle.client = new Wampy(unixPath ? UNIX_WS_URL : url, {
    ...auth,
    realm,
    ...wsOptions,
    serializer: tap,
    autoReconnect: false,
    debug: !!process.env.INTEROP_VERBOSE,
    onError: (err) => errors.push(err),
    onClose: () => {
      openClients.delete(handle);
      resolveClosed();
    },
  });
  for (const [role, more] of Object.entries(features)) {
    Object.assign(handle.client._wamp_features.roles[role].features, more);
  }
  openClients.add(handle);
  handle.details = await handle.client.connect();
  // wampy silently falls back to JSON when the router picks wamp.2.json
  // although another subprotocol was asked for.
  if (handle.client.getOptions().serializer !== tap) {
    throw new Error(`the router did not accept wamp.2.${serializer}; wampy fell back to another serializer`);
  }
  return handle;
}

// Closes the session with GOODBYE (wampy's disconnect()) and waits until the
// WebSocket is closed.
async function close(handle) {
  await handle.client.disconnect();
  return handle.closed;
}

// Tears down every client still open (used in after() hooks); never throws.
function closeAll() {
  for (const h of [...openClients]) {
    try {
      if (h.client.getSessionId()) h.client.disconnect().catch(() => {});
      else h.client.abort();
    } catch (_) {
      // already closed
    }
  }
  openClients.clear();
}

// Number of clients whose WebSocket is still open.
function openCount() {
  return openClients.size;
}

// A Collector for wampy's event callback ({ argsList, argsDict, details }).
function eventCollector() {
  return new Collector(({ argsList, argsDict, details }) => ({ args: argsList, kwargs: argsDict, details }));
}

// subscribe() that works with MessagePack and CBOR too. wampy always puts
// `match` and `get_retained` into SUBSCRIBE.Options, `undefined` when not
// given. The msgpackr encoder behind wampy's MsgpackSerializer writes
// `undefined` as the MessagePack extension value d4 00 00, which is not a
// WAMP type; the cbor-x encoder behind its CborSerializer writes CBOR
// `undefined` (f7), which the router reads as null, and null is no match
// policy. Either way the router answers ABORT wamp.error.protocol_violation
// (Crossbar.io drops the connection: autobahn-python rejects a non-string
// `match`). JSON drops undefined members, so JSON sessions use wampy's
// defaults unchanged.
function subscribe(handle, topic, onEvent, options) {
  const opts = handle.serializer !== 'json' ? { match: 'exact', get_retained: false, ...options } : options;
  return handle.client.subscribe(topic, onEvent, opts);
}

// A WAMP ID (a session ID) as a call argument from session h. wampy's CBOR
// serializer (cbor-x, int64AsNumber) decodes IDs to numbers and writes a JS
// number above 2**32 as a float64, which the router takes for no ID
// (wamp.session.get answers wamp.error.invalid_argument); it writes a BigInt
// as an integer. msgpackr decodes IDs above 2**32 to BigInts and writes them
// as integers again; JSON knows no BigInt.
function idArg(h, id) {
  return h.serializer === 'cbor' ? BigInt(id) : id;
}

// publish() with PUBLISH.Options.exclude_me = false on the wire (see INCLUDE_ME).
function publishIncludingMe(client, topic, payload, options = {}) {
  return client.publish(topic, payload, { ...options, [INCLUDE_ME]: true });
}

module.exports = {
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
};
