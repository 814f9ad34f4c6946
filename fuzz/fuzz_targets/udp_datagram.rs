//! The market-data UDP datagram parser, `tickpipe_pipeline::udp::parse_datagram`, over
//! arbitrary datagrams, then every record it hands out through the ingest decoder.
//!
//! Input: one datagram. Properties: no panic, whatever the bytes; the records of a datagram
//! that parses lie inside it, back to back, and number exactly its header's count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickpipe_pipeline::msg::{Event, MAX_PARTS};
use tickpipe_pipeline::udp::parse_datagram;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = parse_datagram(data) else {
        return;
    };
    let mut out = [Event::default(); MAX_PARTS];
    let mut n = 0usize;
    let mut bytes = 0usize;
    for rec in d.records() {
        n += 1;
        bytes += rec.len();
        let _ = Event::decode_parts(rec, n as u64, 0, &mut out);
    }
    assert_eq!(bytes, d.records.len(), "records do not cover the payload");
    assert_eq!(n, usize::from(d.count), "record count differs from the header");
});
