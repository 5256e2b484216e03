//! CBOR: `codec::decode` and `codec::parse_value` on arbitrary bytes.
//!
//! Invariants (beyond "no panic"):
//! - any bytes read as a payload span transcode to the same bytes by the
//!   streaming reader (`cbor::stream_payload`) and by the value tree, or
//!   both refuse them;
//! - a frame that decodes is a CBOR array whose elements are the decoded
//!   fields followed by the payload;
//! - every decoded dictionary and string re-encodes in every serializer and
//!   parses back to the same value;
//! - a decoded payload parses to a list (and a dict), transcodes to JSON and
//!   MessagePack and back with equal values, and splices into an EVENT that
//!   parses to the same values, in every serializer;
//! - a value `parse_value` accepts re-encodes in every serializer to an
//!   equal value, and `Value::Int` holds negative integers only.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::codec;
use switchyard::wamp::message::Serializer;

fuzz_target!(|data: &[u8]| {
    common::check_transcoders_agree(data, Serializer::Cbor);
    let frame = Bytes::copy_from_slice(data);
    if let Ok(m) = codec::decode(Serializer::Cbor, &frame) {
        common::check_message(&m, Serializer::Cbor, &frame);
    }
    if let Ok(v) = codec::parse_value(Serializer::Cbor, data) {
        common::check_value_round_trip(&v);
    }
});
