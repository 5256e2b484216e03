'use strict';
// TLS material for the interop suites, made at test time with the openssl
// CLI (OPENSSL_BIN, default `openssl` on PATH) into a temp dir of its own:
// a test CA, the server's certificate (a leaf signed by it: CA:FALSE,
// serverAuth, subjectAltName DNS:localhost, IP:127.0.0.1; rustls refuses a
// CA certificate as the server's end-entity certificate), client
// certificates (CA:FALSE, clientAuth) with a given subject CN, and a second,
// unrelated CA with client certificates of its own. Nothing is committed;
// the dir is removed when the process exits (kept with INTEROP_KEEP_TMP=1).
// Also https.Agent helpers for the clients: trust the test CA, present a
// client certificate, and keep the TLS sockets they open (peer certificate,
// negotiated protocol, RFC 9266 tls-exporter channel binding).

const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');

function opensslBin() {
  return process.env.OPENSSL_BIN || 'openssl';
}

// null when openssl runs; otherwise why the TLS tests are skipped.
function opensslMissing() {
  const r = spawnSync(opensslBin(), ['version'], { encoding: 'utf8' });
  if (r.error) return `${opensslBin()} not found (${r.error.code}); set OPENSSL_BIN`;
  if (r.status !== 0) return `\`${opensslBin()} version\` exited ${r.status}: ${r.stderr}`;
  return null;
}

function openssl(args, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(opensslBin(), args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`\`openssl ${args.join(' ')}\` exited ${code}: ${out}`));
    });
  });
}

// Extension sections for `openssl req -x509` (the CAs) and `openssl x509
// -req` (the leaves). No distinguished name comes from here: -subj gives it.
const OPENSSL_CNF = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

const KEY_ARGS = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
const serial = () => `0x${crypto.randomBytes(16).toString('hex').replace(/^./, '1')}`;

// A self-signed CA: { cert, key } (paths).
async function makeCa(dir, name, cn) {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  await openssl(
    ['req', '-x509', ...KEY_ARGS, '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`, '-config', 'openssl.cnf', '-extensions', 'ca_ext', '-set_serial', serial()],
    dir,
  );
  return { cert, key };
}

// A leaf signed by ca, with the extensions of section ext: { cert, key } (paths).
async function makeLeaf(dir, name, cn, ca, ext) {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  await openssl(['req', '-new', ...KEY_ARGS, '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`, '-config', 'openssl.cnf'], dir);
  await openssl(
    ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serial(), '-days', '2', '-out', cert, '-extfile', 'openssl.cnf', '-extensions', ext],
    dir,
  );
  return { cert, key };
}

const read = (p) => fs.readFileSync(p, 'utf8');

// Makes (once per process) the CA, the server certificate, and client
// certificates: clients is { name: cn } for ones the test CA signs,
// rogueClients { name: cn } for ones the other CA signs. Resolves to
//   { dir, ca, caPem, server: { chain, key }, clients: { name: { cert, key, certPem, keyPem } } }
// where server.chain is the server's certificate and then the CA's (PEM
// chain, leaf first), and rogue clients are in `clients` too.
let made = null;
function tlsMaterial({ clients = {}, rogueClients = {} } = {}) {
  if (made) return made;
  made = (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-interop-tls-'));
    process.once('exit', () => {
      if (!process.env.INTEROP_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
    });
    fs.writeFileSync(path.join(dir, 'openssl.cnf'), OPENSSL_CNF);
    const ca = await makeCa(dir, 'ca', 'Switchyard interop test CA');
    const rogue = await makeCa(dir, 'rogue-ca', 'Some other CA');
    const leaf = await makeLeaf(dir, 'server', 'localhost', ca, 'server_ext');
    const chain = path.join(dir, 'server-chain.pem');
    fs.writeFileSync(chain, read(leaf.cert) + read(ca.cert));
    const out = { dir, ca: ca.cert, caPem: read(ca.cert), server: { chain, key: leaf.key }, clients: {} };
    const sign = async (name, cn, issuer) => {
      const c = await makeLeaf(dir, `client-${name}`, cn, issuer, 'client_ext');
      out.clients[name] = { ...c, cn, certPem: read(c.cert), keyPem: read(c.key) };
    };
    for (const [name, cn] of Object.entries(clients)) await sign(name, cn, ca);
    for (const [name, cn] of Object.entries(rogueClients)) await sign(name, cn, rogue);
    return out;
  })();
  return made;
}

// The label RFC 9266 gives the tls-exporter channel binding.
const EXPORTER_LABEL = 'EXPORTER-Channel-Binding';

// An https.Agent for one client connection: TLS options (ca, cert, key,
// servername, ...) as tls.connect takes them; keeps every TLS socket it
// opens (`sockets`) and the errors they emitted (`errors`).
class RecordingAgent extends https.Agent {
  constructor(options) {
    super({ keepAlive: false, ...options });
    this.tlsSockets = [];
    this.errors = [];
  }

  createConnection(...args) {
    const socket = super.createConnection(...args);
    this.tlsSockets.push(socket);
    socket.on('error', (err) => this.errors.push(err));
    return socket;
  }

  // The one TLS socket this agent opened.
  socket() {
    if (this.tlsSockets.length !== 1) throw new Error(`expected one TLS connection, the agent made ${this.tlsSockets.length}`);
    return this.tlsSockets[0];
  }

  // RFC 9266 tls-exporter: 32 bytes of keying material, label
  // EXPORTER-Channel-Binding, no context.
  exporter() {
    return this.socket().exportKeyingMaterial(32, EXPORTER_LABEL);
  }
}

module.exports = { opensslMissing, tlsMaterial, RecordingAgent, EXPORTER_LABEL };
