//! The market-data datagram format: a fixed header, then DBN records byte for byte.
//!
//! ```text
//! offset size field          meaning
//!  0     4    magic          b"TPMD"
//!  4     1    version        1 (VERSION)
//!  5     1    kind           0 records, 1 heartbeat, 2 end of stream
//!  6     2    header_len     bytes before the first record (>= 48; a receiver skips what
//!                            it does not know, so later versions can grow the header)
//!  8     2    count          records in this datagram (0 for heartbeat and end of stream)
//! 10     2    reserved       0
//! 12     4    payload_len    bytes of records after the header (the rest of the datagram)
//! 16     8    seq            datagram sequence number: 0 for the first records datagram, +1
//!                            per records datagram; heartbeat and end of stream carry the
//!                            next one and do not consume it
//! 24     8    first_record   sequence number of the first record (records number from 0,
//!                            +1 per record, across datagrams); end of stream: the number of
//!                            records the stream held, so trailing losses are counted too
//! 32     8    publish_ticks  the sender's raw TSC reading when it sent the datagram
//! 40     8    send_ns        the sender's wall clock, ns since the UNIX epoch (its heartbeat)
//! 48     ..   records        `count` DBN records as a capture holds them, each starting with
//!                            its length in 4-byte words (the same bytes a ring frame carries)
//! ```
//!
//! All integers are little-endian. A datagram never splits a record. [`parse_datagram`] checks
//! everything a receiver relies on (magic, version, lengths, every record's length against what
//! is left, the record count) and borrows the records from the datagram: no copy, no
//! allocation, and no panic on any input.

/// The datagram magic, `b"TPMD"`.
pub const MAGIC: [u8; 4] = *b"TPMD";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of the version-1 header.
pub const HEADER_LEN: usize = 48;
/// A DBN record header is 16 bytes: no record is shorter.
pub const MIN_RECORD_LEN: usize = 16;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

const OFF_VERSION: usize = 4;
const OFF_KIND: usize = 5;
const OFF_HEADER_LEN: usize = 6;
const OFF_COUNT: usize = 8;
const OFF_PAYLOAD_LEN: usize = 12;
const OFF_SEQ: usize = 16;
const OFF_FIRST_RECORD: usize = 24;
const OFF_PUBLISH_TICKS: usize = 32;
const OFF_SEND_NS: usize = 40;
const _: () = assert!(OFF_SEND_NS + 8 == HEADER_LEN);
const _: () = assert!(OFF_PAYLOAD_LEN + 4 == OFF_SEQ);

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// DBN records.
    Records,
    /// No records: the sender is alive (its `send_ns` is a heartbeat).
    Heartbeat,
    /// No records: the stream has ended after `first_record` records.
    End,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Records => 0,
            Kind::Heartbeat => 1,
            Kind::End => 2,
        }
    }
}

/// Why a datagram is not a valid market-data datagram. Small and `Copy`: parsing is on the
/// receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed header.
    #[error("datagram of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short {
        /// Datagram length.
        len: usize,
    },
    /// Not a tickpipe market-data datagram.
    #[error("bad magic {found:02x?} (expected \"TPMD\")")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A format version this build does not read.
    #[error("datagram version {found}, this build reads version {VERSION}")]
    WrongVersion {
        /// The datagram's version.
        found: u8,
    },
    /// An unknown `kind`.
    #[error("unknown datagram kind {found}")]
    UnknownKind {
        /// The kind byte.
        found: u8,
    },
    /// `header_len` is below the fixed header or beyond the datagram.
    #[error("header length {header_len} is invalid for a {len}-byte datagram")]
    BadHeaderLen {
        /// The declared header length.
        header_len: u16,
        /// Datagram length.
        len: usize,
    },
    /// `payload_len` disagrees with the bytes after the header: the datagram was truncated
    /// (a receive buffer too small) or carries trailing bytes.
    #[error("payload length {declared} declared, {actual} bytes present")]
    PayloadLen {
        /// Declared.
        declared: u32,
        /// Present.
        actual: usize,
    },
    /// A record whose length is below a DBN record header.
    #[error("record {index} at payload offset {offset} has length {len} (< {MIN_RECORD_LEN})")]
    BadRecord {
        /// Record index in the datagram.
        index: u16,
        /// Its offset in the payload.
        offset: usize,
        /// Its declared length in bytes.
        len: usize,
    },
    /// A record runs past the end of the payload.
    #[error("record {index} needs {needed} bytes, {left} left in the datagram")]
    TruncatedRecord {
        /// Record index in the datagram.
        index: u16,
        /// Its declared length.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// The payload holds a different number of records than `count` says.
    #[error("record count {declared} declared, {found} found")]
    CountMismatch {
        /// Declared.
        declared: u16,
        /// Found (counting stops past `declared`).
        found: u32,
    },
}

/// A parsed datagram; the records are borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// What it carries.
    pub kind: Kind,
    /// Datagram sequence number.
    pub seq: u64,
    /// Sequence number of the first record (end of stream: records in the stream).
    pub first_record: u64,
    /// The sender's raw clock reading when it sent.
    pub publish_ticks: u64,
    /// The sender's wall clock when it sent (ns since the UNIX epoch).
    pub send_ns: u64,
    /// Records in `records`.
    pub count: u16,
    /// Offset of the records in the datagram (the header length).
    pub records_at: usize,
    /// The records, back to back, each already checked to fit.
    pub records: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// The records, in order.
    pub fn records(&self) -> Records<'a> {
        Records { rest: self.records }
    }
}

/// Iterator over the records of a parsed [`Datagram`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = record_len(self.rest)?;
        let rec = self.rest.get(..len)?;
        self.rest = self.rest.get(len..)?;
        Some(rec)
    }
}

/// The length in bytes a record declares (its first byte counts 4-byte words), if it is at
/// least a record header and fits in `rest`.
#[inline]
pub fn record_len(rest: &[u8]) -> Option<usize> {
    let len = usize::from(*rest.first()?) * 4;
    (len >= MIN_RECORD_LEN && len <= rest.len()).then_some(len)
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Parses and checks a datagram without copying it.
///
/// # Errors
/// The first problem found, as a [`WireError`]. No input panics.
pub fn parse_datagram(buf: &[u8]) -> Result<Datagram<'_>, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Short { len: buf.len() });
    }
    // From here every fixed-offset read is within the first HEADER_LEN bytes.
    let magic = [buf[0], buf[1], buf[2], buf[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic { found: magic });
    }
    if buf[OFF_VERSION] != VERSION {
        return Err(WireError::WrongVersion {
            found: buf[OFF_VERSION],
        });
    }
    let kind = match buf[OFF_KIND] {
        0 => Kind::Records,
        1 => Kind::Heartbeat,
        2 => Kind::End,
        found => return Err(WireError::UnknownKind { found }),
    };
    let header_len = u16_at(buf, OFF_HEADER_LEN);
    let hl = usize::from(header_len);
    if hl < HEADER_LEN || hl > buf.len() {
        return Err(WireError::BadHeaderLen {
            header_len,
            len: buf.len(),
        });
    }
    let records = &buf[hl..];
    let declared = u32_at(buf, OFF_PAYLOAD_LEN);
    if usize::try_from(declared).ok() != Some(records.len()) {
        return Err(WireError::PayloadLen {
            declared,
            actual: records.len(),
        });
    }
    let count = u16_at(buf, OFF_COUNT);
    // Walk the records: each must be at least a record header and fit; the walk visits at most
    // `count` records, so a datagram claiming more than it holds stops early.
    let (mut at, mut found) = (0usize, 0u32);
    while at < records.len() {
        if found >= u32::from(count) {
            // More bytes than the declared records account for.
            return Err(WireError::CountMismatch {
                declared: count,
                found: found + 1,
            });
        }
        let rest = &records[at..];
        let len = usize::from(rest[0]) * 4;
        let index = u16::try_from(found).unwrap_or(u16::MAX);
        if len < MIN_RECORD_LEN {
            return Err(WireError::BadRecord {
                index,
                offset: at,
                len,
            });
        }
        if len > rest.len() {
            return Err(WireError::TruncatedRecord {
                index,
                needed: len,
                left: rest.len(),
            });
        }
        at += len;
        found += 1;
    }
    if found != u32::from(count) {
        return Err(WireError::CountMismatch {
            declared: count,
            found,
        });
    }
    if kind != Kind::Records && count != 0 {
        return Err(WireError::CountMismatch { declared: 0, found });
    }
    Ok(Datagram {
        kind,
        seq: u64_at(buf, OFF_SEQ),
        first_record: u64_at(buf, OFF_FIRST_RECORD),
        publish_ticks: u64_at(buf, OFF_PUBLISH_TICKS),
        send_ns: u64_at(buf, OFF_SEND_NS),
        count,
        records_at: hl,
        records,
    })
}

/// The header fields a sender chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the datagram carries.
    pub kind: Kind,
    /// Records that follow.
    pub count: u16,
    /// Bytes of records that follow.
    pub payload_len: u32,
    /// Datagram sequence number.
    pub seq: u64,
    /// First record's sequence number (end of stream: records in the stream).
    pub first_record: u64,
    /// Raw clock reading at send.
    pub publish_ticks: u64,
    /// Wall clock at send, ns since the UNIX epoch.
    pub send_ns: u64,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[OFF_VERSION] = VERSION;
        b[OFF_KIND] = self.kind.code();
        b[OFF_HEADER_LEN..OFF_HEADER_LEN + 2].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[OFF_COUNT..OFF_COUNT + 2].copy_from_slice(&self.count.to_le_bytes());
        b[OFF_PAYLOAD_LEN..OFF_PAYLOAD_LEN + 4].copy_from_slice(&self.payload_len.to_le_bytes());
        b[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&self.seq.to_le_bytes());
        b[OFF_FIRST_RECORD..OFF_FIRST_RECORD + 8].copy_from_slice(&self.first_record.to_le_bytes());
        b[OFF_PUBLISH_TICKS..OFF_PUBLISH_TICKS + 8]
            .copy_from_slice(&self.publish_ticks.to_le_bytes());
        b[OFF_SEND_NS..OFF_SEND_NS + 8].copy_from_slice(&self.send_ns.to_le_bytes());
        b
    }
}

/// Why a record cannot go into a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Its first byte does not give its length (in 4-byte words, at least a record header).
    #[error("record of {len} bytes does not start with its own length")]
    NotARecord {
        /// Bytes given.
        len: usize,
    },
    /// It does not fit even alone (header plus record above [`MAX_DATAGRAM`]).
    #[error("record of {len} bytes does not fit a datagram")]
    TooLarge {
        /// Bytes given.
        len: usize,
    },
}

/// Fills one datagram with records; reused for every datagram a sender sends.
#[derive(Debug, Clone)]
pub struct DatagramBuilder {
    buf: Vec<u8>,
    count: u16,
    first_record: u64,
    max_len: usize,
    max_records: u16,
}

impl DatagramBuilder {
    /// A builder of datagrams of at most `max_len` bytes (clamped to the header plus one
    /// record header and [`MAX_DATAGRAM`]) and at most `max_records` records (at least 1). A
    /// record larger than `max_len` allows still goes out, alone.
    pub fn new(max_len: usize, max_records: u16) -> Self {
        let max_len = max_len.clamp(HEADER_LEN + MIN_RECORD_LEN, MAX_DATAGRAM);
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        buf.resize(HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_record: 0,
            max_len,
            max_records: max_records.max(1),
        }
    }

    /// Records held.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// No records held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sequence number of the first record held.
    pub fn first_record(&self) -> u64 {
        self.first_record
    }

    /// Whether `record` fits beside what is held (always true when empty).
    pub fn fits(&self, record: &[u8]) -> bool {
        self.count == 0
            || (self.count < self.max_records && self.buf.len() + record.len() <= self.max_len)
    }

    /// Adds a record; `seq` is its sequence number (the first record's is kept).
    ///
    /// # Errors
    /// A record that does not declare its own length, or that cannot fit any datagram. A
    /// record that does not [fit](Self::fits) beside the others is the caller's to flush first;
    /// pushed anyway it makes the datagram larger than asked, never invalid.
    pub fn push(&mut self, record: &[u8], seq: u64) -> Result<(), BuildError> {
        if record_len(record) != Some(record.len()) {
            return Err(BuildError::NotARecord { len: record.len() });
        }
        if self.buf.len() + record.len() > MAX_DATAGRAM || self.count == u16::MAX {
            return Err(BuildError::TooLarge { len: record.len() });
        }
        if self.count == 0 {
            self.first_record = seq;
        }
        self.buf.extend_from_slice(record);
        self.count += 1;
        Ok(())
    }

    /// Writes the header and returns the finished datagram (the builder is emptied by
    /// [`DatagramBuilder::clear`]).
    pub fn finish(&mut self, seq: u64, publish_ticks: u64, send_ns: u64) -> &[u8] {
        let h = Header {
            kind: Kind::Records,
            count: self.count,
            payload_len: (self.buf.len() - HEADER_LEN) as u32,
            seq,
            first_record: self.first_record,
            publish_ticks,
            send_ns,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&h.encode());
        &self.buf
    }

    /// Drops the held records.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.count = 0;
    }
}

/// A heartbeat or end-of-stream datagram.
pub fn control(
    kind: Kind,
    seq: u64,
    first_record: u64,
    publish_ticks: u64,
    send_ns: u64,
) -> [u8; HEADER_LEN] {
    Header {
        kind,
        count: 0,
        payload_len: 0,
        seq,
        first_record,
        publish_ticks,
        send_ns,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake DBN record of `words` 4-byte words whose bytes after the length are `fill`.
    fn rec(words: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; usize::from(words) * 4];
        r[0] = words;
        r
    }

    fn datagram(recs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = DatagramBuilder::new(MAX_DATAGRAM, u16::MAX);
        for (i, r) in recs.iter().enumerate() {
            b.push(r, 100 + i as u64).unwrap();
        }
        b.finish(7, 11, 13).to_vec()
    }

    #[test]
    fn round_trip_borrows_the_records() {
        let recs = vec![rec(4, 1), rec(14, 2), rec(20, 3)];
        let d = datagram(&recs);
        let p = parse_datagram(&d).unwrap();
        assert_eq!(p.kind, Kind::Records);
        assert_eq!(
            (p.seq, p.first_record, p.publish_ticks, p.send_ns),
            (7, 100, 11, 13)
        );
        assert_eq!(p.count, 3);
        let got: Vec<&[u8]> = p.records().collect();
        assert_eq!(got, recs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // Zero-copy: the records are the datagram's own bytes.
        assert_eq!(p.records.as_ptr(), d[HEADER_LEN..].as_ptr());
    }

    #[test]
    fn control_datagrams_parse() {
        let d = control(Kind::End, 5, 999, 1, 2);
        let p = parse_datagram(&d).unwrap();
        assert_eq!(
            (p.kind, p.seq, p.first_record, p.count),
            (Kind::End, 5, 999, 0)
        );
        assert_eq!(p.records().count(), 0);
        let h = control(Kind::Heartbeat, 5, 0, 1, 77);
        assert_eq!(parse_datagram(&h).unwrap().send_ns, 77);
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        let good = datagram(&[rec(4, 1), rec(6, 2)]);
        assert_eq!(parse_datagram(&[]), Err(WireError::Short { len: 0 }));
        assert_eq!(
            parse_datagram(&good[..HEADER_LEN - 1]),
            Err(WireError::Short {
                len: HEADER_LEN - 1
            })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            parse_datagram(&bad),
            Err(WireError::BadMagic { .. })
        ));
        let mut bad = good.clone();
        bad[OFF_VERSION] = 2;
        assert_eq!(
            parse_datagram(&bad),
            Err(WireError::WrongVersion { found: 2 })
        );
        let mut bad = good.clone();
        bad[OFF_KIND] = 9;
        assert_eq!(
            parse_datagram(&bad),
            Err(WireError::UnknownKind { found: 9 })
        );
        let mut bad = good.clone();
        bad[OFF_HEADER_LEN] = 40;
        assert!(matches!(
            parse_datagram(&bad),
            Err(WireError::BadHeaderLen { header_len: 40, .. })
        ));
        // Truncated: a receive buffer shorter than the datagram.
        assert_eq!(
            parse_datagram(&good[..good.len() - 3]),
            Err(WireError::PayloadLen {
                declared: 40,
                actual: 37
            })
        );
        // Count mismatches both ways.
        let mut bad = good.clone();
        bad[OFF_COUNT] = 3;
        assert_eq!(
            parse_datagram(&bad),
            Err(WireError::CountMismatch {
                declared: 3,
                found: 2
            })
        );
        let mut bad = good.clone();
        bad[OFF_COUNT] = 1;
        assert_eq!(
            parse_datagram(&bad),
            Err(WireError::CountMismatch {
                declared: 1,
                found: 2
            })
        );
        // A record running past the end (payload_len kept consistent).
        let mut bad = good.clone();
        bad[HEADER_LEN + 16] = 7;
        assert_eq!(
            parse_datagram(&bad),
            Err(WireError::TruncatedRecord {
                index: 1,
                needed: 28,
                left: 24
            })
        );
        // A zero-length record would never advance.
        let mut bad = good.clone();
        bad[HEADER_LEN] = 0;
        assert_eq!(
            parse_datagram(&bad),
            Err(WireError::BadRecord {
                index: 0,
                offset: 0,
                len: 0
            })
        );
        // Records in an end-of-stream datagram.
        let mut bad = good.clone();
        bad[OFF_KIND] = 2;
        assert!(matches!(
            parse_datagram(&bad),
            Err(WireError::CountMismatch { declared: 0, .. })
        ));
    }

    #[test]
    fn builder_respects_limits() {
        let mut b = DatagramBuilder::new(HEADER_LEN + 40, 10);
        assert!(b.fits(&rec(5, 0)));
        b.push(&rec(5, 0), 0).unwrap();
        assert!(b.fits(&rec(5, 0)));
        b.push(&rec(5, 0), 1).unwrap();
        assert!(!b.fits(&rec(4, 0)), "over max_len");
        b.clear();
        assert!(b.is_empty());
        let mut b = DatagramBuilder::new(MAX_DATAGRAM, 2);
        b.push(&rec(4, 0), 0).unwrap();
        b.push(&rec(4, 0), 1).unwrap();
        assert!(!b.fits(&rec(4, 0)), "over max_records");
        assert_eq!(
            b.push(&[3u8; 12], 2),
            Err(BuildError::NotARecord { len: 12 })
        );
        assert_eq!(
            b.push(&rec(4, 0)[..15], 2),
            Err(BuildError::NotARecord { len: 15 })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep (the fuzz target covers this in depth): mutate a valid
        // datagram byte by byte and through every truncation.
        let good = datagram(&[rec(4, 1), rec(6, 2), rec(5, 3)]);
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0xff] {
                let mut d = good.clone();
                d[i] = v;
                if let Ok(p) = parse_datagram(&d) {
                    assert_eq!(p.records().count(), usize::from(p.count));
                }
            }
            let _ = parse_datagram(&good[..i]);
        }
    }
}
