//! The regime stability filter: defaults, config validation, one test per knob (each fails if
//! the knob is ignored), the hold reasons, the sliding hour, and a run behind a fitted model.

use tickpipe_models::sjm::{SjmFitConfig, SjmModel, SjmParts, SjmStep};
use tickpipe_models::stability::{
    HOUR_NS, MAX_TRANSITIONS_PER_HOUR, StabilityConfig, StabilityError, StabilityFilter, Stable,
};

const MINUTE_NS: u64 = 60_000_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

/// K = 3, F = 4, identity scaler. State 2 never varied in feature 3 (variance 0).
fn model() -> SjmModel {
    SjmModel::from_parts(SjmParts {
        feature_names: (0..4).map(|j| format!("f{j}")).collect(),
        jump_penalty: 5.0,
        scaler_mean: vec![0.0; 4],
        scaler_std: vec![1.0; 4],
        centres: vec![
            0.0, 0.0, 0.0, 0.0, //
            3.0, 0.0, 0.0, 0.0, //
            0.0, 3.0, 0.0, 0.0,
        ],
        regime_variances: vec![
            1.0, 1.0, 1.0, 1.0, //
            1.0, 1.0, 1.0, 1.0, //
            1.0, 1.0, 1.0, 0.0,
        ],
    })
    .expect("model")
}

/// A row near the centre of state `k` with no exactly-zero feature.
fn near(k: usize) -> [f64; 4] {
    let m = model();
    let c = m.centre(k);
    [c[0] + 0.1, c[1] + 0.1, c[2] + 0.1, c[3] + 0.01]
}

fn step(label: u8, confidence: f64) -> SjmStep {
    SjmStep {
        label,
        confidence,
        valid: true,
    }
}

fn filter(cfg: &StabilityConfig) -> StabilityFilter {
    StabilityFilter::new(cfg, &model()).expect("filter")
}

/// A filter that has accepted regime 0 at `T0`.
fn started(cfg: &StabilityConfig) -> StabilityFilter {
    let mut f = filter(cfg);
    let out = f.update(T0, &step(0, 1.0), &near(0));
    assert_eq!(
        out,
        Stable {
            regime: 0,
            changed: true,
            flags: 0
        }
    );
    f
}

#[test]
fn defaults_are_the_documented_values() {
    let d = StabilityConfig::default();
    assert_eq!(d.min_confidence, 0.70);
    assert_eq!(d.max_transitions_per_hour, 10);
    assert_eq!(d.feature_zero_threshold, 0.5);
    assert_eq!(d.covariance_regularization, 1e-4);
    assert_eq!(d.max_regime_distance, 6.0);
    d.validate().expect("defaults validate");
}

#[test]
fn validation_names_the_knob_out_of_range() {
    let d = StabilityConfig::default();
    let cases: Vec<(StabilityConfig, &str)> = vec![
        (
            StabilityConfig {
                min_confidence: -0.01,
                ..d
            },
            "min_confidence",
        ),
        (
            StabilityConfig {
                min_confidence: 1.01,
                ..d
            },
            "min_confidence",
        ),
        (
            StabilityConfig {
                min_confidence: f64::NAN,
                ..d
            },
            "min_confidence",
        ),
        (
            StabilityConfig {
                max_transitions_per_hour: 0,
                ..d
            },
            "max_transitions_per_hour",
        ),
        (
            StabilityConfig {
                max_transitions_per_hour: MAX_TRANSITIONS_PER_HOUR + 1,
                ..d
            },
            "max_transitions_per_hour",
        ),
        (
            StabilityConfig {
                feature_zero_threshold: -0.1,
                ..d
            },
            "feature_zero_threshold",
        ),
        (
            StabilityConfig {
                feature_zero_threshold: 1.5,
                ..d
            },
            "feature_zero_threshold",
        ),
        (
            StabilityConfig {
                feature_zero_threshold: f64::NAN,
                ..d
            },
            "feature_zero_threshold",
        ),
        (
            StabilityConfig {
                covariance_regularization: 0.0,
                ..d
            },
            "covariance_regularization",
        ),
        (
            StabilityConfig {
                covariance_regularization: -1e-4,
                ..d
            },
            "covariance_regularization",
        ),
        (
            StabilityConfig {
                covariance_regularization: f64::INFINITY,
                ..d
            },
            "covariance_regularization",
        ),
        (
            StabilityConfig {
                covariance_regularization: f64::NAN,
                ..d
            },
            "covariance_regularization",
        ),
        (
            StabilityConfig {
                max_regime_distance: 0.0,
                ..d
            },
            "max_regime_distance",
        ),
        (
            StabilityConfig {
                max_regime_distance: -1.0,
                ..d
            },
            "max_regime_distance",
        ),
        (
            StabilityConfig {
                max_regime_distance: f64::NAN,
                ..d
            },
            "max_regime_distance",
        ),
    ];
    for (cfg, knob) in cases {
        let err = cfg.validate().unwrap_err();
        let StabilityError::InvalidConfig { field, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*field, knob);
        assert!(err.to_string().contains(knob));
        assert!(StabilityFilter::new(&cfg, &model()).is_err());
    }
    // The edges are allowed.
    for cfg in [
        StabilityConfig {
            min_confidence: 0.0,
            ..d
        },
        StabilityConfig {
            min_confidence: 1.0,
            ..d
        },
        StabilityConfig {
            max_transitions_per_hour: 1,
            ..d
        },
        StabilityConfig {
            max_transitions_per_hour: MAX_TRANSITIONS_PER_HOUR,
            ..d
        },
        StabilityConfig {
            feature_zero_threshold: 0.0,
            ..d
        },
        StabilityConfig {
            feature_zero_threshold: 1.0,
            ..d
        },
        StabilityConfig {
            max_regime_distance: f64::INFINITY,
            ..d
        },
    ] {
        cfg.validate().expect("edge value");
    }
}

#[test]
fn knob_min_confidence() {
    let d = StabilityConfig::default();
    let mut f = started(&d);
    let out = f.update(T0 + 1, &step(1, 0.65), &near(1));
    assert_eq!(out.regime, 0);
    assert!(!out.changed);
    assert_eq!(out.flags, Stable::LOW_CONFIDENCE);
    // At the threshold the change is accepted.
    let out = f.update(T0 + 2, &step(1, 0.70), &near(1));
    assert_eq!((out.regime, out.changed, out.flags), (1, true, 0));
    // A lower threshold accepts what the default held.
    let mut f = started(&StabilityConfig {
        min_confidence: 0.6,
        ..d
    });
    let out = f.update(T0 + 1, &step(1, 0.65), &near(1));
    assert_eq!((out.regime, out.changed), (1, true));
    // The first acceptance also needs the confidence.
    let mut f = filter(&d);
    let out = f.update(T0, &step(2, 0.5), &near(2));
    assert_eq!(out.regime, Stable::NO_REGIME);
    assert_eq!(out.regime(), None);
    assert!(out.has(Stable::LOW_CONFIDENCE));
}

/// Proposes a change every minute for `minutes` minutes (alternating 1 and 0), full confidence;
/// returns the timestamps of the accepted changes.
fn churn(f: &mut StabilityFilter, start: u64, minutes: u64) -> Vec<u64> {
    let mut accepted = Vec::new();
    for i in 1..=minutes {
        let ts = start + i * MINUTE_NS;
        let want = if f.regime() == Some(0) { 1 } else { 0 };
        let out = f.update(ts, &step(want, 1.0), &near(want as usize));
        if out.changed {
            accepted.push(ts);
        } else {
            assert_eq!(out.flags, Stable::RATE_LIMITED, "minute {i}");
        }
    }
    accepted
}

#[test]
fn knob_max_transitions_per_hour() {
    for max in [3u32, 5, 10] {
        let cfg = StabilityConfig {
            max_transitions_per_hour: max,
            ..StabilityConfig::default()
        };
        let mut f = started(&cfg);
        // 59 proposals inside the first hour after the first transition.
        let accepted = churn(&mut f, T0, 59);
        assert_eq!(accepted.len(), max as usize, "max {max}");
        assert_eq!(f.transitions(), u64::from(max));
        // The oldest transition leaves the window exactly one hour after it happened.
        let first = accepted[0];
        let want = if f.regime() == Some(0) { 1 } else { 0 };
        let out = f.update(first + HOUR_NS - 1, &step(want, 1.0), &near(want as usize));
        assert_eq!(out.flags, Stable::RATE_LIMITED);
        let out = f.update(first + HOUR_NS, &step(want, 1.0), &near(want as usize));
        assert!(out.changed, "max {max}: budget back after one hour");
        // In every sliding hour, at most `max` transitions.
        let mut all = accepted.clone();
        all.push(first + HOUR_NS);
        all.extend(churn(&mut f, first + HOUR_NS, 240));
        for (i, &t) in all.iter().enumerate() {
            let in_hour = all[i..].iter().take_while(|&&u| u < t + HOUR_NS).count();
            assert!(
                in_hour <= max as usize,
                "max {max}: {in_hour} in the hour from {t}"
            );
        }
    }
}

#[test]
fn a_clock_going_backwards_frees_no_budget() {
    let cfg = StabilityConfig {
        max_transitions_per_hour: 1,
        ..StabilityConfig::default()
    };
    let mut f = started(&cfg);
    assert!(
        f.update(T0 + 10 * MINUTE_NS, &step(1, 1.0), &near(1))
            .changed
    );
    let out = f.update(T0, &step(0, 1.0), &near(0));
    assert_eq!(out.flags, Stable::RATE_LIMITED);
    assert!(
        f.update(T0 + 70 * MINUTE_NS, &step(0, 1.0), &near(0))
            .changed
    );
}

#[test]
fn knob_feature_zero_threshold() {
    let d = StabilityConfig::default();
    // Half the features exactly zero is not *more* than half: reliable.
    let half = [3.1, 0.0, -0.0, 0.1];
    let mut f = started(&d);
    let out = f.update(T0 + 1, &step(1, 0.9), &half);
    assert_eq!((out.regime, out.changed, out.flags), (1, true, 0));
    // Three of four: unreliable, held even though everything else would accept it.
    let mut f = started(&d);
    let out = f.update(T0 + 1, &step(1, 0.9), &[3.1, 0.0, 0.0, 0.0]);
    assert_eq!(
        out,
        Stable {
            regime: 0,
            changed: false,
            flags: Stable::UNRELIABLE_INPUT
        }
    );
    // A lower threshold makes the half-zero row unreliable.
    let mut f = started(&StabilityConfig {
        feature_zero_threshold: 0.25,
        ..d
    });
    let out = f.update(T0 + 1, &step(1, 0.9), &half);
    assert_eq!(out.flags, Stable::UNRELIABLE_INPUT);
    assert_eq!(out.regime, 0);
    // 1.0 never flags, even all zeros (regime 0's centre is the origin).
    let mut f = filter(&StabilityConfig {
        feature_zero_threshold: 1.0,
        ..d
    });
    assert!(f.update(T0, &step(0, 0.9), &[0.0; 4]).changed);
}

#[test]
fn knob_covariance_regularization() {
    let d = StabilityConfig::default();
    // State 2 never varied in feature 3; a row 0.2 off in it is 0.2 / sqrt(ρ) deviations away.
    let x = [0.1, 3.1, 0.1, 0.2];
    let mut f = started(&d);
    let out = f.update(T0 + 1, &step(2, 0.95), &x);
    assert_eq!(
        out.flags,
        Stable::OFF_REGIME,
        "ridge 1e-4: RMS distance ≈ 10"
    );
    assert_eq!(out.regime, 0);
    let mut f = started(&StabilityConfig {
        covariance_regularization: 0.01,
        ..d
    });
    let out = f.update(T0 + 1, &step(2, 0.95), &x);
    assert_eq!(
        (out.regime, out.changed, out.flags),
        (2, true, 0),
        "ridge 0.01: RMS ≈ 1"
    );
}

#[test]
fn knob_max_regime_distance() {
    let d = StabilityConfig::default();
    // Twenty deviations off state 1's centre in one feature: RMS distance 10 over 4 features.
    let x = [23.0, 0.1, 0.1, 0.1];
    let mut f = started(&d);
    let out = f.update(T0 + 1, &step(1, 0.99), &x);
    assert_eq!(out.flags, Stable::OFF_REGIME);
    for max in [12.0, f64::INFINITY] {
        let mut f = started(&StabilityConfig {
            max_regime_distance: max,
            ..d
        });
        let out = f.update(T0 + 1, &step(1, 0.99), &x);
        assert_eq!((out.regime, out.changed), (1, true), "max {max}");
    }
    let mut f = started(&StabilityConfig {
        max_regime_distance: 9.0,
        ..d
    });
    assert_eq!(
        f.update(T0 + 1, &step(1, 0.99), &x).flags,
        Stable::OFF_REGIME
    );
}

#[test]
fn invalid_input_holds_and_says_so() {
    let d = StabilityConfig::default();
    let mut f = started(&d);
    let cases: Vec<(SjmStep, Vec<f64>)> = vec![
        (
            SjmStep {
                label: 1,
                confidence: 0.0,
                valid: false,
            },
            near(1).to_vec(),
        ),
        (step(1, 1.0), vec![f64::NAN, 0.1, 0.1, 0.1]),
        (step(1, 1.0), vec![3.1, f64::INFINITY, 0.1, 0.1]),
        (step(1, 1.0), vec![3.1, 0.1, 0.1]),
        (step(3, 1.0), near(1).to_vec()),
        (step(SjmStep::NO_LABEL, 1.0), near(1).to_vec()),
    ];
    for (s, x) in cases {
        let out = f.update(T0 + 5, &s, &x);
        assert_eq!(
            out,
            Stable {
                regime: 0,
                changed: false,
                flags: Stable::INVALID_INPUT
            },
            "{s:?} {x:?}"
        );
    }
    // Invalid before any acceptance: still no regime.
    let mut g = filter(&d);
    let out = g.update(T0, &step(0, 1.0), &[f64::NAN; 4]);
    assert_eq!(out.regime, Stable::NO_REGIME);
    assert!(out.has(Stable::INVALID_INPUT));
}

#[test]
fn same_label_is_no_change_and_every_hold_reason_is_reported() {
    let d = StabilityConfig {
        max_transitions_per_hour: 1,
        ..StabilityConfig::default()
    };
    let mut f = started(&d);
    // Staying in the regime with low confidence holds nothing.
    let out = f.update(T0 + 1, &step(0, 0.1), &near(0));
    assert_eq!(
        out,
        Stable {
            regime: 0,
            changed: false,
            flags: 0
        }
    );
    assert!(f.update(T0 + 2, &step(1, 1.0), &near(1)).changed);
    // Low confidence, spent budget and a far row, all at once.
    let out = f.update(T0 + 3, &step(2, 0.2), &[50.0, 50.0, 50.0, 50.0]);
    assert_eq!(
        out.flags,
        Stable::LOW_CONFIDENCE | Stable::RATE_LIMITED | Stable::OFF_REGIME
    );
    assert_eq!(out.regime, 1);
}

#[test]
fn clones_share_tables_but_not_state() {
    let d = StabilityConfig::default();
    let a = started(&d);
    let mut b = a.clone();
    assert!(b.update(T0 + 1, &step(1, 1.0), &near(1)).changed);
    assert_eq!(a.regime(), Some(0));
    assert_eq!(b.regime(), Some(1));
    b.reset();
    assert_eq!(b.regime(), None);
    assert_eq!(b.transitions(), 0);
}

/// Behind a fitted model on a noisy series: the stable regime changes less often than the raw
/// label and never faster than the budget.
#[test]
fn filters_a_fitted_models_labels() {
    let mut rows = Vec::new();
    let mut state = 0u64;
    let mut s = 0usize;
    let mut u = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..20_000 {
        if u() < 0.004 {
            s = (s + 1) % 3;
        }
        for j in 0..3 {
            let noise: f64 = (0..12).map(|_| u()).sum::<f64>() - 6.0;
            rows.push([1.0, 2.0, 3.0][s] * (j as f64 + 1.0) + 1.5 * noise);
        }
    }
    let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let (model, _) = SjmModel::fit(
        &rows,
        3,
        &names,
        &SjmFitConfig {
            n_states: 3,
            jump_penalty: 0.5,
            ..SjmFitConfig::default()
        },
    )
    .expect("fit");
    let cfg = StabilityConfig::default();
    let mut f = StabilityFilter::new(&cfg, &model).expect("filter");
    let mut st = model.new_online();
    let (mut raw_changes, mut last_raw) = (0, None);
    let mut stable_at = Vec::new();
    for (i, x) in rows.chunks_exact(3).enumerate() {
        let ts = T0 + i as u64 * 1_000_000_000; // one row a second
        let step = model.step(&mut st, x);
        if last_raw.is_some_and(|l| l != step.label) {
            raw_changes += 1;
        }
        last_raw = Some(step.label);
        let out = f.update(ts, &step, x);
        if out.changed {
            stable_at.push(ts);
        }
    }
    let stable_changes = stable_at.len() - 1; // the first is the first acceptance
    assert!(stable_changes > 0);
    assert!(
        stable_changes < raw_changes,
        "stable {stable_changes} raw {raw_changes}"
    );
    for (i, &t) in stable_at.iter().enumerate().skip(1) {
        let in_hour = stable_at[i..]
            .iter()
            .take_while(|&&u| u < t + HOUR_NS)
            .count();
        assert!(in_hour <= 10);
    }
    eprintln!("raw label changes {raw_changes}, stable regime changes {stable_changes}");
}

/// The zero rule is "fraction greater than the threshold", at every feature count and at
/// thresholds that are exact fractions of it.
#[test]
fn zero_fraction_rule_at_every_width() {
    for f in [1usize, 2, 3, 5, 7, 10, 24, 32] {
        let model = SjmModel::from_parts(SjmParts {
            feature_names: (0..f).map(|j| format!("f{j}")).collect(),
            jump_penalty: 1.0,
            scaler_mean: vec![0.0; f],
            scaler_std: vec![1.0; f],
            centres: vec![0.0; 2 * f],
            regime_variances: vec![1.0; 2 * f],
        })
        .expect("model");
        let mut thresholds: Vec<f64> = (0..=f).map(|z| z as f64 / f as f64).collect();
        thresholds.extend([0.1, 0.3, 0.5, 0.7, 0.9, 1.0 / 3.0, 2.0 / 3.0]);
        for t in thresholds {
            let cfg = StabilityConfig {
                feature_zero_threshold: t,
                max_regime_distance: f64::INFINITY,
                ..StabilityConfig::default()
            };
            for zeros in 0..=f {
                let mut filter = StabilityFilter::new(&cfg, &model).expect("filter");
                let x: Vec<f64> = (0..f).map(|j| if j < zeros { 0.0 } else { 0.5 }).collect();
                let out = filter.update(T0, &step(0, 1.0), &x);
                let want = zeros as f64 / f as f64 > t;
                assert_eq!(
                    out.has(Stable::UNRELIABLE_INPUT),
                    want,
                    "F {f} t {t} zeros {zeros}"
                );
            }
        }
    }
}
