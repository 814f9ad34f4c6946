//! The market-data UDP datagram parser, `tickpipe_pipeline::udp::parse_datagram`, over
//! arbitrary datagrams.
//!
//! Input: one datagram. Property: no panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tickpipe_pipeline::udp::parse_datagram(data);
});
