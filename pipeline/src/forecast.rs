//! The slow lane's logic, without threads: a streaming LSTM (through ONNX Runtime) fed by the
//! bar stream, one hidden/cell state per instrument.
//!
//! Inputs per bar ([`BAR_SCHEMA`]), all finite for any bar the feature stage emits:
//!
//! | name | definition |
//! |---|---|
//! | `bar_log_return` | ln(close / open) |
//! | `bar_log_range`  | ln(high / low) |
//! | `bar_log_volume` | ln(1 + volume) |
//! | `bar_log_trades` | ln(1 + trades) |
//!
//! The model names its inputs (ONNX metadata `tickpipe.features`) and is bound to this schema
//! when the lane starts. ONNX Runtime sessions are built on the thread that runs them: the lane
//! loads its model in its stage's `on_start`.

use std::path::Path;

use tickpipe_models::lstm::{LstmModel, LstmState};

use crate::PipelineError;
use crate::features::Bar;
use crate::inference::InstrumentSlots;
use crate::msg::{BarMsg, Forecast, MAX_FORECAST};

/// Names of the per-bar inputs, in order.
pub const BAR_SCHEMA: [&str; 4] = [
    "bar_log_return",
    "bar_log_range",
    "bar_log_volume",
    "bar_log_trades",
];

/// The per-bar inputs of `bar` in [`BAR_SCHEMA`] order (NaN where a price is not positive).
pub fn bar_inputs(bar: &Bar) -> [f64; 4] {
    let ln_ratio = |a: i64, b: i64| {
        if a > 0 && b > 0 {
            (a as f64 / b as f64).ln()
        } else {
            f64::NAN
        }
    };
    [
        ln_ratio(bar.close, bar.open),
        ln_ratio(bar.high, bar.low),
        (bar.volume as f64).ln_1p(),
        f64::from(bar.trades).ln_1p(),
    ]
}

/// What the slow lane did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForecastCounts {
    /// Bars received.
    pub bars: u64,
    /// Forecasts made.
    pub forecasts: u64,
    /// Bars refused (non-finite inputs, or the model failed on them).
    pub refused: u64,
    /// Bars of instruments that found no free state slot.
    pub no_slot: u64,
}

/// A streaming forecaster with per-instrument state.
#[derive(Debug)]
pub struct ForecastEngine {
    model: LstmModel,
    cols: Vec<usize>,
    slots: InstrumentSlots,
    states: Vec<LstmState>,
    x: Vec<f32>,
    out: Vec<f32>,
    counts: ForecastCounts,
}

impl ForecastEngine {
    /// Loads `path` (on the calling thread, which must be the one that runs it) with room for
    /// `max_instruments` states.
    ///
    /// # Errors
    /// No ONNX Runtime library, an unreadable or invalid model, inputs the bar schema lacks.
    pub fn load(path: &Path, max_instruments: usize) -> Result<Self, PipelineError> {
        let err = |e: &dyn std::fmt::Display| {
            PipelineError::config("models.lstm", format!("{}: {e}", path.display()))
        };
        let model = LstmModel::load(path).map_err(|e| err(&e))?;
        let cols = model.bind(&BAR_SCHEMA).map_err(|e| err(&e))?;
        let n = max_instruments.max(1);
        let states = (0..n).map(|_| model.new_state()).collect();
        let x = vec![0.0; model.n_features()];
        let out = vec![0.0; model.n_outputs()];
        Ok(Self {
            model,
            cols,
            slots: InstrumentSlots::new(n),
            states,
            x,
            out,
            counts: ForecastCounts::default(),
        })
    }

    /// One bar: advances the instrument's state and returns its forecast, or `None` when the bar
    /// was refused (counted).
    pub fn on_bar(&mut self, b: &BarMsg) -> Option<Forecast> {
        self.counts.bars += 1;
        let Some(slot) = self.slots.claim(b.instrument_id) else {
            self.counts.no_slot += 1;
            return None;
        };
        let inputs = bar_inputs(&b.bar);
        for (x, &c) in self.x.iter_mut().zip(&self.cols) {
            *x = inputs[c] as f32;
        }
        if !self.x.iter().all(|v| v.is_finite()) {
            self.counts.refused += 1;
            return None;
        }
        if self
            .model
            .step(&mut self.states[slot], &self.x, &mut self.out)
            .is_err()
        {
            self.counts.refused += 1;
            return None;
        }
        self.counts.forecasts += 1;
        let mut values = [f32::NAN; MAX_FORECAST];
        for (v, o) in values.iter_mut().zip(&self.out) {
            *v = *o;
        }
        Some(Forecast {
            instrument_id: b.instrument_id,
            enqueue_ticks: 0,
            ts_bar_end: b.bar.ts_end(),
            values,
        })
    }

    /// What the lane did so far.
    pub fn counts(&self) -> ForecastCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_inputs_follow_their_definitions() {
        let bar = Bar {
            ts_start: 0,
            interval_ns: 1_000_000_000,
            open: 100_000_000_000,
            high: 102_000_000_000,
            low: 99_000_000_000,
            close: 101_000_000_000,
            volume: 9,
            trades: 3,
        };
        let x = bar_inputs(&bar);
        assert!((x[0] - (1.01f64).ln()).abs() < 1e-15);
        assert!((x[1] - (102.0f64 / 99.0).ln()).abs() < 1e-15);
        assert_eq!(x[2], 10f64.ln());
        assert_eq!(x[3], 4f64.ln());
        let bad = Bar { low: 0, ..bar };
        assert!(bar_inputs(&bad)[1].is_nan());
    }
}
