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

// Binary values. On a MessagePack or CBOR session they travel as bin / byte
// strings; JSON has no bytes, and the WAMP spec writes them as a string of a
// NUL followed by the base64 (RFC 4648, padded) of the bytes, which is what
// the router must turn them into and back when it transcodes. Lengths 1 and 2
// need base64 padding ("==", "="); 0 is the empty byte string ("\u0000").
const BYTES = {
  three: Buffer.from([0x00, 0x01, 0xff]),
  empty: Buffer.alloc(0),
  one: Buffer.from([0x7f]),
  two: Buffer.from([0xfe, 0x00]),
  all: Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
};

// JSON's form of bytes.
function jsonBytes(bytes) {
  return `\u0000${Buffer.from(bytes).toString('base64')}`;
}

// The binary payload as a session on serializer `ser` sends it, and as one
// on `ser` must receive it whatever serializer the sender used. `bytes(buf)`
// makes a binary value for the client library (default: the Buffer).
// Strings with a NUL that is not the first character are text everywhere.
function binaryPayload(ser, bytes = (b) => b) {
  const b = ser === 'json' ? jsonBytes : bytes;
  return {
    args: [b(BYTES.three), b(BYTES.empty), b(BYTES.one), b(BYTES.two), b(BYTES.all), 'text with a NUL \u0000 inside', [1, [b(BYTES.three)]]],
    kwargs: { bin: b(BYTES.three), nested: { list: [b(BYTES.all), null], empty: b(BYTES.empty) }, text: UNICODE },
  };
}

// A decoded value in a form where what differs only by the JS type the
// decoder picked compares equal, and nothing else does: byte arrays (Buffer,
// Uint8Array) become { bytes: hex }; a BigInt (msgpackr, which wampy's
// MessagePack serializer uses, returns 64-bit integers as BigInt; the `cbor`
// package autobahn-js uses, integers beyond 2**53 - 1) becomes the number
// when the number holds it exactly.
function canonical(v) {
  if (typeof v === 'bigint') return BigInt(Number(v)) === v ? Number(v) : { bigint: v.toString() };
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex') };
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, canonical(x)]));
  return v;
}

module.exports = { UNICODE, PAYLOAD_ARGS, PAYLOAD_KWARGS, BYTES, jsonBytes, binaryPayload, canonical };
