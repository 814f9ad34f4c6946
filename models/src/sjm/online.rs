//! Online inference: the forward recursion one row at a time, fixed-size state, no allocation.

use super::{MAX_FEATURES, MAX_STATES, SjmModel, SjmStep};

/// Per-instrument online state: the normalised values `V_{t−1}` (minimum zero) of the forward
/// recursion and the last label. Fixed size (`Copy`, no heap), made by
/// [`SjmModel::new_online`]; only meaningful with the model that made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SjmOnline {
    v: [f64; MAX_STATES],
    n_states: u8,
    label: u8,
    started: bool,
    steps: u64,
}

impl SjmOnline {
    fn new(n_states: usize) -> Self {
        Self {
            v: [0.0; MAX_STATES],
            n_states: n_states as u8,
            label: SjmStep::NO_LABEL,
            started: false,
            steps: 0,
        }
    }

    /// Forgets the history: the next valid row starts a new sequence.
    pub fn reset(&mut self) {
        *self = Self::new(self.n_states as usize);
    }

    /// The last valid label, `None` before the first valid row.
    pub fn label(&self) -> Option<u8> {
        self.started.then_some(self.label)
    }

    /// Valid rows consumed since creation or the last reset.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The normalised values `V_t(k) − min_j V_t(j)` after the last valid row (all zero before
    /// the first), one per state.
    pub fn values(&self) -> &[f64] {
        &self.v[..self.n_states as usize]
    }

    fn invalid(&self) -> SjmStep {
        SjmStep {
            label: self.label,
            confidence: 0.0,
            valid: false,
        }
    }
}

impl SjmModel {
    /// A fresh online state for one instrument.
    pub fn new_online(&self) -> SjmOnline {
        SjmOnline::new(self.n_states)
    }

    /// Consumes one row `x` (raw values, model feature order) and returns the online label and
    /// its confidence (module docs). O(K·F), no allocation, no panics. A row of the wrong
    /// length, with a NaN or infinity, or so extreme that a distance overflows, leaves `state`
    /// untouched and returns `valid = false`.
    #[inline]
    pub fn step(&self, state: &mut SjmOnline, x: &[f64]) -> SjmStep {
        let (k, f) = (self.n_states, self.n_features);
        if x.len() != f || usize::from(state.n_states) != k {
            return state.invalid();
        }
        let mut z = [0.0f64; MAX_FEATURES];
        for (((zj, &xj), &m), &s) in z.iter_mut().zip(x).zip(&self.mean).zip(&self.std) {
            *zj = (xj - m) / s;
        }
        let z = &z[..f];
        let mut loss = [0.0f64; MAX_STATES];
        let mut total = 0.0;
        for (l, centre) in loss.iter_mut().zip(self.centres.chunks_exact(f)) {
            let mut d = 0.0;
            for (&zj, &c) in z.iter().zip(centre) {
                let e = zj - c;
                d += e * e;
            }
            *l = 0.5 * d;
            total += d;
        }
        // NaN and infinity both make the sum non-finite (every term is ≥ 0 or NaN).
        if !total.is_finite() {
            return state.invalid();
        }
        let v = &mut state.v[..k];
        if state.started {
            // V_{t−1} has minimum 0, so min_j V_{t−1}(j) + λ is λ.
            let lambda = self.jump_penalty;
            for (vs, &l) in v.iter_mut().zip(&loss) {
                *vs = l + vs.min(lambda);
            }
        } else {
            v.copy_from_slice(&loss[..k]);
        }
        let best = super::fit::argmin(v);
        let m = v[best];
        let mut sum = 0.0;
        for vs in v.iter_mut() {
            *vs -= m;
            sum += (-*vs).exp();
        }
        state.started = true;
        state.label = best as u8;
        state.steps += 1;
        SjmStep {
            label: best as u8,
            confidence: 1.0 / sum,
            valid: true,
        }
    }
}
