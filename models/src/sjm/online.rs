//! Online inference: the forward recursion one row at a time, fixed-size state, no allocation.

use super::{MAX_STATES, SjmModel, SjmStep};

/// `2^(j/16)`, `j = 0..16`, each the double nearest the exact value.
const EXP2_SIXTEENTHS: [f64; 16] = [
    f64::from_bits(0x3FF0_0000_0000_0000),
    f64::from_bits(0x3FF0_B558_6CF9_890F),
    f64::from_bits(0x3FF1_72B8_3C7D_517B),
    f64::from_bits(0x3FF2_387A_6E75_6238),
    f64::from_bits(0x3FF3_06FE_0A31_B715),
    f64::from_bits(0x3FF3_DEA6_4C12_3422),
    f64::from_bits(0x3FF4_BFDA_D536_2A27),
    f64::from_bits(0x3FF5_AB07_DD48_5429),
    f64::from_bits(0x3FF6_A09E_667F_3BCD),
    f64::from_bits(0x3FF7_A114_73EB_0187),
    f64::from_bits(0x3FF8_ACE5_422A_A0DB),
    f64::from_bits(0x3FF9_C491_82A3_F090),
    f64::from_bits(0x3FFA_E89F_995A_D3AD),
    f64::from_bits(0x3FFC_199B_DD85_529C),
    f64::from_bits(0x3FFD_5818_DCFB_A487),
    f64::from_bits(0x3FFE_A4AF_A2A4_90DA),
];

/// `e^{−v}` for `v ≥ 0`, inlined and branch-free for the confidence: `−v = (16k + j)·ln2/16 + r`
/// with `|r| ≤ ln2/32` (Cody–Waite), then `2^k · 2^(j/16) · p(r)` with `p` the Taylor
/// polynomial of `e^r` to degree 6 (truncation error below 5e-16 relative). Within a few ulps
/// of the correctly rounded value and the same bits on every platform (no libm, no fused
/// operations). Arguments above 708 are clamped (the result, about 3e-308, is negligible next
/// to the 1 it is added to).
#[inline(always)]
pub(crate) fn exp_neg(v: f64) -> f64 {
    // ln 2 / 16 split as in fdlibm: the high part has 21 trailing zero bits, so n · HI is exact
    // for the |n| < 2^14 that occur.
    const LN2_16_HI: f64 = f64::from_bits(0x3FA6_2E42_FEE0_0000);
    const LN2_16_LO: f64 = f64::from_bits(0x3DAA_39EF_3579_3C76);
    // 1.5 · 2^52: adding and subtracting it rounds to the nearest integer.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let y = -super::fit::fmin(v, 708.0);
    let t = y * (16.0 * std::f64::consts::LOG2_E) + SHIFT;
    // The integer n sits in the low bits of t's significand.
    let n = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i64;
    let nf = t - SHIFT;
    let r = (y - nf * LN2_16_HI) - nf * LN2_16_LO;
    let r2 = r * r;
    let p = (1.0 + r)
        + r2 * ((0.5 + r * (1.0 / 6.0))
            + r2 * ((1.0 / 24.0 + r * (1.0 / 120.0)) + r2 * (1.0 / 720.0)));
    // n = 16k + j with j in 0..16 and k = ⌊n/16⌋ in [−1022, 0]: 2^k is a normal number built
    // from its exponent bits.
    let j = (n & 15) as usize;
    let k = n >> 4;
    let scale = f64::from_bits(((k + 1023) as u64) << 52);
    p * EXP2_SIXTEENTHS[j] * scale
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
                *vs = (b - ds) + super::fit::fmin(prev, lambda);
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
