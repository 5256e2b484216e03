'use strict';
// Child-process callee for the "callee dies with a call pending" test.
// Usage: node callee-proc.js URL SERIALIZER PROCEDURE
// Prints READY once registered and INVOKED when an invocation arrives; the
// invocation is never answered. The parent kills this process with SIGKILL,
// so the router sees the TCP connection drop without GOODBYE or a close frame.

const { connect } = require('./wamp');

const [url, serializer, procedure] = process.argv.slice(2);

connect(url, { serializer })
  .then(async ({ session }) => {
    await session.register(procedure, () => {
      process.stdout.write('INVOKED\n');
      return new Promise(() => {}); // never answered
    });
    process.stdout.write('READY\n');
  })
  .catch((err) => {
    process.stderr.write(`callee-proc failed: ${err.stack || err}\n`);
    process.exit(2);
  });
