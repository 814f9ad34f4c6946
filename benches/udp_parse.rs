//! Parsing a market-data datagram, side by side in one run:
//!
//! - `udp_parse/walk`: the baseline, a bare walk over the same records by their length bytes
//!   (what any receiver must do to find them), with no checks;
//! - `udp_parse/parse_datagram`: [`parse_datagram`] (header checks, every record's length
//!   against what is left, the record count), then the same walk through its record iterator;
//! - `udp_parse/event_decode`: decoding the records into engine events, for scale (the work
//!   ingest does per record anyway).
//!
//! The datagram holds 24 MBO records (56 bytes each, 1392 bytes in all: one fits an Ethernet
//! MTU), the default shape `tickpipe replay --udp` sends.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickpipe::pipeline::msg::Event;
use tickpipe::pipeline::sample::sample_mbo;
use tickpipe::pipeline::udp::wire::{DatagramBuilder, parse_datagram};

fn datagram(records: u64) -> Vec<u8> {
    let mut b = DatagramBuilder::new(1472, 64);
    for i in 0..records {
        b.push(&sample_mbo(i), i).expect("a sample record");
    }
    b.finish(0, 0, 0).to_vec()
}

fn bench(c: &mut Criterion) {
    let d = datagram(24);
    let mut g = c.benchmark_group("udp_parse");
    g.throughput(Throughput::Elements(24));
    g.bench_function("walk", |b| {
        b.iter(|| {
            let recs = &black_box(&d)[48..];
            let (mut at, mut sum) = (0usize, 0u64);
            while at < recs.len() {
                let len = usize::from(recs[at]) * 4;
                sum += u64::from(recs[at + 1]);
                at += len.max(4);
            }
            sum
        })
    });
    g.bench_function("parse_datagram", |b| {
        b.iter(|| {
            let p = parse_datagram(black_box(&d)).expect("valid");
            p.records().map(|r| u64::from(r[1])).sum::<u64>()
        })
    });
    g.bench_function("event_decode", |b| {
        let p = parse_datagram(&d).expect("valid");
        b.iter(|| {
            let mut sum = 0u64;
            for (i, r) in p.records().enumerate() {
                if let Ok(e) = Event::decode(black_box(r), i as u64, 0) {
                    sum = sum.wrapping_add(e.ts_event);
                }
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
