//! Reading captured DBN files: plain or zstd, any DBN version from 1 to 3, and metadata-less
//! fragments (`*.frag*`), records handed out byte for byte as the file holds them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use dbn::decode::DbnMetadata;
use dbn::decode::DynReader;
use dbn::decode::dbn::{Decoder, RecordDecoder};
use dbn::{Metadata, RType, Record, RecordRef, SType, VersionUpgradePolicy};

/// The longest DBN record: the header's length byte counts 4-byte words.
pub const MAX_DBN_RECORD: usize = 255 * 4;

/// The longest DBN metadata accepted, prefix included (symbol mappings for a million
/// instruments fit).
pub const MAX_METADATA: u64 = 256 << 20;

/// Errors reading a capture, each naming the file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not DBN, or its contents are invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Counts the decompressed bytes the decoder pulls, so a partial trailing record (which the
/// decoder silently treats as the end) shows up as bytes read but never decoded.
///
/// It also walks the record lengths as the bytes pass and stops the stream before a record
/// whose length is not a whole number of 8-byte words of at least a header: the decoder would
/// take the records after it as misaligned references (undefined behaviour in its unsafe code).
struct Counting<R> {
    inner: R,
    count: u64,
    /// The first bytes of the stream: `DBN`, version and metadata length for a DBN file.
    prefix: Vec<u8>,
    /// Stream offset of the next record's length byte, once the prefix tells where records
    /// start.
    next_record: Option<u64>,
    /// A misframed record was found: the stream ends in this error.
    failed: Option<String>,
}

/// Bytes of the DBN prefix: `DBN`, the version byte, the metadata length (u32).
const DBN_PREFIX: usize = 8;
/// Smallest record: its header.
const MIN_RECORD: u64 = 16;

impl<R> Counting<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            count: 0,
            prefix: Vec::with_capacity(DBN_PREFIX),
            next_record: None,
            failed: None,
        }
    }

    /// Walks the record lengths in `chunk` (stream offsets `count..count + chunk.len()`) and
    /// returns how many of its bytes lie before a misframed record (all of them if none).
    fn check(&mut self, chunk: &[u8]) -> usize {
        let start = self.count;
        let end = start + chunk.len() as u64;
        for &b in chunk
            .iter()
            .take(DBN_PREFIX.saturating_sub(self.prefix.len()))
        {
            self.prefix.push(b);
        }
        if self.next_record.is_none() {
            if self.prefix.len() >= 3 && !self.prefix.starts_with(b"DBN") {
                self.next_record = Some(0);
            } else if self.prefix.len() == DBN_PREFIX {
                let len = u32::from_le_bytes([
                    self.prefix[4],
                    self.prefix[5],
                    self.prefix[6],
                    self.prefix[7],
                ]);
                self.next_record = Some(DBN_PREFIX as u64 + u64::from(len));
            }
        }
        while let Some(at) = self.next_record.filter(|&at| at < end) {
            let byte = if at < start {
                // Only the prefix can lie behind the chunk (a fragment told apart late).
                self.prefix.get(at as usize).copied()
            } else {
                chunk.get((at - start) as usize).copied()
            };
            let Some(words) = byte else { break };
            let len = u64::from(words) * 4;
            if len < MIN_RECORD || !len.is_multiple_of(8) {
                self.failed = Some(format!(
                    "record at byte {at} is {len} bytes long (records are whole 8-byte words, \
                     at least {MIN_RECORD})"
                ));
                return at.saturating_sub(start) as usize;
            }
            self.next_record = Some(at + len);
        }
        chunk.len()
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                why.clone(),
            ));
        }
        let n = self.inner.read(buf)?;
        let good = self.check(&buf[..n]);
        if good == 0 && self.failed.is_some() {
            return self.read(buf);
        }
        self.count += good as u64;
        Ok(good)
    }
}

type Reader = BufReader<Counting<DynReader<'static, BufReader<File>>>>;

enum Dec {
    Dbn(Box<Decoder<Reader>>),
    Fragment(Box<RecordDecoder<Reader>>),
}

impl Dec {
    fn decode_ref(&mut self) -> dbn::Result<Option<RecordRef<'_>>> {
        match self {
            Dec::Dbn(d) => d.decode_ref(),
            Dec::Fragment(d) => d.decode_ref(),
        }
    }

    fn reader(&self) -> &Reader {
        match self {
            Dec::Dbn(d) => d.get_ref(),
            Dec::Fragment(d) => d.get_ref(),
        }
    }
}

/// An open capture.
pub struct Capture {
    path: PathBuf,
    metadata: Option<Metadata>,
    decoder: Dec,
    records: u64,
    /// Metadata plus every record decoded so far, in bytes.
    decoded_bytes: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("path", &self.path)
            .field("records", &self.records)
            .finish()
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> CaptureError {
    CaptureError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The DBN version a fragment's name declares (`*.v1.dbn.frag`), else the current version.
fn fragment_version(path: &Path) -> u8 {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (1..=dbn::DBN_VERSION)
        .find(|v| name.contains(&format!(".v{v}.")))
        .unwrap_or(dbn::DBN_VERSION)
}

impl Capture {
    /// Opens a capture. Compression is detected from the content; a file without the DBN
    /// prefix is accepted only when its name marks it as a fragment (`.frag`).
    ///
    /// # Errors
    /// A missing or unreadable file, an empty file, a file that is not DBN, a DBN version newer
    /// than this build reads, or corrupt metadata.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let io = |source| CaptureError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let inner = DynReader::inferred_with_buffer(BufReader::new(file))
            .map_err(|e| invalid(path, format!("cannot read: {e}")))?;
        let mut reader = BufReader::with_capacity(1 << 16, Counting::new(inner));
        let head = reader.fill_buf().map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => invalid(path, e.to_string()),
            _ => io(e),
        })?;
        if head.is_empty() {
            return Err(invalid(path, "empty file"));
        }
        let meta_len = if head.starts_with(b"DBN") && head.len() >= 8 {
            8 + u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]))
        } else {
            0
        };
        if meta_len > MAX_METADATA {
            // The decoder allocates the declared length before reading it.
            return Err(invalid(
                path,
                format!("DBN metadata of {meta_len} bytes (at most {MAX_METADATA} accepted)"),
            ));
        }
        let (metadata, decoder) = if head.starts_with(b"DBN") {
            let decoder = Decoder::with_upgrade_policy(reader, VersionUpgradePolicy::AsIs)
                .map_err(|e| invalid(path, format!("bad DBN metadata: {e}")))?;
            // The decoder takes a zero symbol width; the encoder (which writes the ring's
            // metadata) underflows on it.
            if decoder.metadata().symbol_cstr_len == 0 {
                return Err(invalid(path, "bad DBN metadata: symbol_cstr_len is 0"));
            }
            (
                Some(decoder.metadata().clone()),
                Dec::Dbn(Box::new(decoder)),
            )
        } else if path.to_string_lossy().contains(".frag") {
            let version = fragment_version(path);
            let decoder =
                RecordDecoder::with_version(reader, version, VersionUpgradePolicy::AsIs, false)
                    .map_err(|e| invalid(path, e.to_string()))?;
            (None, Dec::Fragment(Box::new(decoder)))
        } else {
            return Err(invalid(
                path,
                "not a DBN file: it does not start with \"DBN\" (metadata-less fragments must be named *.frag*)",
            ));
        };
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            decoder,
            records: 0,
            decoded_bytes: meta_len,
        })
    }

    /// The capture's metadata; `None` for a fragment.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records decoded so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Hands every remaining record, exactly as stored, to `f` until it breaks or the file ends.
    ///
    /// # Errors
    /// A truncated or corrupt record, or a record type this build does not know.
    pub fn visit(
        &mut self,
        mut f: impl FnMut(RecordRef<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, CaptureError> {
        loop {
            let rec = match self.decoder.decode_ref() {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    return Err(invalid(
                        &self.path,
                        format!("record {}: {e}", self.records + 1),
                    ));
                }
            };
            let rtype = match rec.rtype() {
                Ok(rtype) => rtype,
                Err(_) => {
                    let reason = format!(
                        "record {}: unknown record type {:#04x}",
                        self.records + 1,
                        rec.header().rtype
                    );
                    return Err(invalid(&self.path, reason));
                }
            };
            let Some(min_len) = min_record_len(rtype) else {
                let reason = format!(
                    "record {}: {rtype:?} records (rtype {:#04x}) are not supported",
                    self.records + 1,
                    rec.header().rtype
                );
                return Err(invalid(&self.path, reason));
            };
            if rec.record_size() < min_len {
                let reason = format!(
                    "record {}: a {rtype:?} record of {} bytes is shorter than its layout \
                     ({min_len} bytes)",
                    self.records + 1,
                    rec.record_size(),
                );
                return Err(invalid(&self.path, reason));
            }
            self.records += 1;
            self.decoded_bytes += rec.record_size() as u64;
            if f(rec).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        // The decoder treats a partial trailing record as the end; a capture that stops
        // mid-record is truncated, and saying so is the point.
        let reader = self.decoder.reader();
        let pulled = reader.get_ref().count - reader.buffer().len() as u64;
        if pulled != self.decoded_bytes {
            return Err(invalid(
                &self.path,
                format!(
                    "truncated after {} records (a partial record follows)",
                    self.records
                ),
            ));
        }
        Ok(ControlFlow::Continue(()))
    }
}

/// The shortest record of type `rtype` in any DBN version: the layout `dbn` reads it as (through
/// `RecordRef::get`, which panics on anything shorter) when the record is that short. `None` for
/// a type `dbn` cannot read back: it takes TBBO records (rtype 0xC5) as `Mbp1Msg`, which accepts
/// only MBP-1's rtype, and panics (TBBO data is normally stored with MBP-1's rtype).
fn min_record_len(rtype: RType) -> Option<usize> {
    use dbn::v1;
    use std::mem::size_of;
    Some(match rtype {
        RType::Tbbo => return None,
        RType::Mbp0 => size_of::<dbn::TradeMsg>(),
        RType::Mbp1 => size_of::<dbn::Mbp1Msg>(),
        RType::Mbp10 => size_of::<dbn::Mbp10Msg>(),
        #[allow(deprecated)]
        RType::OhlcvDeprecated
        | RType::Ohlcv1S
        | RType::Ohlcv1M
        | RType::Ohlcv1H
        | RType::Ohlcv1D
        | RType::OhlcvEod => size_of::<dbn::OhlcvMsg>(),
        RType::Imbalance => size_of::<dbn::ImbalanceMsg>(),
        RType::Status => size_of::<dbn::StatusMsg>(),
        RType::InstrumentDef => size_of::<v1::InstrumentDefMsg>(),
        RType::SymbolMapping => size_of::<v1::SymbolMappingMsg>(),
        RType::Error => size_of::<v1::ErrorMsg>(),
        RType::System => size_of::<v1::SystemMsg>(),
        RType::Statistics => size_of::<v1::StatMsg>(),
        RType::Mbo => size_of::<dbn::MboMsg>(),
        RType::Cmbp1 | RType::Tcbbo => size_of::<dbn::Cmbp1Msg>(),
        RType::Bbo1S | RType::Bbo1M => size_of::<dbn::BboMsg>(),
        RType::Cbbo1S | RType::Cbbo1M => size_of::<dbn::CbboMsg>(),
    })
}

/// Metadata describing the concatenation of `captures` (in order), for the ring's metadata area
/// and for files recorded from it.
///
/// # Errors
/// Captures of different DBN versions or incompatible metadata (dataset, schema, symbology).
pub fn stream_metadata(captures: &[Capture]) -> Result<Metadata, CaptureError> {
    let mut with_meta = captures
        .iter()
        .filter_map(|c| c.metadata().map(|m| (c.path(), m)));
    let Some((first_path, first)) = with_meta.next() else {
        // Only fragments: describe them as well as we can.
        let version = captures
            .first()
            .map_or(dbn::DBN_VERSION, |c| fragment_version(c.path()));
        return Ok(Metadata::builder()
            .version(version)
            .dataset(String::new())
            .schema(None)
            .start(0)
            .stype_in(None)
            .stype_out(SType::InstrumentId)
            .build());
    };
    let mut rest = Vec::new();
    for (path, meta) in with_meta {
        if meta.version != first.version {
            return Err(invalid(
                path,
                format!(
                    "DBN version {} differs from version {} of {}; replay them separately",
                    meta.version,
                    first.version,
                    first_path.display()
                ),
            ));
        }
        rest.push(meta.clone());
    }
    first
        .clone()
        .merge(rest)
        .map_err(|e| invalid(first_path, format!("cannot merge metadata: {e}")))
}

/// Encodes metadata as DBN bytes.
///
/// # Errors
/// Metadata the encoder refuses (e.g. an unsupported version).
pub fn encode_metadata(metadata: &Metadata) -> Result<Vec<u8>, dbn::Error> {
    let mut out = Vec::new();
    dbn::encode::dbn::MetadataEncoder::new(&mut out).encode(metadata)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(path: &Path) -> Result<u64, CaptureError> {
        let mut capture = Capture::open(path)?;
        let mut n = 0;
        let flow = capture.visit(|_| {
            n += 1;
            ControlFlow::Continue(())
        })?;
        assert!(flow.is_continue());
        Ok(n)
    }

    /// Writes a synthetic DBN capture of three MBO records (56 bytes each) to `path`; returns
    /// its bytes and the length of its metadata (where the first record starts).
    fn three_mbo_records(path: &Path) -> (Vec<u8>, usize) {
        let cfg = crate::synth::SynthConfig {
            events: 3,
            instruments: 1,
            ..Default::default()
        };
        crate::synth::write_capture(&cfg, path).unwrap();
        let bytes = std::fs::read(path).unwrap();
        let meta_len = 8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        (bytes, meta_len)
    }

    /// A synthetic capture of three one-word-aligned records, cut at every length: only whole
    /// records pass, everything else is an error naming the truncation.
    #[test]
    fn truncation_is_an_error_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.dbn");
        let (bytes, meta_len) = three_mbo_records(&full);
        assert_eq!(count(&full).unwrap(), 3);
        for cut in meta_len..bytes.len() {
            let p = dir.path().join("cut.dbn");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let whole = (cut - meta_len).is_multiple_of(56);
            match count(&p) {
                Ok(n) => assert!(
                    whole && n == ((cut - meta_len) / 56) as u64,
                    "cut {cut} passed with {n}"
                ),
                Err(e) => assert!(
                    !whole && e.to_string().contains("truncated"),
                    "cut {cut}: {e}"
                ),
            }
        }
    }

    /// Found by the `dbn_capture` fuzz target: a record whose length is not a whole number of
    /// 8-byte words puts every later record off alignment, and the decoder built misaligned
    /// record references from them (a debug assertion, undefined behaviour without it). The
    /// records before it are handed out; then the capture is refused, as a DBN file and as a
    /// fragment, compressed or not.
    #[test]
    fn misframed_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.dbn");
        let (mut bytes, meta_len) = three_mbo_records(&full);
        let fragment = bytes[meta_len..].to_vec();
        for (i, words) in [(1, 13u8), (1, 2), (0, 0)] {
            let at = meta_len + 56 * i;
            bytes[at] = words;
            let mut cases = vec![("bad.dbn", bytes.clone())];
            let mut frag = fragment.clone();
            frag[56 * i] = words;
            cases.push(("bad.dbn.frag", frag));
            cases.push(("bad.dbn.zst", zstd::encode_all(&bytes[..], 1).unwrap()));
            for (name, data) in cases {
                let p = dir.path().join(name);
                std::fs::write(&p, data).unwrap();
                let mut seen = 0;
                let result = Capture::open(&p).and_then(|mut c| {
                    c.visit(|_| {
                        seen += 1;
                        ControlFlow::Continue(())
                    })
                });
                let err = result.expect_err(name).to_string();
                assert!(err.contains("8-byte words"), "{name}: {err}");
                assert_eq!(seen, i, "{name}: records before the bad one");
            }
            bytes[at] = 14;
        }
    }

    /// Found by the `dbn_capture` fuzz target: an MBO record of 48 bytes (whole words, but
    /// shorter than the 56-byte layout) made `dbn` panic when replay took its index timestamp.
    #[test]
    fn record_shorter_than_its_layout_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.dbn");
        let (mut bytes, meta_len) = three_mbo_records(&path);
        bytes[meta_len + 56] = 12;
        std::fs::write(&path, &bytes).unwrap();
        let mut capture = Capture::open(&path).unwrap();
        let mut stamps = Vec::new();
        let err = capture
            .visit(|rec| {
                stamps.push(rec.raw_index_ts());
                ControlFlow::Continue(())
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 2") && err.contains("shorter"), "{err}");
        assert_eq!(stamps.len(), 1);

        // Also found by fuzzing: `dbn` panics taking the index timestamp of a TBBO-typed record.
        bytes[meta_len + 56] = 20;
        bytes[meta_len + 57] = 0xC5;
        std::fs::write(&path, &bytes).unwrap();
        let mut capture = Capture::open(&path).unwrap();
        let mut stamps = Vec::new();
        let err = capture
            .visit(|rec| {
                stamps.push(rec.raw_index_ts());
                ControlFlow::Continue(())
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 2") && err.contains("not supported"),
            "{err}"
        );
        assert_eq!(stamps.len(), 1);
    }

    /// Found by the `dbn_capture` fuzz target: a header declaring 4 GiB of metadata made the
    /// decoder allocate it before reading a byte of it.
    #[test]
    fn huge_metadata_length_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.dbn");
        let mut bytes = b"DBN\x03".to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &bytes).unwrap();
        let err = Capture::open(&path).unwrap_err().to_string();
        assert!(err.contains("metadata of 4294967303 bytes"), "{err}");
    }

    /// Found by the `dbn_capture` fuzz target (the input is kept as
    /// `tests/data/zero-symbol-width.dbn`): metadata with a symbol width of 0 and symbol
    /// mappings decodes, and encoding it for the ring underflowed.
    #[test]
    fn zero_symbol_width_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zero.dbn");
        let bytes = include_bytes!("../tests/data/zero-symbol-width.dbn");
        std::fs::write(&path, bytes).unwrap();
        let err = Capture::open(&path).unwrap_err().to_string();
        assert!(err.contains("symbol_cstr_len is 0"), "{err}");
    }

    #[test]
    fn non_dbn_and_empty_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.dbn");
        std::fs::write(&text, "hello, this is not market data").unwrap();
        assert!(
            count(&text)
                .unwrap_err()
                .to_string()
                .contains("not a DBN file")
        );
        let empty = dir.path().join("empty.dbn");
        std::fs::write(&empty, "").unwrap();
        assert!(
            count(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty file")
        );
        let missing = dir.path().join("missing.dbn");
        assert!(matches!(count(&missing), Err(CaptureError::Io { .. })));
    }
}
