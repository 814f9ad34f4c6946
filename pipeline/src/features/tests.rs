//! Hand-computed cases per feature, the schema contract, and random streams checked against
//! the naive recompute.

use super::naive::NaiveFeatures;
use super::*;
use crate::depth::Level;
use proptest::prelude::*;

const S: u64 = 1_000_000_000;
/// 0.25 in fixed point.
const TICK: i64 = 250_000_000;

fn px(x: f64) -> i64 {
    (x * 1e9).round() as i64
}

fn depth(bids: &[(f64, u64)], asks: &[(f64, u64)]) -> Depth {
    let mut d = Depth::default();
    for (i, (p, q)) in bids.iter().enumerate() {
        d.bids[i] = Level {
            price: px(*p),
            size: *q,
            count: 1,
        };
    }
    for (i, (p, q)) in asks.iter().enumerate() {
        d.asks[i] = Level {
            price: px(*p),
            size: *q,
            count: 1,
        };
    }
    d.bid_levels = bids.len() as u8;
    d.ask_levels = asks.len() as u8;
    d
}

fn trade(price: f64, size: u32, side: u8) -> Trade {
    Trade {
        price: px(price),
        size,
        side,
    }
}

fn cfg(capacity: usize) -> FeatureConfig {
    FeatureConfig {
        time_source: TimeSource::Recv,
        window_capacity: capacity,
        default_tick_size: None,
    }
}

fn state() -> FeatureState {
    FeatureState::new(&cfg(1024))
}

fn book(st: &mut FeatureState, ts: u64, d: &Depth) -> [f64; N_FEATURES] {
    let mut out = [0.0; N_FEATURES];
    st.on_book(ts, d, Some(TICK), &mut out);
    out
}

/// `|a - b| <= 1e-9 * max(|a|, |b|)`, NaN equal to NaN.
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn assert_close(got: f64, want: f64) {
    assert!(same(got, want), "got {got}, want {want}");
}

#[test]
fn best_level_features() {
    let mut st = state();
    let out = book(&mut st, S, &depth(&[(100.0, 10)], &[(100.5, 30)]));
    assert_eq!(out[MID], 100.25);
    assert_eq!(out[SPREAD_TICKS], 2.0);
    assert_close(out[SPREAD_BPS], 0.5 / 100.25 * 1e4);
    // (100 * 30 + 100.5 * 10) / 40
    assert_close(out[MICROPRICE], 100.125);
}

#[test]
fn spread_ticks_needs_a_tick_size() {
    let d = depth(&[(100.0, 1)], &[(100.5, 1)]);
    let mut out = [0.0; N_FEATURES];
    let mut st = state();
    st.on_book(1, &d, None, &mut out);
    assert!(out[SPREAD_TICKS].is_nan());
    st.on_book(2, &d, Some(0), &mut out);
    assert!(out[SPREAD_TICKS].is_nan());
    let mut st = FeatureState::new(&FeatureConfig {
        default_tick_size: Some(px(0.125)),
        ..cfg(16)
    });
    st.on_book(1, &d, None, &mut out);
    assert_eq!(out[SPREAD_TICKS], 4.0);
    st.on_book(2, &d, Some(TICK), &mut out);
    assert_eq!(out[SPREAD_TICKS], 2.0);
}

#[test]
fn depth_imbalance_is_cumulative() {
    let mut st = state();
    let asks = [(101.0, 5), (102.0, 5), (103.0, 5), (104.0, 5), (105.0, 5)];
    let out = book(
        &mut st,
        S,
        &depth(&[(100.0, 10), (99.0, 20), (98.0, 30)], &asks),
    );
    let want = [
        5.0 / 15.0,
        20.0 / 40.0,
        45.0 / 75.0,
        40.0 / 80.0,
        35.0 / 85.0,
    ];
    for (k, w) in want.iter().enumerate() {
        assert_close(out[DEPTH_IMBALANCE_L1 + k], *w);
    }
    // Levels past `bid_levels` are ignored even if filled.
    let mut d = depth(&[(100.0, 10), (99.0, 20)], &[(101.0, 10)]);
    d.bid_levels = 1;
    let out = book(&mut st, 2 * S, &d);
    assert_eq!(out[DEPTH_IMBALANCE_L1 + 1], 0.0);
    // A count beyond the levels a Depth carries reads all of them.
    let mut d = depth(&[(100.0, 10), (99.0, 20)], &[(101.0, 10)]);
    d.bid_levels = 200;
    let out = book(&mut st, 2 * S, &d);
    assert_close(out[DEPTH_IMBALANCE_L1 + 1], 20.0 / 40.0);
    // Zero sizes on both sides: undefined.
    let out = book(&mut st, 3 * S, &depth(&[(100.0, 0)], &[(101.0, 0)]));
    assert!(out[DEPTH_IMBALANCE_L1].is_nan());
    assert!(out[MICROPRICE].is_nan());
    assert_eq!(out[MID], 100.5);
}

#[test]
fn one_sided_book_is_undefined() {
    let mut st = state();
    book(&mut st, S, &depth(&[(100.0, 10)], &[(101.0, 10)]));
    st.on_trade(S, &trade(100.0, 3, b'A'));
    let out = book(&mut st, 2 * S, &depth(&[(100.0, 10)], &[]));
    for i in (MID..DEPTH_IMBALANCE_L1 + 5).chain(LOG_RETURN_1S..=VWAP_DEV_60S_BPS) {
        assert!(out[i].is_nan(), "{} should be NaN", SCHEMA[i].name);
    }
    // The ask side vanished: OFI adds back its 10.
    assert_eq!(out[OFI_100EV], 10.0);
    assert_eq!(out[LAST_TRADE_SIGN], -1.0);
    assert_eq!(out[SIGNED_VOLUME_10S], -3.0);
    assert_eq!(out[RV_60S], 0.0);
}

#[test]
fn ofi_follows_best_levels() {
    let mut st = state();
    type Side<'a> = &'a [(f64, u64)];
    let steps: [(Side, Side, f64); 6] = [
        (&[(100.0, 10)], &[(101.0, 5)], 0.0),
        // bid size up at the same price: +5
        (&[(100.0, 15)], &[(101.0, 5)], 5.0),
        // bid price up: +new size 3
        (&[(100.25, 3)], &[(101.0, 5)], 3.0),
        // ask price down: -new size 7
        (&[(100.25, 3)], &[(100.75, 7)], -7.0),
        // bid down (-3) and ask up (+7)
        (&[(100.0, 4)], &[(101.0, 9)], 4.0),
        // ask size down at the same price: -(7 - 9) = +2, bid unchanged
        (&[(100.0, 4)], &[(101.0, 7)], 2.0),
    ];
    let mut total = 0.0;
    for (i, (b, a, e)) in steps.iter().enumerate() {
        let out = book(&mut st, S + i as u64, &depth(b, a));
        total += e;
        assert_eq!(out[OFI_100EV], total, "step {i}");
        assert_eq!(out[OFI_1S], total, "step {i}");
        assert_eq!(out[OFI_10S], total, "step {i}");
    }
}

#[test]
fn ofi_windows_are_half_open() {
    let mut st = state();
    let a = depth(&[(100.0, 10)], &[(101.0, 5)]);
    let b = depth(&[(100.0, 12)], &[(101.0, 5)]);
    book(&mut st, 10 * S, &a);
    book(&mut st, 10 * S, &b); // +2 at 10 s
    let out = book(&mut st, 10 * S + S / 2, &a); // -2 at 10.5 s
    assert_eq!((out[OFI_1S], out[OFI_10S]), (0.0, 0.0));
    // At 11 s the +2 stamped 10 s has left (10 s, 11 s]; the -2 stays.
    let out = book(&mut st, 11 * S, &a);
    assert_eq!((out[OFI_1S], out[OFI_10S]), (-2.0, 0.0));
    let out = book(&mut st, 20 * S, &a);
    assert_eq!((out[OFI_1S], out[OFI_10S]), (0.0, -2.0));
    let out = book(&mut st, 20 * S + S / 2, &a);
    assert_eq!((out[OFI_1S], out[OFI_10S]), (0.0, 0.0));
    assert_eq!(out[OFI_100EV], 0.0);
}

#[test]
fn ofi_100ev_counts_book_states() {
    let mut st = state();
    // Every state adds one to the best bid: e = +1 each, except the first (e = 0).
    for n in 0..150u64 {
        let out = book(&mut st, 0, &depth(&[(100.0, 10 + n)], &[(101.0, 5)]));
        assert_eq!(out[OFI_100EV], n.min(100) as f64, "state {n}");
        assert_eq!(out[OFI_1S], n as f64);
    }
}

#[test]
fn trade_sign_rules() {
    let mut st = state();
    let mut out = book(&mut st, 1, &depth(&[], &[(101.0, 1)]));
    assert!(out[LAST_TRADE_SIGN].is_nan());
    // No two-sided book yet: the tick rule says 0.
    st.on_trade(2, &trade(100.0, 1, b'N'));
    out = book(&mut st, 2, &depth(&[(100.0, 1)], &[(101.0, 1)]));
    assert_eq!(out[LAST_TRADE_SIGN], 0.0);
    for (side, price, want) in [
        (b'B', 100.0, 1.0),
        (b'A', 101.0, -1.0),
        (b'N', 100.75, 1.0),
        (b'N', 100.25, -1.0),
        (b'N', 100.5, 0.0),
        (0u8, 101.0, 1.0),
    ] {
        st.on_trade(3, &trade(price, 2, side));
        out = book(&mut st, 3, &depth(&[(100.0, 1)], &[(101.0, 1)]));
        assert_eq!(out[LAST_TRADE_SIGN], want, "side {side} price {price}");
    }
    // 0 + 2 - 2 + 2 - 2 + 0 + 2 stamped at 2 and 3 ns.
    assert_eq!(out[SIGNED_VOLUME_1S], 2.0);
}

#[test]
fn signed_volume_and_trade_rate_windows() {
    let mut st = state();
    let d = depth(&[(100.0, 1)], &[(101.0, 1)]);
    book(&mut st, 0, &d);
    st.on_trade(0, &trade(100.0, 5, b'B'));
    st.on_trade(S / 2, &trade(100.0, 2, b'A'));
    st.on_trade(S, &trade(100.0, 1, b'B'));
    let out = book(&mut st, S, &d);
    // (0, 1 s] excludes the trade at 0.
    assert_eq!(out[SIGNED_VOLUME_1S], -1.0);
    assert_eq!(out[TRADE_RATE_1S], 2.0);
    assert_eq!(out[SIGNED_VOLUME_10S], 4.0);
    let out = book(&mut st, 11 * S - 1, &d);
    assert_eq!((out[SIGNED_VOLUME_1S], out[SIGNED_VOLUME_10S]), (0.0, 1.0));
    assert_eq!(out[TRADE_RATE_1S], 0.0);
}

#[test]
fn realized_variance_and_returns() {
    let mut st = state();
    let at = |mid: f64| depth(&[(mid - 0.5, 1)], &[(mid + 0.5, 1)]);
    let out = book(&mut st, 10 * S, &at(100.0));
    assert_eq!(out[RV_1S], 0.0);
    assert!(
        out[LOG_RETURN_1S].is_nan(),
        "history does not cover 1 s yet"
    );
    book(&mut st, 10 * S + S / 2, &at(101.0));
    // One-sided in between: skipped, the next return is against 101.
    book(&mut st, 10 * S + 600_000_000, &depth(&[(100.0, 1)], &[]));
    let out = book(&mut st, 11 * S, &at(99.0));
    let (r1, r2) = ((101.0f64 / 100.0).ln(), (99.0f64 / 101.0).ln());
    assert_close(out[RV_1S], r1 * r1 + r2 * r2);
    assert_close(out[RV_60S], r1 * r1 + r2 * r2);
    // Base for 1 s: the mid at or before 10 s, i.e. 100.
    assert_close(out[LOG_RETURN_1S], (99.0f64 / 100.0).ln());
    assert!(out[LOG_RETURN_10S].is_nan());
    let out = book(&mut st, 11 * S + S / 2, &at(99.0));
    // (10.5 s, 11.5 s]: only the return stamped 11 s; base is 101 (stamped 10.5 s).
    assert_close(out[RV_1S], r2 * r2);
    assert_close(out[LOG_RETURN_1S], (99.0f64 / 101.0).ln());
    // Long quiet period: the windows empty out to exactly 0, the returns are flat.
    let out = book(&mut st, 500 * S, &at(99.0));
    for k in 0..3 {
        assert_eq!(out[RV_1S + k].to_bits(), 0f64.to_bits());
        assert_eq!(out[LOG_RETURN_1S + k], 0.0);
    }
}

#[test]
fn vwap_deviation() {
    let mut st = state();
    let d = depth(&[(100.0, 1)], &[(101.0, 1)]);
    let out = book(&mut st, 0, &d);
    assert!(out[VWAP_DEV_60S_BPS].is_nan(), "no trades");
    st.on_trade(S, &trade(100.0, 1, b'B'));
    st.on_trade(2 * S, &trade(101.0, 3, b'B'));
    let out = book(&mut st, 2 * S, &d);
    let vwap = (100.0 + 3.0 * 101.0) / 4.0;
    assert_close(out[VWAP_DEV_60S_BPS], (100.5 - vwap) / vwap * 1e4);
    // (100 + 303 + 401) / 8 = 100.5, the mid exactly: 0.
    st.on_trade(3 * S, &trade(100.25, 4, b'A'));
    let out = book(&mut st, 3 * S, &d);
    assert_eq!(out[VWAP_DEV_60S_BPS], 0.0);
    // (2 s, 62 s] holds the last trade only.
    let out = book(&mut st, 62 * S, &d);
    assert_close(out[VWAP_DEV_60S_BPS], (100.5 - 100.25) / 100.25 * 1e4);
    let out = book(&mut st, 63 * S, &d);
    assert!(out[VWAP_DEV_60S_BPS].is_nan(), "window empty");
}

#[test]
fn vwap_beyond_i64_matches_naive() {
    // Notional beyond i64 (about 4.6e12 * 4.3e9 per trade) takes the exact 128-bit path.
    let config = cfg(64);
    let mut fast = FeatureState::new(&config);
    let mut slow = NaiveFeatures::new(&config);
    let d = depth(&[(4600.0, 1)], &[(4600.25, 1)]);
    let (mut a, mut b) = ([0.0; N_FEATURES], [0.0; N_FEATURES]);
    for (i, (price, size)) in [(4600.0, u32::MAX), (4601.0, u32::MAX), (4599.5, 7)]
        .into_iter()
        .enumerate()
    {
        let ts = S + i as u64;
        let t = trade(price, size, b'B');
        fast.on_trade(ts, &t);
        slow.on_trade(ts, &t);
        fast.on_book(ts, &d, Some(TICK), &mut a);
        slow.on_book(ts, &d, Some(TICK), &mut b);
        assert_close(a[VWAP_DEV_60S_BPS], b[VWAP_DEV_60S_BPS]);
        assert_close(a[SIGNED_VOLUME_1S], b[SIGNED_VOLUME_1S]);
    }
    // Back inside i64 once the big trades leave the window.
    fast.on_trade(70 * S, &trade(4600.0, 3, b'A'));
    slow.on_trade(70 * S, &trade(4600.0, 3, b'A'));
    fast.on_book(70 * S, &d, Some(TICK), &mut a);
    slow.on_book(70 * S, &d, Some(TICK), &mut b);
    assert_close(a[VWAP_DEV_60S_BPS], b[VWAP_DEV_60S_BPS]);
    assert_close(a[VWAP_DEV_60S_BPS], (4600.125 - 4600.0) / 4600.0 * 1e4);
}

#[test]
fn cached_values_follow_their_inputs() {
    let mut st = state();
    let d = depth(&[(100.0, 10)], &[(100.5, 30)]);
    let first = book(&mut st, S, &d);
    // Same book, other tick: only spread_ticks moves.
    let mut out = [0.0; N_FEATURES];
    st.on_book(S, &d, Some(TICK / 2), &mut out);
    assert_eq!(out[SPREAD_TICKS], 2.0 * first[SPREAD_TICKS]);
    assert_eq!(out[MICROPRICE], first[MICROPRICE]);
    // Same prices, other sizes: the microprice moves with them.
    let out = book(&mut st, S, &depth(&[(100.0, 30)], &[(100.5, 10)]));
    assert_close(out[MICROPRICE], 100.375);
    // A one-sided state in between does not leave a stale quote behind.
    book(&mut st, S, &depth(&[(100.0, 30)], &[]));
    let out = book(&mut st, S, &depth(&[(100.0, 30)], &[(100.5, 10)]));
    assert_close(out[MICROPRICE], 100.375);
    assert_eq!(out[MID], 100.25);
    // A trade moves the VWAP deviation with the book unchanged.
    st.on_trade(S, &trade(100.0, 1, b'B'));
    let out = book(&mut st, S, &depth(&[(100.0, 30)], &[(100.5, 10)]));
    assert_close(out[VWAP_DEV_60S_BPS], 0.25 / 100.0 * 1e4);
    st.on_trade(S, &trade(100.5, 1, b'B'));
    let out = book(&mut st, S, &depth(&[(100.0, 30)], &[(100.5, 10)]));
    assert_eq!(out[VWAP_DEV_60S_BPS], 0.0);
}

#[test]
fn event_rate_counts_records() {
    let mut st = state();
    let d = depth(&[(100.0, 1)], &[(101.0, 1)]);
    for i in 0..10 {
        st.on_event(i * S / 10);
    }
    let out = book(&mut st, S - 1, &d);
    assert_eq!(out[EVENT_RATE_1S], 10.0);
    let out = book(&mut st, S + S / 2, &d);
    assert_eq!(out[EVENT_RATE_1S], 4.0);
    assert_eq!(st.counts().events, 10);
}

#[test]
fn time_regressions_use_the_clock() {
    let mut st = state();
    let d = depth(&[(100.0, 1)], &[(101.0, 1)]);
    st.on_event(10 * S);
    st.on_event(5 * S); // stamped 10 s
    st.on_trade(4 * S, &trade(100.0, 2, b'B')); // stamped 10 s
    let out = book(&mut st, 9 * S, &d); // evaluated at 10 s
    assert_eq!(out[EVENT_RATE_1S], 2.0);
    assert_eq!(out[SIGNED_VOLUME_1S], 2.0);
    assert_eq!(st.counts().time_regressions, 3);
    let out = book(&mut st, 11 * S, &d);
    assert_eq!(out[EVENT_RATE_1S], 0.0);
}

#[test]
fn reset_forgets_history() {
    let mut st = state();
    let d = depth(&[(100.0, 1)], &[(101.0, 1)]);
    st.on_event(100 * S);
    st.on_trade(100 * S, &trade(100.0, 2, b'B'));
    book(&mut st, 100 * S, &d);
    book(&mut st, 100 * S, &depth(&[(100.0, 5)], &[(101.0, 1)]));
    st.reset();
    let out = book(&mut st, 5 * S, &d);
    assert!(out[LAST_TRADE_SIGN].is_nan());
    assert!(out[LOG_RETURN_1S].is_nan());
    for i in [
        OFI_100EV,
        OFI_1S,
        SIGNED_VOLUME_1S,
        EVENT_RATE_1S,
        TRADE_RATE_1S,
    ] {
        assert_eq!(out[i], 0.0, "{}", SCHEMA[i].name);
    }
    let c = st.counts();
    assert_eq!((c.resets, c.time_regressions, c.books), (1, 0, 3));
}

#[test]
fn small_capacity_counts_overflow() {
    let mut st = FeatureState::new(&cfg(4));
    let d = depth(&[(100.0, 1)], &[(101.0, 1)]);
    for i in 0..20 {
        st.on_event(i * 1_000);
    }
    let out = book(&mut st, 20_000, &d);
    assert_eq!(st.counts().window_overflow, 16);
    assert_eq!(out[EVENT_RATE_1S], 4.0, "only what the ring holds");
    // Mids and trades overflow too.
    for i in 0..10u64 {
        st.on_trade(30_000 + i, &trade(100.0, 1, b'B'));
        let mid = 100.0 + i as f64;
        book(&mut st, 30_000 + i, &depth(&[(mid, 1)], &[(mid + 1.0, 1)]));
    }
    assert!(st.counts().window_overflow > 16 + 6 + 6);
}

#[test]
fn schema_is_consistent() {
    assert_eq!(SCHEMA.len(), N_FEATURES);
    let names: Vec<&str> = SCHEMA.iter().map(|s| s.name).collect();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(index_of(n), Some(i), "{n} is unique");
        assert!(!SCHEMA[i].unit.is_empty() && !SCHEMA[i].description.is_empty());
    }
    for (index, name) in [
        (MID, "mid"),
        (SPREAD_TICKS, "spread_ticks"),
        (SPREAD_BPS, "spread_bps"),
        (MICROPRICE, "microprice"),
        (DEPTH_IMBALANCE_L1, "depth_imbalance_l1"),
        (DEPTH_IMBALANCE_L1 + 4, "depth_imbalance_l5"),
        (OFI_100EV, "ofi_100ev"),
        (OFI_1S, "ofi_1s"),
        (OFI_10S, "ofi_10s"),
        (LAST_TRADE_SIGN, "last_trade_sign"),
        (SIGNED_VOLUME_1S, "signed_volume_1s"),
        (SIGNED_VOLUME_10S, "signed_volume_10s"),
        (RV_1S, "rv_1s"),
        (RV_10S, "rv_10s"),
        (RV_60S, "rv_60s"),
        (LOG_RETURN_1S, "log_return_1s"),
        (LOG_RETURN_10S, "log_return_10s"),
        (LOG_RETURN_60S, "log_return_60s"),
        (VWAP_DEV_60S_BPS, "vwap_dev_60s_bps"),
        (EVENT_RATE_1S, "event_rate_1s"),
        (TRADE_RATE_1S, "trade_rate_1s"),
    ] {
        assert_eq!(SCHEMA[index].name, name);
    }
}

#[test]
fn check_schema_accepts_and_refuses() {
    let names: Vec<&str> = SCHEMA.iter().map(|s| s.name).collect();
    assert_eq!(check_schema(&names, SCHEMA_VERSION), Ok(()));

    assert_eq!(
        check_schema(&names, 2),
        Err(SchemaMismatch::Version {
            expected: 1,
            found: 2
        })
    );

    let mut swapped = names.clone();
    swapped.swap(RV_1S, RV_10S);
    assert_eq!(
        check_schema(&swapped, 1),
        Err(SchemaMismatch::Name {
            position: RV_1S,
            expected: "rv_1s",
            found: "rv_10s".into()
        })
    );

    let short = &names[..N_FEATURES - 1];
    assert_eq!(
        check_schema(short, 1),
        Err(SchemaMismatch::Missing {
            position: N_FEATURES - 1,
            expected: "trade_rate_1s"
        })
    );

    let mut long = names.clone();
    long.push("rv_1h");
    let err = check_schema(&long, 1).expect_err("extra name");
    assert_eq!(
        err,
        SchemaMismatch::Extra {
            position: N_FEATURES,
            found: "rv_1h".into()
        }
    );
    assert!(err.to_string().contains("rv_1h"));
}

#[test]
fn time_source_parses() {
    assert_eq!("ts_recv".parse::<TimeSource>(), Ok(TimeSource::Recv));
    assert_eq!("ts_event".parse::<TimeSource>(), Ok(TimeSource::Event));
    assert!("recv".parse::<TimeSource>().is_err());
    assert_eq!(TimeSource::Event.to_string(), "ts_event");
    assert_eq!(TimeSource::Event.pick(1, 2), 2);

    #[derive(serde::Deserialize)]
    struct Wrap {
        features: FeatureConfig,
    }
    let w: Wrap = toml::from_str(
        "[features]\ntime_source = \"ts_event\"\nwindow_capacity = 8\ndefault_tick_size = 250000000\n",
    )
    .expect("valid");
    assert_eq!(
        w.features,
        FeatureConfig {
            time_source: TimeSource::Event,
            window_capacity: 8,
            default_tick_size: Some(TICK),
        }
    );
}

// ---- random streams against the naive recompute ----

#[derive(Debug, Clone)]
enum Op {
    Event,
    Trade {
        offset: i64,
        size: u32,
        side: u8,
    },
    Book {
        step: i64,
        spread: i64,
        gap: i64,
        bids: u8,
        asks: u8,
        sizes: [u64; 10],
        tick: Option<i64>,
    },
    Reset,
}

fn time_step() -> impl Strategy<Value = i64> {
    let s = S as i64;
    prop_oneof![
        4 => Just(0i64),
        4 => (0i64..1000).prop_map(|ms| ms * 1_000_000),
        3 => (0i64..9).prop_map(move |q| q * s / 4),
        1 => prop::sample::select(vec![s, 10 * s, 60 * s]),
        1 => (61i64..400).prop_map(move |x| x * s),
        1 => (1i64..3000).prop_map(|ms| -ms * 1_000_000),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 6 => 1u64..50]
}

fn op() -> impl Strategy<Value = Op> {
    let trade = (
        -3i64..=3,
        0u32..20,
        prop::sample::select(vec![b'B', b'A', b'N', b'X']),
    )
        .prop_map(|(offset, size, side)| Op::Trade { offset, size, side });
    let book = (
        -2i64..=2,
        -1i64..=4,
        1i64..=2,
        0u8..=5,
        0u8..=5,
        prop::array::uniform10(size()),
        prop::sample::select(vec![None, Some(TICK), Some(0)]),
    )
        .prop_map(|(step, spread, gap, bids, asks, sizes, tick)| Op::Book {
            step,
            spread,
            gap,
            bids,
            asks,
            sizes,
            tick,
        });
    prop_oneof![
        3 => Just(Op::Event),
        3 => trade,
        6 => book,
        1 => Just(Op::Reset),
    ]
}

/// The book the generator means: best bid `center`, best ask `center + spread` (in ticks).
fn build(
    center: i64,
    spread: i64,
    gap: i64,
    bids: u8,
    asks: u8,
    sizes: &[u64; 10],
    unit: i64,
) -> Depth {
    let mut d = Depth::default();
    let (bid_sizes, ask_sizes) = sizes.split_at(FEATURE_LEVELS);
    for (i, (level, size)) in d.bids.iter_mut().zip(bid_sizes).enumerate() {
        if i < usize::from(bids) {
            *level = Level {
                price: (center - gap * i as i64) * unit,
                size: *size,
                count: 1,
            };
        }
    }
    for (i, (level, size)) in d.asks.iter_mut().zip(ask_sizes).enumerate() {
        if i < usize::from(asks) {
            *level = Level {
                price: (center + spread + gap * i as i64) * unit,
                size: *size,
                count: 1,
            };
        }
    }
    d.bid_levels = bids;
    d.ask_levels = asks;
    d
}

fn run_stream(
    start: u64,
    center0: i64,
    default_tick: Option<i64>,
    steps: &[(i64, Op)],
    resets: bool,
) -> Result<(), TestCaseError> {
    let config = FeatureConfig {
        default_tick_size: default_tick,
        ..cfg(4096)
    };
    let mut fast = FeatureState::new(&config);
    let mut slow = NaiveFeatures::new(&config);
    let mut ts = start;
    let mut center = center0;
    let (mut a, mut b) = ([0.0; N_FEATURES], [0.0; N_FEATURES]);
    for (n, (dt, op)) in steps.iter().enumerate() {
        ts = ts.saturating_add_signed(*dt);
        match op {
            Op::Event => {
                fast.on_event(ts);
                slow.on_event(ts);
            }
            Op::Trade { offset, size, side } => {
                let t = Trade {
                    price: (center + offset) * TICK,
                    size: *size,
                    side: *side,
                };
                fast.on_event(ts);
                slow.on_event(ts);
                fast.on_trade(ts, &t);
                slow.on_trade(ts, &t);
            }
            Op::Book {
                step,
                spread,
                gap,
                bids,
                asks,
                sizes,
                tick,
            } => {
                center = (center + step).max(10);
                let d = build(center, *spread, *gap, *bids, *asks, sizes, TICK);
                fast.on_book(ts, &d, *tick, &mut a);
                slow.on_book(ts, &d, *tick, &mut b);
                for i in 0..N_FEATURES {
                    prop_assert!(
                        same(a[i], b[i]),
                        "op {n} ts {ts}: {} incremental {} naive {}",
                        SCHEMA[i].name,
                        a[i],
                        b[i]
                    );
                }
            }
            Op::Reset => {
                if resets {
                    fast.reset();
                    slow.reset();
                }
            }
        }
    }
    let (fc, sc) = (fast.counts(), slow.counts());
    prop_assert_eq!(fc.window_overflow, 0);
    prop_assert_eq!(fc, sc);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// Random streams with gaps over 60 s, regressions and same-stamp bursts.
    #[test]
    fn incremental_matches_naive(
        start in prop_oneof![Just(0u64), 0u64..5 * S, Just(1_700_000_000 * S)],
        center in prop_oneof![Just(40i64), Just(4_000), Just(400_000)],
        default_tick in prop::sample::select(vec![None, Some(TICK)]),
        steps in prop::collection::vec((time_step(), op()), 1..400),
    ) {
        run_stream(start, center, default_tick, &steps, true)?;
    }

    /// Mostly quiet: every window empties between bursts.
    #[test]
    fn incremental_matches_naive_after_quiet_periods(
        steps in prop::collection::vec(
            (prop_oneof![3 => Just(0i64), 1 => (59i64..130).prop_map(|x| x * S as i64 / 2)], op()),
            1..200,
        ),
    ) {
        run_stream(1_700_000_000 * S, 4_000, Some(TICK), &steps, false)?;
    }
}

#[test]
fn non_positive_mid_is_not_recorded() {
    // Spread instruments can trade at negative prices: the mid is reported, ratios to it are not.
    let mut st = state();
    book(&mut st, 0, &depth(&[(1.0, 1)], &[(2.0, 1)]));
    let out = book(&mut st, 2 * S, &depth(&[(-1.0, 1)], &[(0.5, 3)]));
    assert_eq!(out[MID], -0.25);
    assert_eq!(out[SPREAD_TICKS], 6.0);
    assert!(out[SPREAD_BPS].is_nan());
    assert!(out[LOG_RETURN_1S].is_nan());
    assert_eq!(out[RV_1S], 0.0);
    assert_close(out[MICROPRICE], (-3.0 + 0.5) / 4.0);
    // Back to a positive mid: the return is against the last recorded one (1.5).
    let out = book(&mut st, 3 * S, &depth(&[(2.0, 1)], &[(3.0, 1)]));
    assert_close(out[LOG_RETURN_1S], (2.5f64 / 1.5).ln());
    assert_close(out[RV_10S], (2.5f64 / 1.5).ln().powi(2));
}

#[test]
fn ring_memory_is_as_documented() {
    // 8 (records) + 24 (trades) + 8 (OFI) + 48 (mids), as the module docs say: 5.5 MiB.
    assert_eq!(FeatureState::ring_bytes(1 << 16), 88 << 16);
    assert_eq!(FeatureState::ring_bytes(1 << 16), 5_767_168);
    // Rounded up to a power of two.
    assert_eq!(
        FeatureState::ring_bytes(1000),
        FeatureState::ring_bytes(1024)
    );
}
