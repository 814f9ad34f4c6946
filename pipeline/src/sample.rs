//! A deterministic, coherent MBO record stream where record `i` is a function of `i` alone, so
//! a test or benchmark can publish `sample_mbo(i)` from anywhere without keeping a book.
//!
//! Records come in groups of four per instrument (seven instruments, round robin): add order
//! `g`, modify it (size + 1, same price: keeps priority), a trade print, and a cancel of the
//! order added 28 groups earlier (the same instrument's, fully). Every record carries `F_LAST`,
//! so every record completes a consistent book state; bids rest below 4500.00 and asks above,
//! so the book is never crossed. Each instrument keeps about four resting orders on both sides.
//! `ts_event` advances 10 ns per record, `ts_recv` 5 ns after it.

/// Bytes of an MBO record.
pub const MBO_LEN: usize = 56;

/// Instruments in the stream (ids 1 to 7).
pub const INSTRUMENTS: u64 = 7;

const LAG_GROUPS: u64 = 4 * INSTRUMENTS;
const TICK: i64 = 250_000_000;
const CENTER: i64 = 4_500_000_000_000;

fn group_order(g: u64) -> (u64, i64, u32, u8) {
    let side = if (g / INSTRUMENTS).is_multiple_of(2) {
        b'B'
    } else {
        b'A'
    };
    let offset = (g % 20) as i64 + 1;
    let price = if side == b'B' {
        CENTER - offset * TICK
    } else {
        CENTER + offset * TICK
    };
    (g + 1, price, (g % 13) as u32 + 1, side)
}

/// Record `i` of the stream, as DBN MBO bytes (the current DBN layout).
pub fn sample_mbo(i: u64) -> [u8; MBO_LEN] {
    sample_mbo_at(i, 10)
}

/// Record `i` of the stream with `ts_event` advancing `step_ns` per record (from 1 ms).
pub fn sample_mbo_at(i: u64, step_ns: u64) -> [u8; MBO_LEN] {
    let g = i / 4;
    let instrument = (g % INSTRUMENTS) as u32 + 1;
    let (order_id, price, size, side, action) = match i % 4 {
        0 => {
            let (id, px, sz, side) = group_order(g);
            (id, px, sz, side, b'A')
        }
        1 => {
            let (id, px, sz, side) = group_order(g);
            (id, px, sz + 1, side, b'M')
        }
        2 => {
            let (_, px, sz, side) = group_order(g);
            // The aggressor is the other side of the resting order at that price.
            let aggressor = if side == b'B' { b'A' } else { b'B' };
            (0, px, sz, aggressor, b'T')
        }
        _ if g >= LAG_GROUPS => {
            let (id, px, sz, side) = group_order(g - LAG_GROUPS);
            (id, px, sz + 1, side, b'C')
        }
        _ => (0, 0, 0, b'N', b'N'),
    };
    let ts_event = 1_000_000 + i * step_ns;
    let mut b = [0u8; MBO_LEN];
    b[0] = (MBO_LEN / 4) as u8;
    b[1] = crate::msg::rtype::MBO;
    b[2..4].copy_from_slice(&1u16.to_le_bytes());
    b[4..8].copy_from_slice(&instrument.to_le_bytes());
    b[8..16].copy_from_slice(&ts_event.to_le_bytes());
    b[16..24].copy_from_slice(&order_id.to_le_bytes());
    b[24..32].copy_from_slice(&price.to_le_bytes());
    b[32..36].copy_from_slice(&size.to_le_bytes());
    b[36] = 0x80; // F_LAST
    b[38] = action;
    b[39] = side;
    b[40..48].copy_from_slice(&(ts_event + 5).to_le_bytes());
    b[52..56].copy_from_slice(&(i as u32).to_le_bytes());
    b
}

/// Bars of `interval_ns` that the first `n` records of [`sample_mbo_at`]`(_, step_ns)` make
/// when windows run on `ts_recv`: one per instrument and interval with a trade (record
/// `i % 4 == 2` is a trade).
pub fn sample_bars(n: u64, step_ns: u64, interval_ns: u64) -> u64 {
    let mut bars = 0;
    let mut last = [u64::MAX; INSTRUMENTS as usize];
    for i in (2..n).step_by(4) {
        let k = ((i / 4) % INSTRUMENTS) as usize;
        let bucket = (1_000_000 + i * step_ns + 5) / interval_ns;
        if last[k] != bucket {
            last[k] = bucket;
            bars += 1;
        }
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Event;
    use std::collections::HashMap;

    #[test]
    fn stream_is_coherent() {
        // Every cancel and modify names a resting order with the size it has; the book never
        // crosses.
        let mut orders: HashMap<(u32, u64), (i64, u32, u8)> = HashMap::new();
        for i in 0..20_000 {
            let ev = Event::decode(&sample_mbo(i), i, 0).unwrap();
            assert!(ev.is_last());
            let key = (ev.instrument_id, ev.order_id);
            match ev.action {
                b'A' => assert!(orders.insert(key, (ev.price, ev.size, ev.side)).is_none()),
                b'M' => {
                    let o = orders.get_mut(&key).expect("modify of a resting order");
                    assert_eq!((o.0, o.2), (ev.price, ev.side));
                    o.1 = ev.size;
                }
                b'C' => {
                    let o = orders.remove(&key).expect("cancel of a resting order");
                    assert_eq!(o, (ev.price, ev.size, ev.side));
                }
                b'T' | b'N' => {}
                a => panic!("action {a}"),
            }
            for id in 1..=INSTRUMENTS as u32 {
                let bid = orders
                    .iter()
                    .filter(|(k, o)| k.0 == id && o.2 == b'B')
                    .map(|(_, o)| o.0)
                    .max();
                let ask = orders
                    .iter()
                    .filter(|(k, o)| k.0 == id && o.2 == b'A')
                    .map(|(_, o)| o.0)
                    .min();
                if let (Some(b), Some(a)) = (bid, ask) {
                    assert!(b < a);
                }
            }
        }
        assert!(orders.len() <= (LAG_GROUPS + 1) as usize);
    }
}
