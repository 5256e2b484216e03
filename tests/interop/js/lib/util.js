'use strict';
// Client-independent helpers shared by the interop suites: bounded waits,
// event collection, and child processes that report progress on stdout.

const { spawn } = require('node:child_process');
const path = require('node:path');

// JSON for messages; BigInts (64-bit MessagePack integers as some decoders
// return them) are shown as 123n instead of making JSON.stringify throw.
function show(value) {
  return JSON.stringify(value, (k, v) => (typeof v === 'bigint' ? `${v}n` : v));
}

// Promise that rejects after ms with a message; used to bound every wait so a
// misbehaving router fails a test instead of hanging it.
function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Collects event handler invocations; `until(n)` resolves once n arrived.
// `map` turns the handler's arguments into the stored { args, kwargs, details }
// (the default fits autobahn's handler signature).
class Collector {
  constructor(map = (args, kwargs, details) => ({ args, kwargs, details })) {
    this.items = [];
    this.waiters = [];
    this.finders = [];
    this.handler = (...a) => {
      const item = map(...a);
      this.items.push(item);
      this.finders = this.finders.filter((f) => {
        if (f.pred(item)) {
          f.resolve(item);
          return false;
        }
        return true;
      });
      this.waiters = this.waiters.filter((w) => {
        if (this.items.length >= w.n) {
          w.resolve(this.items);
          return false;
        }
        return true;
      });
    };
  }

  until(n, ms = 10000, what = `${n} events`) {
    if (this.items.length >= n) return Promise.resolve(this.items);
    const p = new Promise((resolve) => this.waiters.push({ n, resolve }));
    return within(p, ms, `${what} (got ${this.items.length})`).catch((e) => {
      throw new Error(`${e.message}; received so far: ${show(this.items.map((i) => i.args))}`);
    });
  }

  // The first item, collected already or still to come, for which pred(item)
  // holds (for streams that may carry other traffic, such as meta events).
  find(pred, ms = 10000, what = 'a matching event') {
    const hit = this.items.find(pred);
    if (hit !== undefined) return Promise.resolve(hit);
    const p = new Promise((resolve) => this.finders.push({ pred, resolve }));
    return within(p, ms, what).catch((e) => {
      throw new Error(`${e.message}; received so far: ${show(this.items.map((i) => i.args))}`);
    });
  }
}

// A promise with its resolve/reject exposed.
function deferred() {
  const d = {};
  d.promise = new Promise((resolve, reject) => {
    d.resolve = resolve;
    d.reject = reject;
  });
  return d;
}

// Awaits a promise that must reject; returns the rejection value.
async function rejectionOf(promise, ms, what) {
  try {
    const value = await within(promise, ms, what);
    throw Object.assign(new Error(`expected ${what} to fail, but it succeeded with ${show(value)}`), {
      unexpectedSuccess: true,
    });
  } catch (err) {
    if (err && err.unexpectedSuccess) throw err;
    if (err instanceof Error && /^timed out/.test(err.message)) throw err;
    return err;
  }
}

// Runs `node script ...args`. waitLine(line) resolves once the child has
// printed that line on stdout (bounded by ms), and rejects if it exits first.
function spawnScript(script, args, ms = 10000) {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters = [];
  child.stdout.on('data', (d) => {
    out += d;
    for (const w of waiters) if (out.includes(w.line)) w.resolve();
  });
  child.stderr.on('data', (d) => {
    err += d;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const name = path.basename(script);
  const waitLine = (line) =>
    within(
      new Promise((resolve, reject) => {
        if (out.includes(line)) return resolve();
        waiters.push({ line, resolve });
        exited.then((ex) => reject(new Error(`${name} exited ${JSON.stringify(ex)}: ${err}`)));
      }),
      ms,
      `${name} to print ${line}`,
    );
  return { child, waitLine, exited, stderr: () => err };
}

module.exports = { show, within, Collector, deferred, rejectionOf, spawnScript };
