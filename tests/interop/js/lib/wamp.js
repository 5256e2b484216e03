'use strict';
// Thin promise wrappers around autobahn-js for the interop tests.

// autobahn binds console.warn at load time and logs every connection close
// through it; keep that quiet unless INTEROP_VERBOSE is set.
const realWarn = console.warn;
console.warn = (...args) => {
  if (process.env.INTEROP_VERBOSE) realWarn(...args);
};
const autobahn = require('autobahn');
console.warn = realWarn;

const { within, Collector, deferred, rejectionOf } = require('./util');

const SERIALIZERS = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => {
    if (!autobahn.serializer.MsgpackSerializer) {
      throw new Error('autobahn MsgpackSerializer is not available (msgpack5 missing?)');
    }
    return new autobahn.serializer.MsgpackSerializer();
  },
  cbor: () => {
    if (!autobahn.serializer.CBORSerializer) {
      throw new Error('autobahn CBORSerializer is not available (cbor missing?)');
    }
    return new autobahn.serializer.CBORSerializer();
  },
};

// Every connection opened by the suite, so after() hooks can tear them down.
const openConnections = new Set();

class ConnectError extends Error {
  constructor(reason, details) {
    super(`connection closed before session opened: ${reason} ${JSON.stringify(details)}`);
    this.reason = reason;
    this.details = details;
  }
}

// autobahn's transport options for connect()'s `transport`: a WebSocket to
// `url` (the default; a ws+unix:///PATH:/ws URL, which autobahn hands to the
// `ws` package as it is, is WebSocket over the Unix socket PATH), or
// { type: 'rawsocket', host, port }: RawSocket over TCP, or
// { type: 'rawsocket', path }: RawSocket over the Unix socket at path
// (autobahn's rawsocket transport passes `path` to net.connect).
// autobahn-js's RawSocket transport (lib/transport/rawsocket.js) speaks JSON
// only: its handshake always asks for serializer 1 (JSON), with a maximum
// message length of 2**24 (rawsocket_max_len_exp, its default), it closes
// the connection if the router's reply names another serializer, and it
// frames every message with JSON.stringify whatever `serializers` says
// (Protocol.SERIALIZERS is { json: 1 }). It opens a plain socket
// (net.connect), so there is no RawSocket over TLS from it.
// A WebSocket transport may carry autobahn's TLS options for a wss:// url
// ({ type: 'websocket', agent, tlsConfiguration }): `agent` goes to the `ws`
// package as its http(s) agent (an https.Agent with ca, cert, key);
// `tlsConfiguration` { ca, cert, key } (all three, or autobahn ignores it)
// becomes ws's TLS options, with rejectUnauthorized: false (autobahn sets it).
// { type: 'longpoll', url }: autobahn-js's HTTP long-poll transport
// (lib/transport/longpoll.js) to the base URL `url` (POST url/open, then
// url/<transport>/send|receive|close); JSON only (it asks for wamp.2.json and
// uses JSON.stringify/JSON.parse whatever `serializers` says). It makes its
// requests with XMLHttpRequest, which Node lacks: the caller sets
// globalThis.XMLHttpRequest first (the tests use the `xhr2` package).
function transportOptions(url, transport, serializer) {
  if (transport && transport.type === 'longpoll') {
    const { type, url: lpUrl, request_timeout: requestTimeout, ...rest } = transport;
    if (Object.keys(rest).length) throw new Error(`unknown longpoll transport options ${Object.keys(rest)}`);
    if (serializer !== 'json') throw new Error(`autobahn-js long-poll speaks JSON only, not ${serializer}`);
    if (typeof XMLHttpRequest === 'undefined') throw new Error('autobahn-js long-poll needs a global XMLHttpRequest');
    return [{ type: 'longpoll', url: lpUrl, ...(requestTimeout ? { request_timeout: requestTimeout } : {}) }];
  }
  if (!transport || transport.type === 'websocket') {
    const { type, agent, tlsConfiguration, ...rest } = transport || {};
    if (Object.keys(rest).length) throw new Error(`unknown websocket transport options ${Object.keys(rest)}`);
    const tls = Object.fromEntries(Object.entries({ agent, tlsConfiguration }).filter(([, v]) => v !== undefined));
    return [{ type: 'websocket', url, ...tls }];
  }
  if (transport.type !== 'rawsocket') throw new Error(`unknown transport ${JSON.stringify(transport)}`);
  if (serializer !== 'json') throw new Error(`autobahn-js RawSocket speaks JSON only, not ${serializer}`);
  const { type, host = '127.0.0.1', port, path, ...rest } = transport;
  if (Object.keys(rest).length) throw new Error(`unknown rawsocket transport options ${Object.keys(rest)}`);
  if (path) return [{ type: 'rawsocket', path }];
  if (!port) throw new Error('a rawsocket transport needs a port or a Unix socket path');
  return [{ type: 'rawsocket', host, port }];
}

// Opens a WAMP session, over a WebSocket to `url` unless opts.transport says
// otherwise (see transportOptions). Resolves to a handle:
//   { connection, session, details, closed, userErrors, internalErrors, serializer, transport, received }
// received: with opts.tap, every WAMP message the session got, as the
// transport handed it to autobahn's session (WELCOME first, copied: autobahn's
// `details` is WELCOME.Details with the transport's own info put in place of
// its `transport`); else null.
// `closed` resolves to { reason, details } when the connection closes.
// Rejects with ConnectError if the connection closes before WELCOME.
// Authentication, passed on to autobahn.Connection as given: authid,
// authmethods, authextra (HELLO.Details) and onchallenge(session, method,
// extra), which answers a CHALLENGE with the AUTHENTICATE signature.
// asPrincipal(authid) in lib/principals.js gives them for realm1's principals
// (WAMP-Ticket). Without them the session is anonymous, and the router names
// it `anonymous-<session id>` whatever authid HELLO asks for.
function connect(url, { realm = 'realm1', serializer = 'json', transport, authid, authmethods, authextra, onchallenge, tap = false } = {}) {
  const userErrors = [];
  const internalErrors = [];
  const transports = transportOptions(url, transport, serializer);
  const auth = Object.fromEntries(
    Object.entries({ authid, authmethods, authextra, onchallenge }).filter(([, v]) => v !== undefined),
  );
  const connection = new autobahn.Connection({
    transports,
    realm,
    ...auth,
    serializers: [SERIALIZERS[serializer]()],
    use_es6_promises: true,
    max_retries: 0,
    retry_if_unreachable: false,
    on_user_error: (err, msg) => userErrors.push({ err, msg }),
    on_internal_error: (err, msg) => internalErrors.push({ err, msg }),
  });
  openConnections.add(connection);
  const received = tap ? [] : null;
  if (tap) {
    // The session sets transport.onmessage when it is made, right after the
    // transport: wrap what it sets.
    const create = connection._create_transport.bind(connection);
    connection._create_transport = () => {
      const t = create();
      if (!t) return t;
      let inner = t.onmessage;
      Object.defineProperty(t, 'onmessage', {
        configurable: true,
        get: () => inner,
        set: (fn) => {
          inner = (msg) => {
            // a copy of WELCOME: Connection.onopen puts the transport's
            // own info into the details it hands on, which are WELCOME's
            received.push(Array.isArray(msg) && msg[0] === 2 ? structuredClone(msg) : msg);
            return fn(msg);
          };
        },
      });
      return t;
    };
  }

  let resolveClosed;
  const closed = new Promise((resolve) => {
    resolveClosed = resolve;
  });

  return new Promise((resolve, reject) => {
    let opened = false;
    connection.onopen = (session, details) => {
      opened = true;
      resolve({ connection, session, details, closed, userErrors, internalErrors, serializer, transport: transports[0].type, received });
    };
    connection.onclose = (reason, details) => {
      openConnections.delete(connection);
      resolveClosed({ reason, details });
      if (!opened) reject(new ConnectError(reason, details));
      return true; // never auto-reconnect
    };
    connection.open();
  });
}

// Closes the session with GOODBYE and waits until the transport is gone.
async function close(handle) {
  if (handle.session && handle.session.isOpen) {
    handle.connection.close();
  }
  return handle.closed;
}

// Tears down every connection still open (used in after() hooks).
function closeAll() {
  for (const c of [...openConnections]) {
    try {
      c.close();
    } catch (_) {
      // already closed
    }
  }
  openConnections.clear();
}

module.exports = {
  autobahn,
  connect,
  close,
  closeAll,
  within,
  Collector,
  deferred,
  rejectionOf,
  ConnectError,
};
