//! End-to-end checks of the synthetic capture generator: files are decoded with dbn's own
//! decoder and replayed into an independent reference book, so these tests judge the output
//! the way a consumer sees it, not the generator's internal state.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use dbn::decode::{DbnMetadata, DecodeRecord, DynDecoder};
use dbn::{MboMsg, Metadata, SType, Schema, VersionUpgradePolicy};
use tickpipe::synth::{
    DATASET, Generator, MAX_INSTRUMENTS, PUBLISHER_ID, SynthConfig, SynthError, SynthStats,
    TICK_SIZE, write_capture,
};

fn cfg(seed: u64, events: u64, instruments: u32) -> SynthConfig {
    SynthConfig {
        seed,
        events,
        instruments,
        ..SynthConfig::default()
    }
}

fn decode(path: &Path) -> (Metadata, Vec<MboMsg>) {
    let mut decoder =
        DynDecoder::from_file(path, VersionUpgradePolicy::AsIs).expect("open capture");
    let metadata = decoder.metadata().clone();
    let mut records = Vec::new();
    // `decode_record::<MboMsg>` fails on any other rtype, so this also checks the schema.
    while let Some(record) = decoder.decode_record::<MboMsg>().expect("decode record") {
        records.push(record.clone());
    }
    (metadata, records)
}

fn write(dir: &Path, name: &str, config: &SynthConfig) -> (SynthStats, Vec<u8>) {
    let path = dir.join(name);
    let stats = write_capture(config, &path).expect("write capture");
    let bytes = std::fs::read(&path).expect("read capture back");
    (stats, bytes)
}

fn action(r: &MboMsg) -> u8 {
    r.action as u8
}

fn side(r: &MboMsg) -> u8 {
    r.side as u8
}

#[test]
fn zstd_capture_decodes_to_exact_count_with_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cfg(7, 5_000, 3);
    let path = dir.path().join("cap.dbn.zst");
    let stats = write_capture(&config, &path).expect("write capture");
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");

    let (md, records) = decode(&path);
    assert_eq!(records.len(), 5_000);
    assert_eq!(stats.records, 5_000);
    assert_eq!(md.version, dbn::DBN_VERSION);
    assert_eq!(md.dataset, DATASET);
    assert_eq!(md.schema, Some(Schema::Mbo));
    assert_eq!(md.stype_in, Some(SType::RawSymbol));
    assert_eq!(md.stype_out, SType::InstrumentId);
    assert_eq!(md.start, config.start_ts);
    let end = md.end.expect("end set").get();
    assert!(end > md.start);
    assert!(
        records
            .iter()
            .all(|r| r.hd.ts_event >= md.start && r.ts_recv < end)
    );
    assert_eq!(md.symbols, ["SYN0", "SYN1", "SYN2"]);
    assert_eq!(md.mappings.len(), 3);
    for (i, mapping) in md.mappings.iter().enumerate() {
        assert_eq!(mapping.raw_symbol, format!("SYN{i}"));
        assert_eq!(mapping.intervals.len(), 1);
        assert_eq!(mapping.intervals[0].symbol, (i + 1).to_string());
        assert_eq!(mapping.intervals[0].start_date, md.start().date());
        assert!(mapping.intervals[0].end_date > md.start().date());
    }
    // dbn's own symbology resolves every instrument on the capture's date.
    let symbols = md
        .symbol_map_for_date(md.start().date())
        .expect("symbol map");
    for id in 1..=3u32 {
        assert_eq!(
            symbols.get(id).map(String::as_str),
            Some(format!("SYN{}", id - 1).as_str())
        );
    }
}

#[test]
fn plain_capture_holds_the_same_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cfg(8, 3_000, 2);
    let (_, plain_bytes) = write(dir.path(), "cap.dbn", &config);
    write(dir.path(), "cap.dbn.zst", &config);
    assert_eq!(&plain_bytes[..4], b"DBN\x03", "not plain DBN v3");
    let (plain_md, plain) = decode(&dir.path().join("cap.dbn"));
    let (zstd_md, zstd) = decode(&dir.path().join("cap.dbn.zst"));
    assert_eq!(plain_md, zstd_md);
    assert_eq!(plain, zstd);
    assert_eq!(plain.len(), 3_000);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for ext in ["dbn", "dbn.zst"] {
        let (_, a) = write(dir.path(), &format!("a.{ext}"), &cfg(42, 4_000, 3));
        let (_, b) = write(dir.path(), &format!("b.{ext}"), &cfg(42, 4_000, 3));
        let (_, c) = write(dir.path(), &format!("c.{ext}"), &cfg(43, 4_000, 3));
        assert!(a == b, "same seed gave different {ext} bytes");
        assert!(a != c, "different seeds gave identical {ext} bytes");
    }
}

#[test]
fn generator_streams_what_write_capture_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cfg(9, 2_500, 4);
    let path = dir.path().join("cap.dbn");
    let written = write_capture(&config, &path).expect("write capture");
    let (md, records) = decode(&path);

    let mut generator = Generator::new(&config).expect("generator");
    assert_eq!(generator.metadata(), md);
    let mut streamed = Vec::new();
    while let Some(record) = generator.next_record() {
        streamed.push(record);
    }
    assert_eq!(streamed, records);
    assert_eq!(generator.stats(), &written);
    assert!(
        generator.next_record().is_none(),
        "stream resumed after its end"
    );
}

#[derive(Debug)]
struct RefOrder {
    instrument: u32,
    side: u8,
    px: i64,
    size: u32,
}

/// An independent book keyed by instrument, with aggregate size per price level.
#[derive(Debug, Default)]
struct RefBook {
    orders: HashMap<u64, RefOrder>,
    levels: HashMap<(u32, u8), BTreeMap<i64, u64>>,
}

impl RefBook {
    fn level_add(&mut self, instrument: u32, side: u8, px: i64, size: u32) {
        *self
            .levels
            .entry((instrument, side))
            .or_default()
            .entry(px)
            .or_default() += u64::from(size);
    }

    fn level_sub(&mut self, instrument: u32, side: u8, px: i64, size: u32) {
        let levels = self.levels.entry((instrument, side)).or_default();
        let level = levels.get_mut(&px).expect("level of a resting order");
        *level = level
            .checked_sub(u64::from(size))
            .expect("level size went negative");
        if *level == 0 {
            levels.remove(&px);
        }
    }

    fn clear(&mut self, instrument: u32) {
        self.orders.retain(|_, o| o.instrument != instrument);
        self.levels.remove(&(instrument, b'B'));
        self.levels.remove(&(instrument, b'A'));
    }

    fn best(&self, instrument: u32, side: u8) -> Option<i64> {
        let levels = self.levels.get(&(instrument, side))?;
        match side {
            b'B' => levels.last_key_value().map(|(px, _)| *px),
            _ => levels.first_key_value().map(|(px, _)| *px),
        }
    }

    fn assert_uncrossed(&self, instrument: u32, at: usize) {
        if let (Some(bid), Some(ask)) = (self.best(instrument, b'B'), self.best(instrument, b'A')) {
            assert!(
                bid < ask,
                "record {at}: book of {instrument} crossed, {bid} >= {ask}"
            );
        }
    }
}

/// How often the harder cases occurred, so tests can insist they are exercised.
#[derive(Debug, Default)]
struct Coverage {
    partial_cancels: u64,
    full_fills: u64,
    partial_fills: u64,
    price_moves: u64,
}

/// Replays `records` into a reference book, asserting Databento MBO semantics throughout.
fn check_book(records: &[MboMsg], instruments: u32) -> Coverage {
    let mut coverage = Coverage::default();
    let mut book = RefBook::default();
    let mut last_add_id = 0u64;
    let mut prev: Option<&MboMsg> = None;
    // Fill quantities of the current batch, to be settled by its C/M records.
    let mut unsettled: HashMap<u64, u32> = HashMap::new();
    let mut trade_side: Option<u8> = None;

    for (at, r) in records.iter().enumerate() {
        let id = r.hd.instrument_id;
        assert!(
            (1..=instruments).contains(&id),
            "record {at}: instrument {id}"
        );
        assert_eq!(r.hd.rtype, dbn::rtype::MBO);
        assert_eq!(r.hd.publisher_id, PUBLISHER_ID);
        assert_eq!(r.channel_id, 0);
        assert!(
            r.ts_recv >= r.hd.ts_event,
            "record {at}: ts_recv before ts_event"
        );
        assert!(r.ts_in_delta > 0);
        assert!(u64::try_from(r.ts_in_delta).unwrap() <= r.ts_recv - r.hd.ts_event);
        if let Some(p) = prev {
            if p.flags.is_last() {
                assert!(r.hd.ts_event > p.hd.ts_event, "record {at}: ts_event");
                assert!(r.ts_recv > p.ts_recv, "record {at}: ts_recv");
                assert!(r.sequence > p.sequence, "record {at}: sequence");
            } else {
                // One batch is one matching-engine event on one instrument.
                assert_eq!(r.hd.instrument_id, p.hd.instrument_id, "record {at}");
                assert_eq!(r.hd.ts_event, p.hd.ts_event, "record {at}");
                assert_eq!(r.ts_recv, p.ts_recv, "record {at}");
                assert_eq!(r.sequence, p.sequence, "record {at}");
            }
        }
        if action(r) != b'R' {
            assert_eq!(r.price % TICK_SIZE, 0, "record {at}: off the tick grid");
            assert!(r.price > 0 && r.size > 0, "record {at}: {r:?}");
        }

        match action(r) {
            b'R' => {
                assert_eq!(side(r), b'N');
                book.clear(id);
            }
            b'A' => {
                assert!(matches!(side(r), b'B' | b'A'), "record {at}");
                assert!(
                    r.order_id > last_add_id,
                    "record {at}: order id not increasing"
                );
                last_add_id = r.order_id;
                book.level_add(id, side(r), r.price, r.size);
                book.orders.insert(
                    r.order_id,
                    RefOrder {
                        instrument: id,
                        side: side(r),
                        px: r.price,
                        size: r.size,
                    },
                );
            }
            b'C' => {
                let o = book
                    .orders
                    .get(&r.order_id)
                    .unwrap_or_else(|| panic!("record {at}: cancel of unknown order"));
                assert_eq!(
                    (o.instrument, o.side, o.px),
                    (id, side(r), r.price),
                    "record {at}"
                );
                assert!(r.size <= o.size, "record {at}: cancel exceeds resting size");
                if let Some(filled) = unsettled.remove(&r.order_id) {
                    assert_eq!(filled, o.size, "record {at}: C after a partial fill");
                    assert_eq!(r.size, o.size, "record {at}");
                    coverage.full_fills += 1;
                } else if r.size < o.size {
                    coverage.partial_cancels += 1;
                }
                let (side, px, left) = (o.side, o.px, o.size - r.size);
                book.level_sub(id, side, px, r.size);
                if left == 0 {
                    book.orders.remove(&r.order_id);
                } else if let Some(o) = book.orders.get_mut(&r.order_id) {
                    o.size = left;
                }
            }
            b'M' => {
                let o = book
                    .orders
                    .get(&r.order_id)
                    .unwrap_or_else(|| panic!("record {at}: modify of unknown order"));
                assert_eq!((o.instrument, o.side), (id, side(r)), "record {at}");
                if let Some(filled) = unsettled.remove(&r.order_id) {
                    assert_eq!(r.price, o.px, "record {at}: fill moved the order");
                    assert_eq!(r.size + filled, o.size, "record {at}: fill arithmetic");
                    coverage.partial_fills += 1;
                } else if r.price != o.px {
                    coverage.price_moves += 1;
                }
                let (side, px, size) = (o.side, o.px, o.size);
                book.level_sub(id, side, px, size);
                book.level_add(id, side, r.price, r.size);
                if let Some(o) = book.orders.get_mut(&r.order_id) {
                    o.px = r.price;
                    o.size = r.size;
                }
            }
            b'T' => {
                assert!(matches!(side(r), b'B' | b'A'), "record {at}");
                trade_side = Some(side(r));
            }
            b'F' => {
                let o = book
                    .orders
                    .get(&r.order_id)
                    .unwrap_or_else(|| panic!("record {at}: fill of unknown order"));
                assert_eq!(
                    (o.instrument, o.side, o.px),
                    (id, side(r), r.price),
                    "record {at}"
                );
                assert!(r.size <= o.size, "record {at}: fill exceeds resting size");
                let aggressor = trade_side.expect("fill without a trade");
                assert_ne!(
                    aggressor,
                    side(r),
                    "record {at}: fill on the aggressor side"
                );
                *unsettled.entry(r.order_id).or_default() += r.size;
            }
            other => panic!("record {at}: unexpected action {:?}", other as char),
        }

        // Stronger than required: the book is uncrossed after every record, not only at
        // event boundaries.
        book.assert_uncrossed(id, at);
        if r.flags.is_last() {
            assert!(unsettled.is_empty(), "record {at}: fills never settled");
            trade_side = None;
        }
        prev = Some(r);
    }
    let last = records.last().expect("records");
    assert!(last.flags.is_last(), "capture ends inside an event");
    coverage
}

#[test]
fn decoded_book_is_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (seed, events, instruments) in [(1, 20_000, 3), (2, 6_000, 1), (3, 777, 40)] {
        let path = dir.path().join(format!("book{seed}.dbn.zst"));
        write_capture(&cfg(seed, events, instruments), &path).expect("write capture");
        let (_, records) = decode(&path);
        assert_eq!(records.len() as u64, events);
        let coverage = check_book(&records, instruments);
        if events >= 6_000 {
            assert!(
                coverage.partial_cancels > 0
                    && coverage.full_fills > 0
                    && coverage.partial_fills > 0
                    && coverage.price_moves > 0,
                "{coverage:?}"
            );
        }
    }
}

#[test]
fn captures_start_with_a_snapshot_per_instrument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.dbn");
    write_capture(&cfg(4, 2_000, 3), &path).expect("write capture");
    let (_, records) = decode(&path);
    let mut i = 0;
    for instrument in 1..=3u32 {
        let clear = &records[i];
        assert_eq!((action(clear), clear.hd.instrument_id), (b'R', instrument));
        assert!(clear.flags.is_snapshot());
        i += 1;
        while !records[i - 1].flags.is_last() {
            assert_eq!(action(&records[i]), b'A');
            assert!(records[i].flags.is_snapshot());
            i += 1;
        }
        assert!(i > 2, "empty snapshot");
    }
    assert!(records[i..].iter().all(|r| !r.flags.is_snapshot()));
}

#[test]
fn long_run_switches_regimes_and_uses_every_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("long.dbn.zst");
    let stats = write_capture(&cfg(5, 30_000, 2), &path).expect("write capture");
    let (_, records) = decode(&path);
    let count = |a: u8| records.iter().filter(|r| action(r) == a).count() as u64;
    assert!(stats.regime_switches > 0, "{stats:?}");
    assert!(stats.trades > 0, "{stats:?}");
    assert_eq!(stats.records, records.len() as u64);
    assert_eq!(stats.adds, count(b'A'));
    assert_eq!(stats.cancels, count(b'C'));
    assert_eq!(stats.modifies, count(b'M'));
    assert_eq!(stats.trades, count(b'T'));
    assert_eq!(stats.fills, count(b'F'));
    for a in [b'A', b'C', b'M', b'T', b'F', b'R'] {
        assert!(count(a) > 0, "no {:?} records", a as char);
    }
    // Both directions of aggression occur.
    let sides: Vec<u8> = records
        .iter()
        .filter(|r| action(r) == b'T')
        .map(side)
        .collect();
    assert!(sides.contains(&b'B') && sides.contains(&b'A'));
}

#[test]
fn invalid_configs_are_errors_and_create_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.dbn.zst");
    let cases = [
        cfg(1, 0, 1),
        cfg(1, 10, 0),
        cfg(1, 10, MAX_INSTRUMENTS + 1),
        SynthConfig {
            mean_gap_ns: 0,
            ..cfg(1, 10, 1)
        },
        SynthConfig {
            start_ts: u64::MAX - 1,
            ..cfg(1, 10, 1)
        },
    ];
    for config in &cases {
        let err = write_capture(config, &path).expect_err("invalid config accepted");
        assert!(Generator::new(config).is_err());
        assert!(!err.to_string().is_empty());
        assert!(!path.exists(), "{config:?} left a file behind");
    }
    assert!(matches!(
        write_capture(&cfg(1, 0, 1), &path),
        Err(SynthError::ZeroEvents)
    ));
    assert!(matches!(
        write_capture(&cfg(1, 10, 0), &path),
        Err(SynthError::ZeroInstruments)
    ));
    assert!(matches!(
        write_capture(&cfg(1, 10, 10_001), &path),
        Err(SynthError::TooManyInstruments {
            requested: 10_001,
            ..
        })
    ));
}

#[test]
fn unknown_extension_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["cap.zst", "cap.csv", "cap", "cap.dbn.gz", "cap.dbn.zstd"] {
        let path = dir.path().join(name);
        let err = write_capture(&cfg(1, 10, 1), &path).expect_err(name);
        assert!(
            matches!(err, SynthError::UnsupportedExtension { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert!(!path.exists(), "{name} was created");
    }
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing-dir").join("cap.dbn");
    let err = write_capture(&cfg(1, 10, 1), &path).expect_err("no such directory");
    assert!(matches!(err, SynthError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

/// Manual check of the streaming claim: `cargo test --release --test synth -- --ignored`.
#[test]
#[ignore = "writes 10 M records; run in release"]
fn ten_million_events_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.dbn.zst");
    let stats = write_capture(&cfg(10, 10_000_000, 8), &path).expect("write capture");
    assert_eq!(stats.records, 10_000_000);
    let mut decoder =
        DynDecoder::from_file(&path, VersionUpgradePolicy::AsIs).expect("open capture");
    let mut n = 0u64;
    while decoder
        .decode_record::<MboMsg>()
        .expect("decode record")
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 10_000_000);
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
        let peak_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        // 10 M records are 560 MB raw; a bounded generator peaks far below that.
        assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    }
}
