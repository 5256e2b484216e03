'use strict';
// Principals the suites log in as, and the secrets they log in with. Every
// secret is made up when the test process starts (nothing secret is
// committed); what the router's config keeps of it (a ticket's PHC hash, a
// salted WAMP-CRA key) comes from `switchyard secret ...` at test time.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');

// realm1's principals (lib/router.js configures them): the interop suites'
// sessions that need an authid of their own log in as one of these with
// WAMP-Ticket (anonymous sessions get the router's `anonymous-<session id>`).
// They all have REALM1_ROLE; realm1 has no roles, so they may do everything.
const REALM1_ROLE = 'user';
const REALM1_PRINCIPALS = [
  'com.example.publisher',
  'com.example.alice',
  'com.example.bob',
  'com.example.carol',
  'com.example.visitor',
  'com.example.doomed',
  'com.example.doomed.spared',
];

// A fresh random secret (URL-safe base64, 24 bytes).
function newSecret() {
  return crypto.randomBytes(24).toString('base64url');
}

// One secret per name for the life of the test process.
const secrets = new Map();
function secretOf(name) {
  if (!secrets.has(name)) secrets.set(name, newSecret());
  return secrets.get(name);
}

// The ticket of a realm1 principal.
function ticketOf(authid) {
  if (!REALM1_PRINCIPALS.includes(authid)) throw new Error(`${authid} is not one of realm1's principals`);
  return secretOf(`realm1/${authid}`);
}

// Runs `bin secret ARGS...` with password on stdin; resolves to the TOML line
// it prints (`ticket = "..."`, `wampcra = { ... }`).
const secretLines = new Map();
function switchyardSecret(bin, args, password) {
  const key = JSON.stringify([bin, args, password]);
  if (!secretLines.has(key)) {
    secretLines.set(
      key,
      new Promise((resolve, reject) => {
        const child = spawn(bin, ['secret', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => {
          out += d;
        });
        child.stderr.on('data', (d) => {
          err += d;
        });
        child.on('error', reject);
        child.on('exit', (code) => {
          const line = out.trim();
          if (code !== 0 || !/^\w+ = /.test(line) || line.includes('\n')) {
            reject(new Error(`\`switchyard secret ${args.join(' ')}\` exited ${code}: ${out}${err}`));
          } else {
            resolve(line);
          }
        });
        child.stdin.end(`${password}\n`);
      }),
    );
  }
  return secretLines.get(key);
}

// `ticket = "$argon2id$..."` for password (cheap argon2 parameters: these are
// test secrets).
function ticketLine(bin, password) {
  return switchyardSecret(bin, ['ticket', '--memory', '64', '--iterations', '1'], password);
}

// `wampcra = { salt, iterations, keylen, key }` for password.
function wampcraLine(bin, password, { salt, iterations, keylen }) {
  return switchyardSecret(bin, ['wampcra', '--salt', salt, '--iterations', String(iterations), '--keylen', String(keylen)], password);
}

// realm1's [[realm.principal]] tables, for the switchyard config.
async function realm1PrincipalsToml(bin) {
  const out = [];
  for (const authid of REALM1_PRINCIPALS) {
    out.push('[[realm.principal]]', `authid = "${authid}"`, `role = "${REALM1_ROLE}"`, await ticketLine(bin, ticketOf(authid)));
  }
  return out.join('\n');
}

// realm1's principals for Crossbar.io's static ticket authenticator
// (plain tickets: Crossbar.io compares them as given).
function crossbarTicketPrincipals() {
  return Object.fromEntries(REALM1_PRINCIPALS.map((authid) => [authid, { ticket: ticketOf(authid), role: REALM1_ROLE }]));
}

// autobahn.Connection options that log in as a realm1 principal with
// WAMP-Ticket (connect() in lib/wamp.js passes them on).
function asPrincipal(authid) {
  const ticket = ticketOf(authid);
  return {
    authid,
    authmethods: ['ticket'],
    onchallenge: (session, method) => {
      if (method !== 'ticket') throw new Error(`asked for ${method}, not ticket`);
      return ticket;
    },
  };
}

module.exports = {
  REALM1_ROLE,
  REALM1_PRINCIPALS,
  newSecret,
  secretOf,
  ticketOf,
  ticketLine,
  wampcraLine,
  realm1PrincipalsToml,
  crossbarTicketPrincipals,
  asPrincipal,
};
