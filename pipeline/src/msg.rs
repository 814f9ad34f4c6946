//! The message that travels the main path, and its decoding from DBN record bytes.
//!
//! The ingest stage reads DBN records from the market-data ring as bytes and decodes the fields
//! the pipeline uses by their fixed offsets (checked against the `dbn` crate's structs in
//! tests): no `unsafe` cast of ring bytes, and a record too short for its type is an error.

use crate::link::Message;

/// DBN record types the pipeline reads fields from.
pub mod rtype {
    /// Trades (MBP-0).
    pub const MBP_0: u8 = 0x00;
    /// Top of book (MBP-1).
    pub const MBP_1: u8 = 0x01;
    /// Ten levels (MBP-10).
    pub const MBP_10: u8 = 0x0A;
    /// Market by order.
    pub const MBO: u8 = 0xA0;
    /// Consolidated top of book (CMBP-1).
    pub const CMBP_1: u8 = 0xB1;
    /// Consolidated BBO sampled every second.
    pub const CBBO_1S: u8 = 0xC0;
    /// Consolidated BBO sampled every minute.
    pub const CBBO_1M: u8 = 0xC1;
    /// Consolidated BBO on trade.
    pub const TCBBO: u8 = 0xC2;
    /// BBO sampled every second.
    pub const BBO_1S: u8 = 0xC3;
    /// BBO sampled every minute.
    pub const BBO_1M: u8 = 0xC4;
    /// Instrument definition.
    pub const INSTRUMENT_DEF: u8 = 0x13;
}

/// The most events one record expands to (an MBP-10 record: one per level).
pub const MAX_PARTS: usize = 10;

/// One market-data event on the main path. Plain `Copy`; stamps in raw clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Event {
    /// The market-data ring's frame sequence number.
    pub seq: u64,
    /// The ring writer's clock when it published the frame.
    pub publish_ticks: u64,
    /// When the event was made visible on the link it last travelled.
    pub enqueue_ticks: u64,
    /// Exchange event time (ns since the UNIX epoch).
    pub ts_event: u64,
    /// Capture server receive time (ns since the UNIX epoch), where the record has one.
    pub ts_recv: u64,
    /// Order id (MBO).
    pub order_id: u64,
    /// Price, DBN fixed point (1e-9).
    pub price: i64,
    /// Size.
    pub size: u32,
    /// Instrument id.
    pub instrument_id: u32,
    /// Venue sequence number.
    pub sequence: u32,
    /// Frames lost to laps just before this event (saturating).
    pub missed_before: u32,
    /// Publisher id.
    pub publisher_id: u16,
    /// DBN record type.
    pub rtype: u8,
    /// Action (`A`dd, `C`ancel, `M`odify, `T`rade, `F`ill, `R`clear, `N`one).
    pub action: u8,
    /// Side (`A`sk, `B`id, `N`one).
    pub side: u8,
    /// DBN flags.
    pub flags: u8,
    /// Index of the book level this event carries (`bid_*`/`ask_*`), for MBP / BBO records.
    pub level: u8,
    /// Number of levels the record carries (1 for MBP-1 / BBO, 10 for MBP-10, 0 otherwise).
    /// An MBP-10 record travels as ten events, `level` 0 to 9; the record is complete at the
    /// event whose `level` is `levels - 1`.
    pub levels: u8,
    /// Bid price of level `level` (DBN fixed point; `i64::MAX` when the level is empty).
    pub bid_px: i64,
    /// Ask price of level `level`.
    pub ask_px: i64,
    /// Bid size of level `level`.
    pub bid_sz: u32,
    /// Ask size of level `level`.
    pub ask_sz: u32,
    /// Bid order count of level `level` (0 for consolidated records).
    pub bid_ct: u32,
    /// Ask order count of level `level`.
    pub ask_ct: u32,
}

impl Event {
    /// Whether this event completes its record (always, except for the first nine parts of an
    /// MBP-10 record).
    #[inline]
    pub fn completes_record(&self) -> bool {
        self.levels <= 1 || self.level + 1 >= self.levels
    }

    /// Whether the DBN `F_LAST` flag is set (the last record of an event for its instrument).
    #[inline]
    pub fn is_last(&self) -> bool {
        self.flags & 0x80 != 0
    }

    /// Whether the DBN `F_SNAPSHOT` flag is set.
    #[inline]
    pub fn is_snapshot(&self) -> bool {
        self.flags & 0x20 != 0
    }
}

/// Main-path messages are keyed by instrument and carry their own enqueue stamp.
macro_rules! keyed_by_instrument {
    ($($t:ty),*) => {$(
        impl Message for $t {
            #[inline]
            fn key(&self) -> u32 {
                self.instrument_id
            }
            #[inline]
            fn enqueue_ticks(&self) -> u64 {
                self.enqueue_ticks
            }
            #[inline]
            fn set_enqueue_ticks(&mut self, ticks: u64) {
                self.enqueue_ticks = ticks;
            }
        }
    )*};
}

keyed_by_instrument!(Event, Tick, BarMsg, Forecast);

/// A completed bar on its way to the slow lane (features -> forecast).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BarMsg {
    /// Instrument id.
    pub instrument_id: u32,
    /// When the bar was made visible on the link.
    pub enqueue_ticks: u64,
    /// The bar.
    pub bar: crate::features::Bar,
}

/// Outputs a forecast carries.
pub const MAX_FORECAST: usize = 4;

/// A forecast on its way back from the slow lane (forecast -> inference).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Forecast {
    /// Instrument id.
    pub instrument_id: u32,
    /// When the forecast was made visible on the link.
    pub enqueue_ticks: u64,
    /// End of the bar the forecast was made from (feature clock, ns).
    pub ts_bar_end: u64,
    /// The model's outputs (the first is attached to signals).
    pub values: [f32; MAX_FORECAST],
}

/// A feature vector on the main path (features -> inference -> health): the identity and stamps
/// of the event that completed a consistent book state, and the vector computed there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// The market-data ring's frame sequence number of the completing event.
    pub seq: u64,
    /// The ring writer's clock when it published that frame.
    pub publish_ticks: u64,
    /// When the tick was made visible on the link it last travelled.
    pub enqueue_ticks: u64,
    /// Exchange event time (ns since the UNIX epoch).
    pub ts_event: u64,
    /// Capture server receive time (ns since the UNIX epoch).
    pub ts_recv: u64,
    /// Instrument id.
    pub instrument_id: u32,
    /// Frames lost to laps just before the completing event.
    pub missed_before: u32,
    /// Publisher id.
    pub publisher_id: u16,
    /// DBN flags of the completing event.
    pub flags: u8,
    /// Whether the book was crossed in this state.
    pub crossed: bool,
    /// The feature vector, in schema order ([`crate::features::SCHEMA`]).
    pub values: [f64; crate::features::N_FEATURES],
    /// Raw regime of the online jump model ([`NO_REGIME`] without one).
    pub regime: u8,
    /// Regime after the stability filter ([`NO_REGIME`] until one is accepted).
    pub stable_regime: u8,
    /// How many of `scores` the scoring model filled.
    pub n_scores: u8,
    /// Inference flags (`crate::signal::MF_*`).
    pub model_flags: u8,
    /// Confidence of `regime`, in [0, 1] (NaN without a regime model).
    pub confidence: f32,
    /// Scoring model outputs (NaN past `n_scores`).
    pub scores: [f32; MAX_SCORES],
    /// Latest forecast of the slow lane for this instrument (NaN without one).
    pub forecast: f32,
    /// Age of `forecast`: time on the feature clock since the bar it was made from closed
    /// (`u64::MAX` without one).
    pub forecast_age_ns: u64,
    /// Version of the scoring model that filled `scores` (0: none).
    pub scoring_version: u32,
    /// Version of the regime model that filled `regime` (0: none).
    pub regime_version: u32,
}

/// A regime id meaning "none".
pub const NO_REGIME: u8 = u8::MAX;
/// Scoring outputs a tick (and a signal) carries.
pub const MAX_SCORES: usize = 4;

impl Default for Tick {
    fn default() -> Self {
        Self {
            seq: 0,
            publish_ticks: 0,
            enqueue_ticks: 0,
            ts_event: 0,
            ts_recv: 0,
            instrument_id: 0,
            missed_before: 0,
            publisher_id: 0,
            flags: 0,
            crossed: false,
            values: [f64::NAN; crate::features::N_FEATURES],
            regime: NO_REGIME,
            stable_regime: NO_REGIME,
            n_scores: 0,
            model_flags: 0,
            confidence: f32::NAN,
            scores: [f32::NAN; MAX_SCORES],
            forecast: f32::NAN,
            forecast_age_ns: u64::MAX,
            scoring_version: 0,
            regime_version: 0,
        }
    }
}

/// Why a frame is not a record the pipeline can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header says, or than its record type needs.
    Short,
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl Event {
    /// Decodes a DBN record. Record types without book fields keep only the header fields.
    ///
    /// # Errors
    /// [`DecodeError::Short`] when the bytes are shorter than the record header or body needs.
    #[inline]
    pub fn decode(bytes: &[u8], seq: u64, publish_ticks: u64) -> Result<Event, DecodeError> {
        // Header: length (in 4-byte words), rtype, publisher_id, instrument_id, ts_event.
        if bytes.len() < 16 || usize::from(bytes[0]) * 4 > bytes.len() {
            return Err(DecodeError::Short);
        }
        let rtype = bytes[1];
        let mut ev = Event {
            seq,
            publish_ticks,
            rtype,
            publisher_id: u16::from_le_bytes([bytes[2], bytes[3]]),
            instrument_id: u32_at(bytes, 4),
            ts_event: u64_at(bytes, 8),
            ..Event::default()
        };
        match rtype {
            rtype::MBO => {
                if bytes.len() < 56 {
                    return Err(DecodeError::Short);
                }
                ev.order_id = u64_at(bytes, 16);
                ev.price = u64_at(bytes, 24) as i64;
                ev.size = u32_at(bytes, 32);
                ev.flags = bytes[36];
                ev.action = bytes[38];
                ev.side = bytes[39];
                ev.ts_recv = u64_at(bytes, 40);
                ev.sequence = u32_at(bytes, 52);
            }
            rtype::MBP_0
            | rtype::MBP_1
            | rtype::MBP_10
            | rtype::BBO_1S
            | rtype::BBO_1M
            | rtype::CMBP_1
            | rtype::CBBO_1S
            | rtype::CBBO_1M
            | rtype::TCBBO => {
                let levels = match rtype {
                    rtype::MBP_0 => 0,
                    rtype::MBP_10 => 10,
                    _ => 1,
                };
                if bytes.len() < LEVELS_AT + levels * LEVEL_LEN {
                    return Err(DecodeError::Short);
                }
                ev.price = u64_at(bytes, 16) as i64;
                ev.size = u32_at(bytes, 24);
                // BBO records have no action (a reserved zero byte there).
                ev.action = match bytes[28] {
                    0 => b'N',
                    a => a,
                };
                ev.side = bytes[29];
                ev.flags = bytes[30];
                ev.ts_recv = u64_at(bytes, 32);
                // CMBP-1 and CBBO records keep ts_in_delta and reserved bytes where MBP keeps
                // the sequence number.
                ev.sequence = if matches!(rtype, rtype::MBP_0 | rtype::MBP_1 | rtype::MBP_10) {
                    u32_at(bytes, 44)
                } else {
                    0
                };
                ev.levels = levels as u8;
                if levels > 0 {
                    ev.set_level(bytes, 0, rtype_has_counts(rtype));
                }
            }
            rtype::INSTRUMENT_DEF => {
                // ts_recv and min_price_increment lie at the same offsets in DBN versions 1 to 3.
                if bytes.len() < 32 {
                    return Err(DecodeError::Short);
                }
                ev.ts_recv = u64_at(bytes, 16);
                ev.price = u64_at(bytes, 24) as i64;
                ev.action = b'N';
            }
            _ => {}
        }
        Ok(ev)
    }

    /// Decodes a record into one event per part: one for most records, one per level for
    /// MBP-10. Returns how many of `out` were written.
    ///
    /// # Errors
    /// As [`Event::decode`].
    ///
    /// # Panics
    /// When `out` is shorter than [`MAX_PARTS`].
    #[inline]
    pub fn decode_parts(
        bytes: &[u8],
        seq: u64,
        publish_ticks: u64,
        out: &mut [Event],
    ) -> Result<usize, DecodeError> {
        let first = Event::decode(bytes, seq, publish_ticks)?;
        let parts = usize::from(first.levels).max(1);
        out[0] = first;
        for (i, ev) in out.iter_mut().enumerate().take(parts).skip(1) {
            *ev = first;
            ev.set_level(bytes, i, rtype_has_counts(first.rtype));
        }
        Ok(parts)
    }

    #[inline]
    fn set_level(&mut self, bytes: &[u8], i: usize, counts: bool) {
        let at = LEVELS_AT + i * LEVEL_LEN;
        self.level = i as u8;
        self.bid_px = u64_at(bytes, at) as i64;
        self.ask_px = u64_at(bytes, at + 8) as i64;
        self.bid_sz = u32_at(bytes, at + 16);
        self.ask_sz = u32_at(bytes, at + 20);
        // Consolidated pairs keep publisher ids where the others keep order counts.
        let (bid_ct, ask_ct) = if counts {
            (u32_at(bytes, at + 24), u32_at(bytes, at + 28))
        } else {
            (0, 0)
        };
        self.bid_ct = bid_ct;
        self.ask_ct = ask_ct;
    }
}

/// Offset of the first level in MBP / BBO records.
const LEVELS_AT: usize = 48;
/// Size of one level (`BidAskPair` / `ConsolidatedBidAskPair`).
const LEVEL_LEN: usize = 32;

fn rtype_has_counts(rtype: u8) -> bool {
    matches!(
        rtype,
        rtype::MBP_1 | rtype::MBP_10 | rtype::BBO_1S | rtype::BBO_1M
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbn::{FlagSet, MboMsg, Mbp1Msg, RecordHeader, TradeMsg};
    use std::mem::offset_of;

    #[test]
    fn offsets_match_dbn() {
        assert_eq!(dbn::rtype::MBO, rtype::MBO);
        assert_eq!(dbn::rtype::MBP_0, rtype::MBP_0);
        assert_eq!(dbn::rtype::MBP_1, rtype::MBP_1);
        assert_eq!(dbn::rtype::MBP_10, rtype::MBP_10);
        assert_eq!(offset_of!(MboMsg, order_id), 16);
        assert_eq!(offset_of!(MboMsg, price), 24);
        assert_eq!(offset_of!(MboMsg, size), 32);
        assert_eq!(offset_of!(MboMsg, flags), 36);
        assert_eq!(offset_of!(MboMsg, action), 38);
        assert_eq!(offset_of!(MboMsg, side), 39);
        assert_eq!(offset_of!(MboMsg, ts_recv), 40);
        assert_eq!(offset_of!(MboMsg, sequence), 52);
        for (price, size, action, side, flags, ts_recv, sequence) in [
            (
                offset_of!(TradeMsg, price),
                offset_of!(TradeMsg, size),
                offset_of!(TradeMsg, action),
                offset_of!(TradeMsg, side),
                offset_of!(TradeMsg, flags),
                offset_of!(TradeMsg, ts_recv),
                offset_of!(TradeMsg, sequence),
            ),
            (
                offset_of!(Mbp1Msg, price),
                offset_of!(Mbp1Msg, size),
                offset_of!(Mbp1Msg, action),
                offset_of!(Mbp1Msg, side),
                offset_of!(Mbp1Msg, flags),
                offset_of!(Mbp1Msg, ts_recv),
                offset_of!(Mbp1Msg, sequence),
            ),
        ] {
            assert_eq!(
                (price, size, action, side, flags, ts_recv, sequence),
                (16, 24, 28, 29, 30, 32, 44)
            );
        }
    }

    #[test]
    fn decodes_mbo_and_rejects_short() {
        let msg = MboMsg {
            hd: RecordHeader::new::<MboMsg>(dbn::rtype::MBO, 1, 42, 1_000),
            order_id: 7,
            price: -5,
            size: 3,
            flags: FlagSet::from(0x80),
            channel_id: 0,
            action: b'A' as _,
            side: b'B' as _,
            ts_recv: 2_000,
            ts_in_delta: 0,
            sequence: 99,
        };
        let bytes: &[u8] = msg.as_ref();
        let ev = Event::decode(bytes, 5, 6).unwrap();
        assert_eq!(
            (
                ev.seq,
                ev.publish_ticks,
                ev.instrument_id,
                ev.ts_event,
                ev.order_id
            ),
            (5, 6, 42, 1_000, 7)
        );
        assert_eq!(
            (ev.price, ev.size, ev.flags, ev.action, ev.side),
            (-5, 3, 0x80, b'A', b'B')
        );
        assert_eq!((ev.ts_recv, ev.sequence, ev.publisher_id), (2_000, 99, 1));
        assert_eq!(Event::decode(&bytes[..40], 0, 0), Err(DecodeError::Short));
        assert_eq!(Event::decode(&bytes[..8], 0, 0), Err(DecodeError::Short));
    }

    #[test]
    fn level_and_definition_offsets_match_dbn() {
        use dbn::{
            BboMsg, BidAskPair, Cmbp1Msg, ConsolidatedBidAskPair, InstrumentDefMsg, Mbp10Msg,
        };
        assert_eq!(dbn::rtype::BBO_1S, rtype::BBO_1S);
        assert_eq!(dbn::rtype::BBO_1M, rtype::BBO_1M);
        assert_eq!(dbn::rtype::CMBP_1, rtype::CMBP_1);
        assert_eq!(dbn::rtype::CBBO_1S, rtype::CBBO_1S);
        assert_eq!(dbn::rtype::CBBO_1M, rtype::CBBO_1M);
        assert_eq!(dbn::rtype::TCBBO, rtype::TCBBO);
        assert_eq!(dbn::rtype::INSTRUMENT_DEF, rtype::INSTRUMENT_DEF);
        assert_eq!(offset_of!(Mbp1Msg, levels), LEVELS_AT);
        assert_eq!(offset_of!(Mbp10Msg, levels), LEVELS_AT);
        assert_eq!(offset_of!(BboMsg, levels), LEVELS_AT);
        assert_eq!(offset_of!(Cmbp1Msg, levels), LEVELS_AT);
        assert_eq!(std::mem::size_of::<BidAskPair>(), LEVEL_LEN);
        assert_eq!(std::mem::size_of::<ConsolidatedBidAskPair>(), LEVEL_LEN);
        assert_eq!(
            (
                offset_of!(BidAskPair, bid_px),
                offset_of!(BidAskPair, ask_px),
                offset_of!(BidAskPair, bid_sz),
                offset_of!(BidAskPair, ask_sz),
                offset_of!(BidAskPair, bid_ct),
                offset_of!(BidAskPair, ask_ct)
            ),
            (0, 8, 16, 20, 24, 28)
        );
        assert_eq!(
            (
                offset_of!(ConsolidatedBidAskPair, bid_px),
                offset_of!(ConsolidatedBidAskPair, ask_px),
                offset_of!(ConsolidatedBidAskPair, bid_sz),
                offset_of!(ConsolidatedBidAskPair, ask_sz)
            ),
            (0, 8, 16, 20)
        );
        assert_eq!(
            (
                offset_of!(BboMsg, price),
                offset_of!(BboMsg, size),
                offset_of!(BboMsg, side),
                offset_of!(BboMsg, flags),
                offset_of!(BboMsg, ts_recv)
            ),
            (16, 24, 29, 30, 32)
        );
        assert_eq!(
            (
                offset_of!(Cmbp1Msg, price),
                offset_of!(Cmbp1Msg, size),
                offset_of!(Cmbp1Msg, action),
                offset_of!(Cmbp1Msg, side),
                offset_of!(Cmbp1Msg, flags),
                offset_of!(Cmbp1Msg, ts_recv)
            ),
            (16, 24, 28, 29, 30, 32)
        );
        assert_eq!(offset_of!(InstrumentDefMsg, ts_recv), 16);
        assert_eq!(offset_of!(InstrumentDefMsg, min_price_increment), 24);
        assert_eq!(offset_of!(dbn::compat::InstrumentDefMsgV1, ts_recv), 16);
        assert_eq!(
            offset_of!(dbn::compat::InstrumentDefMsgV1, min_price_increment),
            24
        );
        assert_eq!(
            offset_of!(dbn::compat::InstrumentDefMsgV2, min_price_increment),
            24
        );
    }

    #[test]
    fn mbp10_expands_to_one_event_per_level() {
        use dbn::{BidAskPair, Mbp10Msg};
        let mut msg = Mbp10Msg {
            hd: RecordHeader::new::<Mbp10Msg>(dbn::rtype::MBP_10, 1, 9, 1_000),
            price: 100,
            size: 2,
            action: b'T' as _,
            side: b'A' as _,
            flags: FlagSet::from(0x80),
            depth: 0,
            ts_recv: 2_000,
            ts_in_delta: 0,
            sequence: 5,
            levels: std::array::from_fn(|_| BidAskPair::default()),
        };
        for (i, l) in msg.levels.iter_mut().enumerate() {
            let i = i as i64;
            *l = BidAskPair {
                bid_px: 100 - i,
                ask_px: 101 + i,
                bid_sz: 10 + i as u32,
                ask_sz: 20 + i as u32,
                bid_ct: 1 + i as u32,
                ask_ct: 2 + i as u32,
            };
        }
        let bytes: &[u8] = msg.as_ref();
        let mut out = [Event::default(); MAX_PARTS];
        assert_eq!(Event::decode_parts(bytes, 3, 4, &mut out), Ok(10));
        for (i, ev) in out.iter().enumerate() {
            let j = i as i64;
            assert_eq!((ev.level, ev.levels), (i as u8, 10));
            assert_eq!((ev.bid_px, ev.ask_px), (100 - j, 101 + j));
            assert_eq!(
                (ev.bid_sz, ev.ask_sz, ev.bid_ct, ev.ask_ct),
                (10 + i as u32, 20 + i as u32, 1 + i as u32, 2 + i as u32)
            );
            assert_eq!((ev.price, ev.action, ev.side, ev.seq), (100, b'T', b'A', 3));
            assert_eq!(ev.completes_record(), i == 9);
        }
        assert_eq!(
            Event::decode_parts(&bytes[..200], 3, 4, &mut out),
            Err(DecodeError::Short)
        );
    }
}
