//! The engine's output record, published into a signal ring for other processes.
//!
//! A signal is a 96-byte little-endian record, one per consistent book state (every event that
//! completes a record with DBN's `F_LAST`). It starts with a header shaped like DBN's (`length`
//! in 4-byte words, `rtype`, `publisher_id`, `instrument_id`, `ts_event`), so tools that walk
//! DBN-style framing can skip it by its length.
//!
//! ```text
//!  off  size  field            meaning
//!    0     1  length           24 (words of 4 bytes)
//!    1     1  rtype            0xE0
//!    2     2  publisher_id     of the input record
//!    4     4  instrument_id
//!    8     8  ts_event         exchange time of the input record (ns since the UNIX epoch)
//!   16     8  input_seq        the market-data ring's frame sequence number of the input
//!   24     8  ts_recv          capture-server receive time of the input
//!   32     8  price            mid price, 1e-9 fixed point (i64::MAX when one-sided)
//!   40    16  scores[4]        f32 scoring-model outputs (XGBoost); NaN past n_scores
//!   56     4  forecast         f32, the latest slow-lane (LSTM) forecast; NaN without one
//!   60     4  confidence       f32 in [0, 1], of the raw regime; NaN without a regime model
//!   64     8  forecast_age_ns  feature-clock time since the forecast's bar closed (u64::MAX: none)
//!   72     4  scoring_version  version of the scoring model behind `scores` (0: none)
//!   76     4  regime_version   version of the regime model behind `regime` (0: none)
//!   80     1  regime           raw online regime (0xFF: none)
//!   81     1  stable_regime    regime after the stability filter (0xFF: none accepted yet)
//!   82     1  n_scores         how many scores are filled
//!   83     1  alert            health alert level when published: 0 none, 1 info, 2 warning,
//!                                3 critical
//!   84     1  flags            DBN flags of the input record
//!   85     1  model_flags      MF_* bits below
//!   86     1  kill             1 while the kill switch is engaged: do not trade on this signal
//!   87     9  reserved         zero
//! ```
//!
//! The ring's metadata is [`SIGNAL_META`]: a magic, a format version and the record length, so
//! a reader refuses a ring it does not understand.

use crate::msg::{MAX_SCORES, NO_REGIME};

/// Record type of a signal (outside DBN's assigned range).
pub const SIGNAL_RTYPE: u8 = 0xE0;
/// Bytes per signal.
pub const SIGNAL_LEN: usize = 96;
/// Format version.
pub const SIGNAL_VERSION: u8 = 3;
/// The signal ring's metadata: magic `TPSG`, version, record length.
pub const SIGNAL_META: [u8; 6] = [b'T', b'P', b'S', b'G', SIGNAL_VERSION, SIGNAL_LEN as u8];

/// `model_flags`: the regime change was held because its confidence was below
/// `min_confidence`.
pub const MF_LOW_CONFIDENCE: u8 = 0x01;
/// `model_flags`: the regime change was held by the transitions-per-hour budget.
pub const MF_RATE_LIMITED: u8 = 0x02;
/// `model_flags`: too many features were exactly zero; the last stable regime was held.
pub const MF_UNRELIABLE_INPUT: u8 = 0x04;
/// `model_flags`: a regime-model input was not finite; the online state was not advanced.
pub const MF_INVALID_INPUT: u8 = 0x08;
/// `model_flags`: the stable regime changed at this signal.
pub const MF_REGIME_CHANGED: u8 = 0x10;
/// `model_flags`: no inference state was free for this instrument (see the counters).
pub const MF_NO_SLOT: u8 = 0x20;
/// `model_flags`: the book was crossed or locked in this state.
pub const MF_CROSSED: u8 = 0x40;
/// `model_flags`: the regime change was held because the vector was too far from the candidate
/// regime (`max_regime_distance`).
pub const MF_OFF_REGIME: u8 = 0x80;

/// One engine signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    /// Publisher of the input record.
    pub publisher_id: u16,
    /// Instrument.
    pub instrument_id: u32,
    /// The input record's event time (ns since the UNIX epoch).
    pub ts_event: u64,
    /// The input's market-data frame sequence number.
    pub input_seq: u64,
    /// The input record's receive time.
    pub ts_recv: u64,
    /// Mid price (DBN fixed point).
    pub price: i64,
    /// Scoring model outputs.
    pub scores: [f32; MAX_SCORES],
    /// Latest slow-lane forecast.
    pub forecast: f32,
    /// Confidence of the raw regime.
    pub confidence: f32,
    /// Age of the forecast (ns).
    pub forecast_age_ns: u64,
    /// Version of the scoring model (0: none).
    pub scoring_version: u32,
    /// Version of the regime model (0: none).
    pub regime_version: u32,
    /// Raw regime.
    pub regime: u8,
    /// Stable regime.
    pub stable_regime: u8,
    /// Filled scores.
    pub n_scores: u8,
    /// Health alert level when published (0 none, 1 info, 2 warning, 3 critical).
    pub alert: u8,
    /// DBN flags of the input.
    pub flags: u8,
    /// `MF_*` bits.
    pub model_flags: u8,
    /// 1 while the kill switch is engaged.
    pub kill: u8,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            publisher_id: 0,
            instrument_id: 0,
            ts_event: 0,
            input_seq: 0,
            ts_recv: 0,
            price: i64::MAX,
            scores: [f32::NAN; MAX_SCORES],
            forecast: f32::NAN,
            confidence: f32::NAN,
            forecast_age_ns: u64::MAX,
            scoring_version: 0,
            regime_version: 0,
            regime: NO_REGIME,
            stable_regime: NO_REGIME,
            n_scores: 0,
            alert: 0,
            flags: 0,
            model_flags: 0,
            kill: 0,
        }
    }
}

/// Why bytes are not a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// Not [`SIGNAL_LEN`] bytes, or a length field that disagrees.
    #[error("signal record of {0} bytes, expected {SIGNAL_LEN}")]
    Length(usize),
    /// Not a signal record type.
    #[error("record type {0:#04x} is not a signal ({SIGNAL_RTYPE:#04x})")]
    Rtype(u8),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Signal {
    /// Encodes into the wire layout.
    #[inline]
    pub fn encode(&self) -> [u8; SIGNAL_LEN] {
        let mut b = [0u8; SIGNAL_LEN];
        b[0] = (SIGNAL_LEN / 4) as u8;
        b[1] = SIGNAL_RTYPE;
        b[2..4].copy_from_slice(&self.publisher_id.to_le_bytes());
        b[4..8].copy_from_slice(&self.instrument_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.ts_event.to_le_bytes());
        b[16..24].copy_from_slice(&self.input_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.ts_recv.to_le_bytes());
        b[32..40].copy_from_slice(&self.price.to_le_bytes());
        for (i, s) in self.scores.iter().enumerate() {
            b[40 + 4 * i..44 + 4 * i].copy_from_slice(&s.to_le_bytes());
        }
        b[56..60].copy_from_slice(&self.forecast.to_le_bytes());
        b[60..64].copy_from_slice(&self.confidence.to_le_bytes());
        b[64..72].copy_from_slice(&self.forecast_age_ns.to_le_bytes());
        b[72..76].copy_from_slice(&self.scoring_version.to_le_bytes());
        b[76..80].copy_from_slice(&self.regime_version.to_le_bytes());
        b[80] = self.regime;
        b[81] = self.stable_regime;
        b[82] = self.n_scores;
        b[83] = self.alert;
        b[84] = self.flags;
        b[85] = self.model_flags;
        b[86] = self.kill;
        b
    }

    /// Decodes the wire layout.
    ///
    /// # Errors
    /// A wrong length or record type.
    pub fn decode(b: &[u8]) -> Result<Signal, SignalError> {
        if b.len() != SIGNAL_LEN || usize::from(b[0]) * 4 != SIGNAL_LEN {
            return Err(SignalError::Length(b.len()));
        }
        if b[1] != SIGNAL_RTYPE {
            return Err(SignalError::Rtype(b[1]));
        }
        let mut scores = [0f32; MAX_SCORES];
        for (i, s) in scores.iter_mut().enumerate() {
            *s = f32_at(b, 40 + 4 * i);
        }
        Ok(Signal {
            publisher_id: u16::from_le_bytes([b[2], b[3]]),
            instrument_id: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            ts_event: u64_at(b, 8),
            input_seq: u64_at(b, 16),
            ts_recv: u64_at(b, 24),
            price: u64_at(b, 32) as i64,
            scores,
            forecast: f32_at(b, 56),
            confidence: f32_at(b, 60),
            forecast_age_ns: u64_at(b, 64),
            scoring_version: u32::from_le_bytes([b[72], b[73], b[74], b[75]]),
            regime_version: u32::from_le_bytes([b[76], b[77], b[78], b[79]]),
            regime: b[80],
            stable_regime: b[81],
            n_scores: b[82],
            alert: b[83],
            flags: b[84],
            model_flags: b[85],
            kill: b[86],
        })
    }
}

/// Checks a ring's metadata names the signal format this build reads.
///
/// # Errors
/// A description of what differs.
pub fn check_meta(meta: &[u8]) -> Result<(), String> {
    if meta.len() < 6 || meta[..4] != SIGNAL_META[..4] {
        return Err("not a tickpipe signal ring (metadata magic is not TPSG)".into());
    }
    if meta[4] != SIGNAL_VERSION {
        return Err(format!(
            "signal format version {} (this build reads version {SIGNAL_VERSION})",
            meta[4]
        ));
    }
    if usize::from(meta[5]) != SIGNAL_LEN {
        return Err(format!(
            "signal record length {} (expected {SIGNAL_LEN})",
            meta[5]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let s = Signal {
            publisher_id: 3,
            instrument_id: 0xDEAD_BEEF,
            ts_event: 1,
            input_seq: 2,
            ts_recv: 3,
            price: -4,
            scores: [0.5, -1.0, 2.5, 1e-7],
            forecast: -1.25,
            confidence: 0.75,
            forecast_age_ns: 123_456,
            scoring_version: 7,
            regime_version: 0x0102_0304,
            regime: 2,
            stable_regime: 1,
            n_scores: 4,
            alert: 1,
            flags: 0x80,
            model_flags: MF_RATE_LIMITED | MF_CROSSED,
            kill: 1,
        };
        let b = s.encode();
        assert_eq!(Signal::decode(&b), Ok(s));
        assert_eq!(b[0] as usize * 4, SIGNAL_LEN);
        assert!(b[87..].iter().all(|&x| x == 0));
        assert_eq!(Signal::decode(&b[..95]), Err(SignalError::Length(95)));
        let mut bad = b;
        bad[1] = 0xA0;
        assert_eq!(Signal::decode(&bad), Err(SignalError::Rtype(0xA0)));
        assert!(check_meta(&SIGNAL_META).is_ok());
        assert!(check_meta(b"DBN\x03..").unwrap_err().contains("TPSG"));
        let mut v1 = SIGNAL_META;
        v1[4] = 1;
        assert!(check_meta(&v1).unwrap_err().contains("version 1"));
        // Every field lands at its documented offset.
        assert_eq!(f32_at(&b, 56), -1.25);
        assert_eq!(f32_at(&b, 60), 0.75);
        assert_eq!(u64_at(&b, 64), 123_456);
        assert_eq!(&b[72..80], &[7, 0, 0, 0, 4, 3, 2, 1]);
        assert_eq!((b[80], b[81], b[82], b[85]), (2, 1, 4, 0x42));
        assert_eq!((b[83], b[86]), (1, 1));
    }
}
