//! Features on real data, read in place from the shared data folder (`TICKPIPE_DATA`, else
//! `../shared/data`; skipped with a message when absent):
//!
//! - the ES day: every vector the feature stage emits equals a naive recompute-from-window of
//!   every feature (`features::naive`) fed the same book states and trades, to 1e-9 relative;
//! - Databento's own one-minute OHLCV bars for ESU4 equal the bars built from its trades.

use std::ops::ControlFlow;
use std::path::PathBuf;

use dbn::decode::{DbnMetadata, DecodeRecordRef, DynDecoder};
use dbn::{OhlcvMsg, VersionUpgradePolicy};
use tickpipe_pipeline::book::Books;
use tickpipe_pipeline::depth::{Depth, Trade};
use tickpipe_pipeline::feature_engine::{FeatureEngine, FeatureEngineConfig};
use tickpipe_pipeline::features::naive::NaiveFeatures;
use tickpipe_pipeline::features::{Bar, N_FEATURES, SCHEMA, TimeSource};
use tickpipe_pipeline::msg::{Event, MAX_PARTS, Tick, rtype};

fn data(rel: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TICKPIPE_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        PathBuf::from,
    );
    let path = base.join(rel);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: real data {} not found (set TICKPIPE_DATA)",
            path.display()
        );
        None
    }
}

/// Every record of a capture as events (MBP-10 expanded), in order.
fn events(path: &PathBuf) -> Vec<Event> {
    let mut dec = DynDecoder::from_file(path, VersionUpgradePolicy::AsIs).unwrap();
    let _ = dec.metadata();
    let mut out = Vec::new();
    let mut parts = [Event::default(); MAX_PARTS];
    let mut seq = 0;
    while let Some(rec) = dec.decode_record_ref().unwrap() {
        let n = Event::decode_parts(rec.as_ref(), seq, 0, &mut parts).unwrap();
        out.extend_from_slice(&parts[..n]);
        seq += 1;
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn es_day_vectors_equal_the_naive_recompute() {
    let Some(path) = data("dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst") else {
        return;
    };
    let evs = events(&path);
    let cfg = FeatureEngineConfig::default();
    let mut engine = FeatureEngine::new(&cfg).unwrap();
    // The reference: the same books, the naive features, the emission rule written out again.
    let mut books = Books::new(&cfg.book).unwrap();
    let mut naive: Vec<(u32, NaiveFeatures)> = Vec::new();
    let mut depth = Depth::default();
    let mut tick = Tick::default();
    let mut expected = [0.0; N_FEATURES];
    let (mut vectors, mut finite) = (0u64, [0u64; N_FEATURES]);
    for ev in &evs {
        let emitted = engine.on_event(ev, &mut tick, &mut |_, _| {});
        let slot = books.apply(ev);
        let mut reference = false;
        if let Some(slot) = slot.filter(|_| ev.rtype == rtype::MBO) {
            let id = ev.instrument_id;
            let i = match naive.iter().position(|(k, _)| *k == id) {
                Some(i) => i,
                None => {
                    naive.push((id, NaiveFeatures::new(&cfg.features)));
                    naive.len() - 1
                }
            };
            let n = &mut naive[i].1;
            let ts = ev.ts_recv;
            if !ev.is_snapshot() {
                n.on_event(ts);
            }
            if ev.action == b'T' {
                n.on_trade(
                    ts,
                    &Trade {
                        price: ev.price,
                        size: ev.size,
                        side: ev.side,
                    },
                );
            }
            if ev.is_last() {
                let book = books.book(slot);
                book.depth(&mut depth);
                n.on_book(ts, &depth, book.tick_size(), &mut expected);
                reference = true;
            }
        }
        assert_eq!(emitted, reference, "emission at seq {}", ev.seq);
        if !emitted {
            continue;
        }
        vectors += 1;
        for (f, (a, b)) in tick.values.iter().zip(&expected).enumerate() {
            assert!(
                close(*a, *b),
                "seq {} {}: engine {a} naive {b}",
                ev.seq,
                SCHEMA[f].name
            );
            finite[f] += u64::from(a.is_finite());
        }
    }
    let c = engine.counts();
    assert_eq!(c.vectors, vectors);
    assert_eq!(c.features.window_overflow, 0);
    assert!(vectors > 40_000, "{vectors} vectors");
    // Every feature took real values on the day (spread_ticks needs a definition: none here).
    for (f, n) in finite.iter().enumerate() {
        if SCHEMA[f].name != "spread_ticks" {
            assert!(*n > 100, "{} finite in only {n} vectors", SCHEMA[f].name);
        }
    }
    eprintln!("ES day: {vectors} vectors equal the naive recompute; {c:?}");
}

#[test]
fn one_minute_bars_equal_databento_ohlcv() {
    let (Some(trades), Some(ohlcv)) = (
        data("dbn/esu4/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"),
        data("dbn/esu4/futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst"),
    ) else {
        return;
    };
    let mut cfg = FeatureEngineConfig::default();
    // Databento builds bars on ts_event.
    cfg.features.time_source = TimeSource::Event;
    let mut engine = FeatureEngine::new(&cfg).unwrap();
    let mut bars: Vec<(u32, Bar)> = Vec::new();
    let mut tick = Tick::default();
    let evs = events(&trades);
    // The query window the file was cut with: every trade in it is in the file.
    let meta = DynDecoder::from_file(&trades, VersionUpgradePolicy::AsIs)
        .unwrap()
        .metadata()
        .clone();
    let (first, last) = (meta.start, meta.end.map_or(u64::MAX, |e| e.get()));
    let ids: std::collections::BTreeSet<u32> = evs.iter().map(|e| e.instrument_id).collect();
    for ev in &evs {
        engine.on_event(ev, &mut tick, &mut |id, b| bars.push((id, b)));
    }
    engine.flush_bars(&mut |id, b| bars.push((id, b)));
    let minute = 60_000_000_000u64;
    let mut dec = DynDecoder::from_file(&ohlcv, VersionUpgradePolicy::AsIs).unwrap();
    let mut checked = 0;
    let mut visit = |rec: &OhlcvMsg| -> ControlFlow<()> {
        let ts = rec.hd.ts_event;
        // Only minutes the trades file covers whole, of the instruments it has.
        if ts < first.div_ceil(minute) * minute
            || ts + minute > last
            || !ids.contains(&rec.hd.instrument_id)
        {
            return ControlFlow::Continue(());
        }
        let ours = bars
            .iter()
            .find(|(id, b)| {
                *id == rec.hd.instrument_id && b.interval_ns == minute && b.ts_start == ts
            })
            .unwrap_or_else(|| panic!("no bar for {} at {ts}", rec.hd.instrument_id));
        let b = &ours.1;
        assert_eq!(
            (b.open, b.high, b.low, b.close, b.volume),
            (rec.open, rec.high, rec.low, rec.close, rec.volume),
            "bar at {ts}"
        );
        checked += 1;
        ControlFlow::Continue(())
    };
    while let Some(rec) = dec.decode_record_ref().unwrap() {
        if let Some(o) = rec.get::<OhlcvMsg>() {
            let _ = visit(o);
        }
    }
    assert_eq!(checked, 4, "the four whole minutes of the trades file");
    eprintln!("{checked} one-minute bars equal Databento's");
}
