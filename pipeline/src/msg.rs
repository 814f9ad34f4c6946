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
}

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
}

impl Message for Event {
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
            rtype::MBP_0 | rtype::MBP_1 | rtype::MBP_10 => {
                if bytes.len() < 48 {
                    return Err(DecodeError::Short);
                }
                ev.price = u64_at(bytes, 16) as i64;
                ev.size = u32_at(bytes, 24);
                ev.action = bytes[28];
                ev.side = bytes[29];
                ev.flags = bytes[30];
                ev.ts_recv = u64_at(bytes, 32);
                ev.sequence = u32_at(bytes, 44);
            }
            _ => {}
        }
        Ok(ev)
    }
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
}
