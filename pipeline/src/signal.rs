//! The engine's output record, published into a signal ring for other processes.
//!
//! A signal is a 64-byte little-endian record that starts with a header shaped like DBN's
//! (`length` in 4-byte words, `rtype`, `publisher_id`, `instrument_id`, `ts_event`), so tools
//! that walk DBN-style framing can skip it by its length.
//!
//! ```text
//!  0      1      2        4              8                16
//!  +------+------+--------+--------------+----------------+
//!  |len=16|rtype |publishr| instrument_id| ts_event       |   header (16 bytes)
//!  +------+------+--------+--------------+----------------+
//!  16 input_seq (u64)  24 ts_recv (u64)  32 price (i64, 1e-9)
//!  40 score (f64)      48 forecast (f64) 56 size (u32)
//!  60 regime (u8)  61 alert (u8)  62 side (u8)  63 flags (u8)
//! ```
//!
//! The ring's metadata is [`SIGNAL_META`]: a magic, a format version and the record length, so
//! a reader refuses a ring it does not understand.

/// Record type of a signal (outside DBN's assigned range).
pub const SIGNAL_RTYPE: u8 = 0xE0;
/// Bytes per signal.
pub const SIGNAL_LEN: usize = 64;
/// Format version.
pub const SIGNAL_VERSION: u8 = 1;
/// The signal ring's metadata: magic `TPSG`, version, record length.
pub const SIGNAL_META: [u8; 6] = [b'T', b'P', b'S', b'G', SIGNAL_VERSION, SIGNAL_LEN as u8];

/// One engine signal.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
    /// Reference price (DBN fixed point).
    pub price: i64,
    /// Model score.
    pub score: f64,
    /// Forecast.
    pub forecast: f64,
    /// Size of the input.
    pub size: u32,
    /// Regime id.
    pub regime: u8,
    /// Alert level.
    pub alert: u8,
    /// Side of the input.
    pub side: u8,
    /// Flags.
    pub flags: u8,
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
        b[40..48].copy_from_slice(&self.score.to_le_bytes());
        b[48..56].copy_from_slice(&self.forecast.to_le_bytes());
        b[56..60].copy_from_slice(&self.size.to_le_bytes());
        b[60] = self.regime;
        b[61] = self.alert;
        b[62] = self.side;
        b[63] = self.flags;
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
        Ok(Signal {
            publisher_id: u16::from_le_bytes([b[2], b[3]]),
            instrument_id: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            ts_event: u64_at(b, 8),
            input_seq: u64_at(b, 16),
            ts_recv: u64_at(b, 24),
            price: u64_at(b, 32) as i64,
            score: f64::from_bits(u64_at(b, 40)),
            forecast: f64::from_bits(u64_at(b, 48)),
            size: u32::from_le_bytes([b[56], b[57], b[58], b[59]]),
            regime: b[60],
            alert: b[61],
            side: b[62],
            flags: b[63],
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
            score: 0.5,
            forecast: -1.25,
            size: 9,
            regime: 2,
            alert: 1,
            side: b'B',
            flags: 0x80,
        };
        let b = s.encode();
        assert_eq!(Signal::decode(&b), Ok(s));
        assert_eq!(b[0] as usize * 4, SIGNAL_LEN);
        assert_eq!(Signal::decode(&b[..63]), Err(SignalError::Length(63)));
        let mut bad = b;
        bad[1] = 0xA0;
        assert_eq!(Signal::decode(&bad), Err(SignalError::Rtype(0xA0)));
        assert!(check_meta(&SIGNAL_META).is_ok());
        assert!(check_meta(b"DBN\x03..").unwrap_err().contains("TPSG"));
        let mut v2 = SIGNAL_META;
        v2[4] = 2;
        assert!(check_meta(&v2).unwrap_err().contains("version 2"));
    }
}
