'use strict';
// Child-process wampy callee for the "callee process killed" test.
// Usage: node wampy-callee-proc.js URL SERIALIZER PROCEDURE
// Registers PROCEDURE (it answers ['alive']) and prints READY. The parent
// kills this process with SIGKILL, so the router sees the TCP connection drop
// without GOODBYE or a WebSocket close frame.

const { connect } = require('./wampy');

const [url, serializer, procedure] = process.argv.slice(2);

connect(url, { serializer })
  .then(async ({ client }) => {
    await client.register(procedure, () => ['alive']);
    process.stdout.write('READY\n');
  })
  .catch((err) => {
    process.stderr.write(`wampy-callee-proc failed: ${err.stack || err}\n`);
    process.exit(2);
  });
