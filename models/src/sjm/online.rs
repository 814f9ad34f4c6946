//! Online inference: the forward recursion one row at a time, fixed-size state, no allocation.

use super::{MAX_STATES, SjmModel, SjmStep};

/// `e^{−v}` for `v ≥ 0`, inlined and branch-free for the confidence: Cody–Waite reduction
/// `−v = k·ln 2 + r` with `|r| ≤ ln 2 / 2`, then the Taylor polynomial of `e^r` to degree 12
/// (truncation error below 2e-16 relative) evaluated in Estrin's scheme. Within a few ulps of
/// the correctly rounded value; the same bits on every platform (no libm, no fused operations).
/// Arguments above 708 are clamped (the result, about 3e-308, is negligible next to the 1 it
/// is added to).
#[inline(always)]
pub(crate) fn exp_neg(v: f64) -> f64 {
    // ln 2 split as in fdlibm: the high part has trailing zero bits, so k · LN2_HI is exact.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    // 1.5 · 2^52: adding and subtracting it rounds to the nearest integer.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    const C: [f64; 13] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
    ];
    let y = -v.min(708.0);
    let t = y * std::f64::consts::LOG2_E + SHIFT;
    // The integer k sits in the low bits of t's significand.
    let k = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i64;
    let kf = t - SHIFT;
    let r = (y - kf * LN2_HI) - kf * LN2_LO;
    let r2 = r * r;
    let r4 = r2 * r2;
    let a = (C[0] + C[1] * r) + r2 * (C[2] + C[3] * r);
    let b = (C[4] + C[5] * r) + r2 * (C[6] + C[7] * r);
    let c = (C[8] + C[9] * r) + r2 * (C[10] + C[11] * r);
    let p = a + r4 * (b + r4 * (c + r4 * C[12]));
    // k is in [−1022, 0]: 2^k is a normal number built from its exponent bits.
    let scale = f64::from_bits(((k + 1023) as u64) << 52);
    p * scale
}

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
    /// length, with a NaN or infinity, or so extreme that the values would overflow, leaves
    /// `state` untouched and returns `valid = false`.
    ///
    #[inline]
    pub fn step(&self, state: &mut SjmOnline, x: &[f64]) -> SjmStep {
        if x.len() != self.n_features || usize::from(state.n_states) != self.n_states {
            return state.invalid();
        }
        // The state count is fixed per model; one monomorphised body per count lets the
        // compiler keep the per-state accumulators in registers.
        match self.n_states {
            2 => self.step_k::<2>(state, x),
            3 => self.step_k::<3>(state, x),
            4 => self.step_k::<4>(state, x),
            5 => self.step_k::<5>(state, x),
            6 => self.step_k::<6>(state, x),
            7 => self.step_k::<7>(state, x),
            8 => self.step_k::<8>(state, x),
            _ => state.invalid(),
        }
    }

    #[inline]
    fn step_k<const K: usize>(&self, state: &mut SjmOnline, x: &[f64]) -> SjmStep {
        // ℓ_t(k) = ½‖z_t‖² − z_t·μ_k + ½‖μ_k‖². The first term is the same for every state and
        // cancels when V_t is renormalised, so the step only needs b_k − Σ_j (x_j − m_j)·a_jk
        // with a_jk = μ_kj / std_j and b_k = ½‖μ_k‖²: one multiply-add per feature and state.
        let mut dot = [0.0f64; K];
        for (&xj, row) in x.iter().zip(&self.online_rows) {
            let u = xj - row[0];
            for (ds, &ak) in dot.iter_mut().zip(&row[1..=K]) {
                *ds += u * ak;
            }
        }
        let mut v = [0.0f64; K];
        if state.started {
            // V_{t−1} has minimum 0, so min_j V_{t−1}(j) + λ is λ.
            let lambda = self.jump_penalty;
            for (((vs, &prev), &b), &ds) in v.iter_mut().zip(&state.v).zip(&self.online_b).zip(&dot)
            {
                *vs = (b - ds) + prev.min(lambda);
            }
        } else {
            for ((vs, &b), &ds) in v.iter_mut().zip(&self.online_b).zip(&dot) {
                *vs = b - ds;
            }
        }
        let best = super::fit::argmin(&v);
        let m = v[best];
        for vs in v.iter_mut() {
            *vs -= m;
        }
        // A NaN or infinity in the row, or values that overflow, make the sum non-finite (all
        // terms are ≥ 0 or NaN); the state is then left as it was.
        if !v.iter().sum::<f64>().is_finite() {
            return state.invalid();
        }
        let mut sum = 1.0;
        for (s, &vs) in v.iter().enumerate() {
            // e^{−38} is below half an ulp of 1 and the sum starts at 1, so skipping such
            // terms gives the same bits as adding them.
            if s != best && vs < 38.0 {
                sum += exp_neg(vs);
            }
        }
        state.v[..K].copy_from_slice(&v);
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

#[cfg(test)]
mod tests {
    use super::exp_neg;

    #[test]
    fn exp_neg_matches_libm() {
        assert_eq!(exp_neg(0.0), 1.0);
        let mut worst = 0.0f64;
        let mut v = 0.0f64;
        while v < 708.0 {
            let want = (-v).exp();
            let rel = ((exp_neg(v) - want) / want).abs();
            worst = worst.max(rel);
            v += 0.000_731;
        }
        assert!(worst < 1e-15, "largest relative error {worst:e}");
        assert!(exp_neg(708.0) < 1e-300 && exp_neg(1e300) < 1e-300);
        assert!(exp_neg(1e300) >= 0.0);
    }
}
