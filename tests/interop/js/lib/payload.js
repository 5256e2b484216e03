'use strict';
// Payloads shared by the interop suites.

// Payload exercising what must survive the router (and any transcoding) intact.
const UNICODE = 'grüße 世界 🚀';
const PAYLOAD_ARGS = [
  UNICODE,
  2 ** 53,
  -(2 ** 53),
  2 ** 32 + 1,
  -1,
  0,
  1.5,
  true,
  false,
  null,
  '',
  [],
  {},
  { nested: { list: [1, 'two', { three: [3, null, false] }], deeper: { a: { b: { c: UNICODE } } } } },
];
const PAYLOAD_KWARGS = {
  text: UNICODE,
  'schlüssel 🔑': 'wert',
  big: 2 ** 53,
  negbig: -(2 ** 53),
  float: -0.25,
  yes: true,
  no: false,
  nothing: null,
  empty_list: [],
  empty_obj: {},
  nested: { list: [1, 2, { x: 'y', z: [true, null] }], obj: { 'ключ': 'значение', n: 42 } },
};

module.exports = { UNICODE, PAYLOAD_ARGS, PAYLOAD_KWARGS };
