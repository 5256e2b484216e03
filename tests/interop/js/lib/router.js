'use strict';
// Starts and stops the router under test for the autobahn-js interop suite.
//
// ROUTER=switchyard (default): runs `$SWITCHYARD_BIN --config FILE`
//   (default binary: <repo root>/target/debug/switchyard), with realm1's
//   principals (lib/principals.js), whose ticket hashes `switchyard secret
//   ticket` makes when the router starts, and these listeners (the TCP ones
//   each on a free port on 127.0.0.1, the Unix sockets in the router's
//   temporary directory):
//     dedicated: a WebSocket listener (`port`, path /ws, GET /metrics), a
//       RawSocket one (`rsPort`), and a RawSocket one and a WebSocket one on
//       Unix sockets (`unix.rawsocket`, mode 660; `unix.websocket`, mode 600);
//     universal: a `type = "universal"` listener (`uPort`) that serves
//       RawSocket, WebSocket on /ws and GET /metrics on one port, and another
//       on a Unix socket (`unix.universal`, no mode: as the umask leaves it).
// ROUTER=crossbar: runs Crossbar.io as a reference router
//   (`$CROSSBAR_BIN start --cbdir DIR`, default `crossbar` from PATH).
// ROUTER_URL=ws://host:port/path: use an already running router; nothing is
//   started or stopped.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { REALM1_ROLE, realm1PrincipalsToml, crossbarTicketPrincipals } = require('./principals');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..', '..');
const REALM = 'realm1';
const WS_PATH = '/ws';
const MAX_LOG = 256 * 1024;

function routerKind() {
  if (process.env.ROUTER_URL) return 'external';
  const kind = (process.env.ROUTER || 'switchyard').toLowerCase();
  if (kind !== 'switchyard' && kind !== 'crossbar') {
    throw new Error(`ROUTER must be "switchyard" or "crossbar", got ${JSON.stringify(kind)}`);
  }
  return kind;
}

function switchyardBin() {
  return process.env.SWITCHYARD_BIN || path.join(REPO_ROOT, 'target', 'debug', 'switchyard');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function tryConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok) => {
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.destroy();
      resolve(ok);
    };
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
    sock.setTimeout(1000, () => done(false));
  });
}

// Resolves true once a WebSocket upgrade with the wamp.2.json subprotocol
// succeeds (HTTP 101), false otherwise.
function tryUpgrade(port) {
  return new Promise((resolve) => {
    const req = http.get({
      host: '127.0.0.1',
      port,
      path: WS_PATH,
      timeout: 2000,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Protocol': 'wamp.2.json',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(true);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(false);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

// n distinct free ports on 127.0.0.1, none of them in `taken` (a port just
// released may be handed out again at once).
async function freePorts(n, taken = []) {
  const ports = [];
  while (ports.length < n) {
    const p = await freePort();
    if (!ports.includes(p) && !taken.includes(p)) ports.push(p);
  }
  return ports;
}

// The modes the harness gives the Unix socket listeners (`mode = "..."`);
// the universal one gets none.
const UNIX_MODES = { rawsocket: '660', websocket: '600' };

// port: the WebSocket listener's; rsPort: the RawSocket listener's; uPort:
// the universal listener's; unix: { rawsocket, websocket, universal }, the
// paths of the Unix socket listeners; principals: realm1's [[realm.principal]]
// tables (realm1PrincipalsToml); extra: more config appended at the end
// (startRouter's extraConfig).
function switchyardConfig({ port, shards, rsPort, uPort, unix, principals, extra = '' }) {
  return [
    '[router]',
    `shards = ${shards}`,
    '',
    '[[realm]]',
    `name = "${REALM}"`,
    `meta_admin_roles = ["anonymous", "${REALM1_ROLE}"]  # remove_callee, remove_subscriber and kill act on other sessions`,
    '[[realm.history]]                 # the event history test',
    'uri = "com.example.history."',
    'match = "prefix"',
    'limit = 5',
    principals,
    '',
    '[[listener]]',
    'type = "websocket"',
    `bind = "127.0.0.1:${port}"`,
    `path = "${WS_PATH}"`,
    '',
    '[[listener]]',
    'type = "rawsocket"',
    `bind = "127.0.0.1:${rsPort}"`,
    '',
    '[[listener]]',
    'type = "rawsocket"',
    `bind = "unix:${unix.rawsocket}"`,
    `mode = "${UNIX_MODES.rawsocket}"`,
    '',
    '[[listener]]',
    'type = "websocket"',
    `bind = "unix:${unix.websocket}"`,
    `path = "${WS_PATH}"`,
    `mode = "${UNIX_MODES.websocket}"`,
    '',
    '[[listener]]                      # RawSocket, WebSocket and GET /metrics on one port',
    'type = "universal"',
    `bind = "127.0.0.1:${uPort}"`,
    `path = "${WS_PATH}"`,
    '',
    '[[listener]]',
    'type = "universal"',
    `bind = "unix:${unix.universal}"`,
    `path = "${WS_PATH}"`,
    '',
    extra,
  ].join('\n');
}

function crossbarConfig(port) {
  const allowAll = {
    uri: '',
    match: 'prefix',
    allow: { call: true, register: true, publish: true, subscribe: true },
    disclose: { caller: false, publisher: false },
    cache: true,
  };
  return {
    version: 2,
    controller: {},
    workers: [
      {
        type: 'router',
        realms: [
          {
            name: REALM,
            roles: [
              { name: 'anonymous', permissions: [allowAll] },
              { name: REALM1_ROLE, permissions: [allowAll] },
            ],
          },
        ],
        transports: [
          {
            // A plain WebSocket transport answers on any request path, /ws included.
            type: 'websocket',
            endpoint: { type: 'tcp', interface: '127.0.0.1', port },
            serializers: ['json', 'msgpack', 'cbor'],
            auth: {
              anonymous: { type: 'static', role: 'anonymous' },
              ticket: { type: 'static', principals: crossbarTicketPrincipals() },
            },
          },
        ],
      },
    ],
  };
}

function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^switchyard_(\w+)\{shard="(\d+)"\} (-?\d+)$/.exec(line.trim());
    if (!m) continue;
    (out[m[1]] = out[m[1]] || [])[Number(m[2])] = Number(m[3]);
  }
  return out;
}

class RouterProcess {
  // port: the WebSocket listener's; rsPort: the RawSocket listener's; uPort:
  // the universal listener's; unix: the Unix socket listeners' paths
  // ({ rawsocket, websocket, universal }). rsPort, uPort and unix are null
  // where the harness started none (Crossbar.io, ROUTER_URL).
  // info: what startRouter's extraConfig returned beside its TOML (the ports
  // of the listeners it added, ...).
  constructor({ kind, shards, child, port, rsPort = null, uPort = null, unix = null, dir, url, info = {} }) {
    this.kind = kind;
    this.info = info;
    this.shards = shards;
    this.child = child;
    this.port = port;
    this.rsPort = rsPort;
    this.uPort = uPort;
    this.unix = unix;
    this.dir = dir;
    this.url = url;
    this.stdout = '';
    this.stderr = '';
    this.exit = null; // { code, signal } once exited
    if (child) {
      const verbose = !!process.env.INTEROP_VERBOSE;
      child.stdout.on('data', (d) => {
        this.stdout = (this.stdout + d).slice(-MAX_LOG);
        if (verbose) process.stderr.write(`[router ${kind} out] ${d}`);
      });
      child.stderr.on('data', (d) => {
        this.stderr = (this.stderr + d).slice(-MAX_LOG);
        if (verbose) process.stderr.write(`[router ${kind} err] ${d}`);
      });
      this.exited = new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          this.exit = { code, signal };
          resolve(this.exit);
        });
        child.once('error', (err) => {
          this.stderr += `\n[spawn error] ${err.stack || err}`;
          this.exit = { code: null, signal: null, error: err };
          resolve(this.exit);
        });
      });
    } else {
      this.exited = null;
    }
  }

  logs() {
    return `--- router stderr (${this.kind}) ---\n${this.stderr}\n--- router stdout ---\n${this.stdout}`;
  }

  // Polls until the port accepts TCP; with `upgrade`, until a WebSocket
  // upgrade on the WAMP path succeeds (Crossbar.io accepts TCP before its
  // router worker is up).
  async waitReady(limitMs, { upgrade = false } = {}) {
    const deadline = Date.now() + limitMs;
    const what = upgrade ? 'a WebSocket upgrade' : 'TCP';
    while (Date.now() < deadline) {
      if (this.exit) {
        throw new Error(`router exited before accepting connections: ${JSON.stringify(this.exit)}\n${this.logs()}`);
      }
      // switchyard logs "switchyard ready" once every shard has bound its
      // listeners; before that a port may accept on the first shard alone.
      const ready = this.kind !== 'switchyard' || this.stderr.includes('switchyard ready');
      if (ready && (upgrade ? await tryUpgrade(this.port) : await tryConnect(this.port))) return;
      await sleep(upgrade ? 250 : 50);
    }
    throw new Error(`router did not accept ${what} on 127.0.0.1:${this.port} within ${limitMs} ms\n${this.logs()}`);
  }

  // Whether metrics() can be read: only a switchyard this harness started
  // (its WebSocket listener serves GET /metrics by default).
  hasMetrics() {
    return this.kind === 'switchyard' && !!this.port;
  }

  // GET /metrics, parsed: { name: [value of shard 0, value of shard 1, ...] }
  // for every `switchyard_<name>{shard="N"} value` line; from the WebSocket
  // listener, or the one on `port` (the universal listener's).
  metrics(timeoutMs = 5000, port = this.port) {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: timeoutMs }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new Error(`GET /metrics: HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
            return;
          }
          resolve(parseMetrics(body));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`GET /metrics timed out after ${timeoutMs} ms`)));
      req.on('error', reject);
    });
  }

  // Sends SIGTERM and waits for the exit; returns { code, signal }.
  // Escalates to SIGKILL after killAfterMs (and reports that).
  async stop(killAfterMs = 15000) {
    if (!this.child) return { code: 0, signal: null };
    if (!this.exit) this.child.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), killAfterMs);
    });
    const res = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (res === 'timeout') {
      this.child.kill('SIGKILL');
      const ex = await this.exited;
      return { ...ex, killed: true };
    }
    return res;
  }

  // Best-effort cleanup for after() hooks; never throws.
  async kill() {
    if (this.child && !this.exit) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    if (this.dir && !process.env.INTEROP_KEEP_TMP) {
      try {
        fs.rmSync(this.dir, { recursive: true, force: true });
      } catch (_) {
        // ignore
      }
    }
  }
}

// extraConfig(bin, { ports }): an async function whose TOML (switchyard only)
// is appended to the config; bin is the switchyard binary, for `secret`;
// ports(n) gives n more free ports on 127.0.0.1, for listeners of its own.
// It returns the TOML, or { toml, info }: info becomes the router's `info`.
async function startRouter({ shards = 2, extraConfig } = {}) {
  const kind = routerKind();
  if (kind === 'external') {
    return new RouterProcess({ kind, shards, child: null, port: null, dir: null, url: process.env.ROUTER_URL });
  }

  // switchyard gets RawSocket, universal and Unix socket listeners too;
  // Crossbar.io only a WebSocket one.
  const [port, rsPort, uPort] = kind === 'switchyard' ? await freePorts(3) : [await freePort(), null, null];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${kind}-interop-`));
  const url = `ws://127.0.0.1:${port}${WS_PATH}`;
  let child;
  let readyLimit;
  let info = {};
  let unix = null;

  if (kind === 'switchyard') {
    const bin = switchyardBin();
    if (!fs.existsSync(bin)) {
      throw new Error(`switchyard binary not found at ${bin} (build it with \`cargo build\` or set SWITCHYARD_BIN)`);
    }
    const cfg = path.join(dir, 'switchyard.toml');
    const principals = await realm1PrincipalsToml(bin);
    unix = Object.fromEntries(['rawsocket', 'websocket', 'universal'].map((k) => [k, path.join(dir, `${k}.sock`)]));
    const longest = Math.max(...Object.values(unix).map((p) => Buffer.byteLength(p)));
    if (longest > 107) {
      throw new Error(`Unix socket paths under ${dir} are ${longest} bytes, over sun_path's 107: set TMPDIR to a shorter directory`);
    }
    const taken = [port, rsPort, uPort];
    const ports = async (n) => {
      const more = await freePorts(n, taken);
      taken.push(...more);
      return more;
    };
    const extra = extraConfig ? await extraConfig(bin, { ports }) : '';
    const { toml, info: extraInfo } = typeof extra === 'string' ? { toml: extra, info: {} } : extra;
    info = extraInfo || {};
    fs.writeFileSync(cfg, switchyardConfig({ port, shards, rsPort, uPort, unix, principals, extra: toml }));
    child = spawn(bin, ['--config', cfg], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    readyLimit = 10000;
  } else {
    const cbdir = path.join(dir, '.crossbar');
    fs.mkdirSync(cbdir);
    fs.writeFileSync(path.join(cbdir, 'config.json'), JSON.stringify(crossbarConfig(port), null, 2));
    const bin = process.env.CROSSBAR_BIN || 'crossbar';
    child = spawn(bin, ['start', '--cbdir', cbdir, '--loglevel', 'warn'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    readyLimit = 90000; // Crossbar.io starts a controller and a worker process
  }

  const router = new RouterProcess({ kind, shards, child, port, rsPort, uPort, unix, dir, url, info });
  try {
    await router.waitReady(readyLimit, { upgrade: kind === 'crossbar' });
  } catch (err) {
    await router.kill();
    throw err;
  }
  return router;
}

module.exports = { crossbarConfig, parseMetrics, startRouter, routerKind, switchyardBin, REALM, REPO_ROOT, WS_PATH, UNIX_MODES };
