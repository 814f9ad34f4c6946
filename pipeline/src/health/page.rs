//! The health rollup as fixed words (the shared-memory health page's payload), as JSON (the
//! `/health` body and `tickpipe health`), and as Prometheus text (`/metrics`).
//!
//! ```text
//! word  bits     field
//!    0  0..16    format version (1)
//!       16..24   features (24)
//!       24..32   stages (5)
//!    1           tick (rollup sequence)
//!    2           unix_ns of the rollup
//!    3           uptime_ns
//!    4  0..8     status            (0 OK, 1 DEGRADED, 2 CRITICAL)
//!       8..16    alert             (0 none, 1 info, 2 warning, 3 critical)
//!       16..24   freshness         (0 Fresh, 1 Recent, 2 OLD, 3 STALE)
//!       24..32   kill              (0 released, 1 engaged)
//!       32..40   market_data status
//!       40..48   features status
//!       48..56   pipeline status
//!       56..64   models status
//!    5           kill reasons (bits, see `kill_reason`)
//!    6           kill since (unix ns; 0 released)
//!    7           data age ns (u64::MAX: none)
//!    8           writer heartbeat age ns (u64::MAX: unknown)
//!    9           feature vectors (cumulative)
//!   10           signals (cumulative)
//!   11           frames lost at ingest (laps, undecodable) in the window
//!   12           main-path drops in the window
//!   13           slow-lane drops and conflations in the window
//!   14           link stalls in the window
//!   15  0..16    fullest link, per mille;  16..64 reserved
//!   16           warnings so far
//!   17           kill-switch engagements so far
//!   18           window ns
//!   19           reserved
//!   20..44       per feature: score (0..8), status (8..16), zero rate ‱ (16..32),
//!                NaN rate ‱ (32..48), current zero run saturated at 65535 (48..64)
//!   44..54       per stage: window p99 ns, budget ns
//!   54..56       end to end: window p99 ns, budget ns
//! ```

use serde_json::{Value, json};

use super::{
    AlertLevel, FeatureHealth, FeatureStatus, Freshness, HealthSnapshot, N_STAGES, StageHealth,
    Status, kill_reason,
};
use crate::config::STAGES;
use crate::features::{N_FEATURES, SCHEMA};

/// Format version of the payload.
pub const FORMAT_VERSION: u64 = 1;
const FEATURES_AT: usize = 20;
const STAGES_AT: usize = FEATURES_AT + N_FEATURES;
const E2E_AT: usize = STAGES_AT + 2 * N_STAGES;
/// Payload words of the health page.
pub const PAGE_WORDS: usize = E2E_AT + 2;

/// A payload that is not a health rollup this build understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageFormatError {
    /// Wrong number of words.
    #[error("health page payload has {0} words, expected {PAGE_WORDS}")]
    Length(usize),
    /// Another format version or shape.
    #[error(
        "health page format {version} with {features} features and {stages} stages; this build reads format {FORMAT_VERSION} with {N_FEATURES} features and {N_STAGES} stages"
    )]
    Version {
        /// Version found.
        version: u64,
        /// Features found.
        features: u64,
        /// Stages found.
        stages: u64,
    },
    /// A byte no writer stores.
    #[error("health page field {0} holds a value no writer stores")]
    Value(&'static str),
}

fn rate_bp(r: f64) -> u64 {
    (r.clamp(0.0, 1.0) * 10_000.0).round() as u64
}

/// Writes `s` into `out` (`PAGE_WORDS` words).
///
/// # Errors
/// `out` of the wrong length.
pub fn encode(s: &HealthSnapshot, out: &mut [u64]) -> Result<(), PageFormatError> {
    if out.len() != PAGE_WORDS {
        return Err(PageFormatError::Length(out.len()));
    }
    out[0] = FORMAT_VERSION | (N_FEATURES as u64) << 16 | (N_STAGES as u64) << 24;
    out[1] = s.tick;
    out[2] = s.unix_ns;
    out[3] = s.uptime_ns;
    out[4] = u64::from(s.status.as_u8())
        | u64::from(s.alert.as_u8()) << 8
        | u64::from(s.freshness.as_u8()) << 16
        | u64::from(s.kill) << 24
        | u64::from(s.market_data.as_u8()) << 32
        | u64::from(s.features_status.as_u8()) << 40
        | u64::from(s.pipeline.as_u8()) << 48
        | u64::from(s.models.as_u8()) << 56;
    out[5] = u64::from(s.kill_reasons);
    out[6] = s.kill_since_unix_ns;
    out[7] = s.data_age_ns;
    out[8] = s.heartbeat_age_ns;
    out[9] = s.vectors;
    out[10] = s.signals;
    out[11] = s.missed_window;
    out[12] = s.dropped_window;
    out[13] = s.slow_lane_thinned_window;
    out[14] = s.stalls_window;
    out[15] = u64::from(s.max_occupancy_permille);
    out[16] = s.warnings_total;
    out[17] = s.kills_total;
    out[18] = s.window_ns;
    out[19] = 0;
    for (i, f) in s.features.iter().enumerate() {
        out[FEATURES_AT + i] = u64::from(f.score)
            | u64::from(f.status.as_u8()) << 8
            | rate_bp(f.zero_rate) << 16
            | rate_bp(f.nan_rate) << 32
            | u64::from(f.consecutive_zeros.min(65_535)) << 48;
    }
    for (i, st) in s.stages.iter().enumerate() {
        out[STAGES_AT + 2 * i] = st.p99_ns;
        out[STAGES_AT + 2 * i + 1] = st.budget_ns;
    }
    out[E2E_AT] = s.e2e.p99_ns;
    out[E2E_AT + 1] = s.e2e.budget_ns;
    Ok(())
}

fn byte(w: u64, shift: u32) -> u8 {
    (w >> shift) as u8
}

/// Reads a rollup back from page words. Per-feature sample counts are not on the page (0).
///
/// # Errors
/// The wrong length, format or a value no writer stores.
pub fn decode(w: &[u64]) -> Result<HealthSnapshot, PageFormatError> {
    if w.len() != PAGE_WORDS {
        return Err(PageFormatError::Length(w.len()));
    }
    let (version, features, stages) = (w[0] & 0xFFFF, (w[0] >> 16) & 0xFF, (w[0] >> 24) & 0xFF);
    if version != FORMAT_VERSION || features != N_FEATURES as u64 || stages != N_STAGES as u64 {
        return Err(PageFormatError::Version {
            version,
            features,
            stages,
        });
    }
    let st = |shift, name| Status::from_u8(byte(w[4], shift)).ok_or(PageFormatError::Value(name));
    let mut s = HealthSnapshot {
        tick: w[1],
        unix_ns: w[2],
        uptime_ns: w[3],
        status: st(0, "status")?,
        alert: AlertLevel::from_u8(byte(w[4], 8)).ok_or(PageFormatError::Value("alert"))?,
        freshness: Freshness::from_u8(byte(w[4], 16)).ok_or(PageFormatError::Value("freshness"))?,
        kill: match byte(w[4], 24) {
            0 => false,
            1 => true,
            _ => return Err(PageFormatError::Value("kill")),
        },
        market_data: st(32, "market_data")?,
        features_status: st(40, "features")?,
        pipeline: st(48, "pipeline")?,
        models: st(56, "models")?,
        kill_reasons: w[5] as u32,
        kill_since_unix_ns: w[6],
        data_age_ns: w[7],
        heartbeat_age_ns: w[8],
        vectors: w[9],
        signals: w[10],
        missed_window: w[11],
        dropped_window: w[12],
        slow_lane_thinned_window: w[13],
        stalls_window: w[14],
        max_occupancy_permille: w[15] as u16,
        warnings_total: w[16],
        kills_total: w[17],
        window_ns: w[18],
        ..HealthSnapshot::default()
    };
    for i in 0..N_FEATURES {
        let x = w[FEATURES_AT + i];
        s.features[i] = FeatureHealth {
            score: byte(x, 0),
            status: FeatureStatus::from_u8(byte(x, 8))
                .ok_or(PageFormatError::Value("feature status"))?,
            zero_rate: ((x >> 16) & 0xFFFF) as f64 / 10_000.0,
            nan_rate: ((x >> 32) & 0xFFFF) as f64 / 10_000.0,
            consecutive_zeros: (x >> 48) as u32,
            samples: 0,
        };
    }
    for i in 0..N_STAGES {
        s.stages[i] = StageHealth {
            p99_ns: w[STAGES_AT + 2 * i],
            budget_ns: w[STAGES_AT + 2 * i + 1],
        };
    }
    s.e2e = StageHealth {
        p99_ns: w[E2E_AT],
        budget_ns: w[E2E_AT + 1],
    };
    Ok(s)
}

fn ns_ms(ns: u64) -> Value {
    if ns == u64::MAX {
        Value::Null
    } else {
        json!(ns as f64 / 1e6)
    }
}

/// The rollup as JSON: status, components, data age, uptime, per-feature quality, stages.
pub fn to_json(s: &HealthSnapshot) -> Value {
    let features: serde_json::Map<String, Value> = SCHEMA
        .iter()
        .zip(&s.features)
        .map(|(spec, f)| {
            (
                spec.name.to_string(),
                json!({
                    "score": f.score,
                    "status": f.status,
                    "zero_rate": f.zero_rate,
                    "nan_rate": f.nan_rate,
                    "consecutive_zeros": f.consecutive_zeros,
                }),
            )
        })
        .collect();
    let budget = |st: &StageHealth| {
        json!({
            "p99_us": st.p99_ns as f64 / 1e3,
            "budget_us": (st.budget_ns > 0).then(|| st.budget_ns as f64 / 1e3),
            "within_budget": st.budget_ns == 0 || st.p99_ns <= st.budget_ns,
        })
    };
    let stages: serde_json::Map<String, Value> = STAGES
        .iter()
        .zip(&s.stages)
        .map(|(n, st)| (n.to_string(), budget(st)))
        .collect();
    json!({
        "status": s.status,
        "alert": s.alert,
        "timestamp_unix_ns": s.unix_ns,
        "uptime_seconds": s.uptime_ns as f64 / 1e9,
        "kill_switch": {
            "engaged": s.kill,
            "reasons": kill_reason::names(s.kill_reasons),
            "since_unix_ns": (s.kill_since_unix_ns > 0).then_some(s.kill_since_unix_ns),
        },
        "data": {
            "freshness": s.freshness,
            "age_ms": ns_ms(s.data_age_ns),
            "writer_heartbeat_age_ms": ns_ms(s.heartbeat_age_ns),
        },
        "components": {
            "market_data": s.market_data,
            "features": s.features_status,
            "pipeline": s.pipeline,
            "models": s.models,
        },
        "features": features,
        "stages": stages,
        "end_to_end": budget(&s.e2e),
        "counters": {
            "feature_vectors": s.vectors,
            "signals": s.signals,
            "missed_in_window": s.missed_window,
            "dropped_in_window": s.dropped_window,
            "slow_lane_thinned_in_window": s.slow_lane_thinned_window,
            "stalls_in_window": s.stalls_window,
            "max_link_occupancy": s.max_occupancy_permille as f64 / 1000.0,
            "warnings_total": s.warnings_total,
            "kill_switch_engagements_total": s.kills_total,
        },
        "window_seconds": s.window_ns as f64 / 1e9,
        "tick": s.tick,
    })
}

/// The rollup in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus(s: &HealthSnapshot, out: &mut String) {
    use std::fmt::Write;
    let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    metric(
        "tickpipe_health_status",
        "gauge",
        "Overall status: 0 OK, 1 DEGRADED, 2 CRITICAL.",
        &one(f64::from(s.status.as_u8())),
    );
    metric(
        "tickpipe_alert_level",
        "gauge",
        "Highest active alert: 0 none, 1 info, 2 warning, 3 critical.",
        &one(f64::from(s.alert.as_u8())),
    );
    metric(
        "tickpipe_kill_switch_engaged",
        "gauge",
        "1 while the kill switch is engaged.",
        &one(f64::from(u8::from(s.kill))),
    );
    metric(
        "tickpipe_data_age_seconds",
        "gauge",
        "Age of the newest market data (NaN: none seen).",
        &one(if s.data_age_ns == u64::MAX {
            f64::NAN
        } else {
            s.data_age_ns as f64 / 1e9
        }),
    );
    let comps = [
        ("market_data", s.market_data),
        ("features", s.features_status),
        ("pipeline", s.pipeline),
        ("models", s.models),
    ];
    metric(
        "tickpipe_component_status",
        "gauge",
        "Component status: 0 OK, 1 DEGRADED, 2 CRITICAL.",
        &comps
            .iter()
            .map(|(n, st)| (format!("component=\"{n}\""), f64::from(st.as_u8())))
            .collect::<Vec<_>>(),
    );
    metric(
        "tickpipe_feature_health_score",
        "gauge",
        "Feature health score over the window (0-100).",
        &SCHEMA
            .iter()
            .zip(&s.features)
            .map(|(spec, f)| (format!("feature=\"{}\"", spec.name), f64::from(f.score)))
            .collect::<Vec<_>>(),
    );
    metric(
        "tickpipe_stage_latency_p99_seconds",
        "gauge",
        "Worst per-interval p99 service time in the window.",
        &STAGES
            .iter()
            .zip(&s.stages)
            .map(|(n, st)| (format!("stage=\"{n}\""), st.p99_ns as f64 / 1e9))
            .collect::<Vec<_>>(),
    );
    metric(
        "tickpipe_end_to_end_latency_p99_seconds",
        "gauge",
        "Worst per-interval p99 from market-data publish to signal in the window.",
        &one(s.e2e.p99_ns as f64 / 1e9),
    );
    for (name, help, v) in [
        (
            "tickpipe_feature_vectors_total",
            "Feature vectors counted by the health stage.",
            s.vectors,
        ),
        ("tickpipe_signals_total", "Signals published.", s.signals),
        (
            "tickpipe_warnings_total",
            "WARNING notifications.",
            s.warnings_total,
        ),
        (
            "tickpipe_kill_switch_engagements_total",
            "Kill-switch engagements.",
            s.kills_total,
        ),
    ] {
        metric(name, "counter", help, &one(v as f64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HealthSnapshot {
        let mut s = HealthSnapshot {
            tick: 7,
            unix_ns: 1_700_000_000_000_000_000,
            uptime_ns: 12_345,
            status: Status::Critical,
            alert: AlertLevel::Critical,
            kill: true,
            kill_reasons: kill_reason::NAN_STORM | kill_reason::MANUAL,
            kill_since_unix_ns: 99,
            freshness: Freshness::Old,
            data_age_ns: 3_000_000_000,
            heartbeat_age_ns: u64::MAX,
            market_data: Status::Degraded,
            features_status: Status::Critical,
            pipeline: Status::Ok,
            models: Status::Degraded,
            vectors: 10,
            signals: 9,
            missed_window: 1,
            dropped_window: 2,
            slow_lane_thinned_window: 3,
            stalls_window: 4,
            max_occupancy_permille: 512,
            warnings_total: 5,
            kills_total: 6,
            window_ns: 10_000_000_000,
            ..HealthSnapshot::default()
        };
        s.features[3] = FeatureHealth {
            score: 45,
            status: FeatureStatus::Critical,
            zero_rate: 0.5123,
            nan_rate: 0.02,
            consecutive_zeros: 70_000,
            samples: 0,
        };
        s.stages[2] = StageHealth {
            p99_ns: 1234,
            budget_ns: 1000,
        };
        s.e2e = StageHealth {
            p99_ns: 5,
            budget_ns: 6,
        };
        s
    }

    #[test]
    fn words_round_trip() {
        let s = sample();
        let mut w = vec![0; PAGE_WORDS];
        encode(&s, &mut w).unwrap();
        let mut back = decode(&w).unwrap();
        assert_eq!(back.features[3].consecutive_zeros, 65_535);
        back.features[3].consecutive_zeros = 70_000;
        assert_eq!(back, s);
    }

    #[test]
    fn bad_payloads_are_refused() {
        let mut w = vec![0; PAGE_WORDS];
        encode(&sample(), &mut w).unwrap();
        assert_eq!(
            decode(&w[1..]),
            Err(PageFormatError::Length(PAGE_WORDS - 1))
        );
        let mut v = w.clone();
        v[0] += 1;
        assert!(matches!(decode(&v), Err(PageFormatError::Version { .. })));
        let mut v = w.clone();
        v[4] = (v[4] & !0xFF) | 9;
        assert_eq!(decode(&v), Err(PageFormatError::Value("status")));
        let mut v = w;
        v[FEATURES_AT] |= 0xFF << 8;
        assert_eq!(decode(&v), Err(PageFormatError::Value("feature status")));
        assert_eq!(
            encode(&sample(), &mut [0; 3]),
            Err(PageFormatError::Length(3))
        );
    }

    #[test]
    fn json_and_metrics_carry_the_rollup() {
        let s = sample();
        let j = to_json(&s);
        assert_eq!(j["status"], "CRITICAL");
        assert_eq!(j["kill_switch"]["engaged"], true);
        assert_eq!(j["kill_switch"]["reasons"], json!(["nan_storm", "manual"]));
        assert_eq!(j["data"]["freshness"], "OLD");
        assert_eq!(j["data"]["writer_heartbeat_age_ms"], Value::Null);
        assert_eq!(j["features"]["microprice"]["score"], 45);
        assert_eq!(j["features"]["microprice"]["status"], "CRITICAL");
        assert_eq!(j["stages"]["inference"]["within_budget"], false);
        assert_eq!(j["components"]["models"], "DEGRADED");
        let mut m = String::new();
        prometheus(&s, &mut m);
        assert!(m.contains("tickpipe_kill_switch_engaged 1\n"), "{m}");
        assert!(m.contains("tickpipe_feature_health_score{feature=\"microprice\"} 45\n"));
        assert!(
            m.contains("tickpipe_stage_latency_p99_seconds{stage=\"inference\"} 0.000001234\n")
        );
        assert!(m.contains("# TYPE tickpipe_signals_total counter\n"));
    }
}
