//! A scan of an ONNX model's stored numbers for NaN and infinities.
//!
//! ONNX Runtime does not reliably turn non-finite weights into non-finite outputs: with 1.31.1,
//! a NaN in an LSTM's recurrent weights vanishes into a plausible-looking forecast (the
//! `bad_nan_weights.onnx` fixture loads and steps with finite outputs in Python onnxruntime).
//! The weights are therefore checked where they are stored, by walking
//! the protobuf wire format of the model bytes (already accepted by ONNX Runtime) far enough to
//! reach every tensor: graph initializers and sparse initializers, tensors and float attributes
//! of nodes (e.g. `Constant`), subgraphs, and model-local functions.
//!
//! Checked element types: float (1), float16 (10), double (11), bfloat16 (16), in `float_data`,
//! `double_data`, `int32_data` (16-bit types) and `raw_data`. Tensors stored outside the file
//! (external data) are not reachable from memory and ONNX Runtime does not load them from bytes.
//!
//! The reader trusts nothing: every length is bounds-checked and nesting is capped, so corrupt
//! bytes give an error, never a panic or unbounded recursion.

use std::fmt;

const MAX_DEPTH: usize = 32;

const DT_FLOAT: u64 = 1;
const DT_FLOAT16: u64 = 10;
const DT_DOUBLE: u64 = 11;
const DT_BFLOAT16: u64 = 16;

/// The first non-finite stored number found.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    /// Which tensor or attribute holds it (`initializer R`, `attribute clip`, ...).
    pub location: String,
    /// Element index within that tensor or attribute list.
    pub index: usize,
    /// The value, widened to f64 (NaN, +inf or -inf).
    pub value: f64,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} element {} is {}",
            self.location, self.index, self.value
        )
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("varint runs past the end")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "field of {n} bytes at offset {} runs past the end ({} bytes)",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(self.take(8)?.try_into().map_err(|_| "fixed64")?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflows usize")?;
                Wire::Bytes(self.take(len)?)
            }
            5 => Wire::Fixed32(self.take(4)?.try_into().map_err(|_| "fixed32")?),
            t => return Err(format!("unsupported wire type {t} for field {number}")),
        };
        Ok(Some((number, wire)))
    }
}

/// Scans model bytes; `Ok(None)` when every stored number is finite.
///
/// # Errors
/// A description of the first malformed field.
pub fn first_non_finite(model: &[u8]) -> Result<Option<NonFinite>, String> {
    let mut r = Reader::new(model);
    while let Some((number, wire)) = r.field()? {
        let found = match (number, wire) {
            (7, Wire::Bytes(b)) => scan_graph(b, 0)?,
            (25, Wire::Bytes(b)) => scan_function(b, 0)?,
            _ => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn deeper(depth: usize) -> Result<usize, String> {
    if depth >= MAX_DEPTH {
        Err(format!("subgraphs nested deeper than {MAX_DEPTH}"))
    } else {
        Ok(depth + 1)
    }
}

fn scan_graph(b: &[u8], depth: usize) -> Result<Option<NonFinite>, String> {
    let depth = deeper(depth)?;
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        let found = match (number, wire) {
            (1, Wire::Bytes(n)) => scan_node(n, depth)?,
            (5, Wire::Bytes(t)) => scan_tensor(t, "initializer")?,
            (15, Wire::Bytes(s)) => scan_sparse(s, "sparse initializer")?,
            _ => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn scan_function(b: &[u8], depth: usize) -> Result<Option<NonFinite>, String> {
    let depth = deeper(depth)?;
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        let found = match (number, wire) {
            (7, Wire::Bytes(n)) => scan_node(n, depth)?,
            (11, Wire::Bytes(a)) => scan_attribute(a, depth)?,
            _ => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn scan_node(b: &[u8], depth: usize) -> Result<Option<NonFinite>, String> {
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        if let (5, Wire::Bytes(a)) = (number, wire)
            && let Some(found) = scan_attribute(a, depth)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn scan_attribute(b: &[u8], depth: usize) -> Result<Option<NonFinite>, String> {
    // The name may come after the values; find it first so that findings can be named.
    let mut name = String::new();
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        if let (1, Wire::Bytes(n)) = (number, wire) {
            name = String::from_utf8_lossy(n).into_owned();
        }
    }
    let what = format!("attribute `{name}`");
    let mut floats_seen = 0usize;
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        let found = match (number, wire) {
            (2, Wire::Fixed32(v)) => check_f32(&what, 0, f32::from_le_bytes(v)),
            (7, Wire::Fixed32(v)) => {
                floats_seen += 1;
                check_f32(&what, floats_seen - 1, f32::from_le_bytes(v))
            }
            (7, Wire::Bytes(p)) => {
                let found = scan_f32_bytes(&what, floats_seen, p)?;
                floats_seen += p.len() / 4;
                found
            }
            (5 | 10, Wire::Bytes(t)) => scan_tensor(t, &what)?,
            (22 | 23, Wire::Bytes(s)) => scan_sparse(s, &what)?,
            (6 | 11, Wire::Bytes(g)) => scan_graph(g, depth)?,
            _ => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn scan_sparse(b: &[u8], what: &str) -> Result<Option<NonFinite>, String> {
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        if let (1, Wire::Bytes(t)) = (number, wire)
            && let Some(found) = scan_tensor(t, what)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn check_f32(what: &str, index: usize, v: f32) -> Option<NonFinite> {
    (!v.is_finite()).then(|| NonFinite {
        location: what.to_string(),
        index,
        value: f64::from(v),
    })
}

fn check_f64(what: &str, index: usize, v: f64) -> Option<NonFinite> {
    (!v.is_finite()).then(|| NonFinite {
        location: what.to_string(),
        index,
        value: v,
    })
}

/// A 16-bit float (IEEE half or bfloat16) is non-finite when all its exponent bits are set.
fn check_16(what: &str, index: usize, bits: u16, exponent_mask: u16) -> Option<NonFinite> {
    (bits & exponent_mask == exponent_mask).then(|| NonFinite {
        location: what.to_string(),
        index,
        value: if bits & !(exponent_mask | 0x8000) != 0 {
            f64::NAN
        } else if bits & 0x8000 != 0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        },
    })
}

fn scan_f32_bytes(what: &str, first: usize, p: &[u8]) -> Result<Option<NonFinite>, String> {
    if !p.len().is_multiple_of(4) {
        return Err(format!("{what}: packed floats of {} bytes", p.len()));
    }
    Ok(p.chunks_exact(4).enumerate().find_map(|(i, c)| {
        check_f32(
            what,
            first + i,
            f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
        )
    }))
}

fn scan_tensor(b: &[u8], kind: &str) -> Result<Option<NonFinite>, String> {
    let mut data_type = 0u64;
    let mut name = String::new();
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        match (number, wire) {
            (2, Wire::Varint(v)) => data_type = v,
            (8, Wire::Bytes(n)) => name = String::from_utf8_lossy(n).into_owned(),
            _ => {}
        }
    }
    let what = if name.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} `{name}`")
    };
    let mask16 = match data_type {
        DT_FLOAT16 => Some(0x7c00u16),
        DT_BFLOAT16 => Some(0x7f80u16),
        _ => None,
    };
    let (mut n_float, mut n_double, mut n_int32) = (0usize, 0usize, 0usize);
    let mut r = Reader::new(b);
    while let Some((number, wire)) = r.field()? {
        let found = match (number, wire) {
            (4, Wire::Fixed32(v)) => {
                n_float += 1;
                check_f32(&what, n_float - 1, f32::from_le_bytes(v))
            }
            (4, Wire::Bytes(p)) => {
                let found = scan_f32_bytes(&what, n_float, p)?;
                n_float += p.len() / 4;
                found
            }
            (10, Wire::Fixed64(v)) => {
                n_double += 1;
                check_f64(&what, n_double - 1, f64::from_le_bytes(v))
            }
            (10, Wire::Bytes(p)) => {
                if !p.len().is_multiple_of(8) {
                    return Err(format!("{what}: packed doubles of {} bytes", p.len()));
                }
                let found = p.chunks_exact(8).enumerate().find_map(|(i, c)| {
                    let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    check_f64(&what, n_double + i, v)
                });
                n_double += p.len() / 8;
                found
            }
            (5, wire) if mask16.is_some() => {
                let mask = mask16.unwrap_or(0);
                let mut found = None;
                match wire {
                    Wire::Varint(v) => {
                        found = check_16(&what, n_int32, (v & 0xffff) as u16, mask);
                        n_int32 += 1;
                    }
                    Wire::Bytes(p) => {
                        let mut pr = Reader::new(p);
                        while pr.pos < p.len() {
                            let v = pr.varint()?;
                            found = found
                                .or_else(|| check_16(&what, n_int32, (v & 0xffff) as u16, mask));
                            n_int32 += 1;
                        }
                    }
                    _ => {}
                }
                found
            }
            (9, Wire::Bytes(raw)) => match data_type {
                DT_FLOAT => scan_f32_bytes(&what, 0, raw)?,
                DT_DOUBLE => {
                    if !raw.len().is_multiple_of(8) {
                        return Err(format!("{what}: raw doubles of {} bytes", raw.len()));
                    }
                    raw.chunks_exact(8).enumerate().find_map(|(i, c)| {
                        check_f64(
                            &what,
                            i,
                            f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                        )
                    })
                }
                DT_FLOAT16 | DT_BFLOAT16 => {
                    if !raw.len().is_multiple_of(2) {
                        return Err(format!("{what}: raw 16-bit floats of {} bytes", raw.len()));
                    }
                    let mask = mask16.unwrap_or(0);
                    raw.chunks_exact(2).enumerate().find_map(|(i, c)| {
                        check_16(&what, i, u16::from_le_bytes([c[0], c[1]]), mask)
                    })
                }
                _ => None,
            },
            _ => None,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: u64, wire: u64) -> Vec<u8> {
        varint(field << 3 | wire)
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, body: &[u8]) -> Vec<u8> {
        let mut out = key(field, 2);
        out.extend(varint(body.len() as u64));
        out.extend_from_slice(body);
        out
    }

    fn tensor(name: &str, data_type: u64, raw: Option<&[u8]>, floats: &[f32]) -> Vec<u8> {
        let mut t = key(2, 0);
        t.extend(varint(data_type));
        t.extend(bytes_field(8, name.as_bytes()));
        if let Some(raw) = raw {
            t.extend(bytes_field(9, raw));
        }
        if !floats.is_empty() {
            let packed: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
            t.extend(bytes_field(4, &packed));
        }
        t
    }

    fn model_with_initializer(t: &[u8]) -> Vec<u8> {
        bytes_field(7, &bytes_field(5, t))
    }

    #[test]
    fn finds_nan_in_raw_and_packed_floats() {
        let raw: Vec<u8> = [1.0f32, f32::NAN, 2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let m = model_with_initializer(&tensor("R", DT_FLOAT, Some(&raw), &[]));
        let found = first_non_finite(&m).unwrap().unwrap();
        assert_eq!(
            (found.location.as_str(), found.index),
            ("initializer `R`", 1)
        );
        assert!(found.value.is_nan());
        let m =
            model_with_initializer(&tensor("W", DT_FLOAT, None, &[0.5, 1.0, f32::NEG_INFINITY]));
        let found = first_non_finite(&m).unwrap().unwrap();
        assert_eq!((found.index, found.value), (2, f64::NEG_INFINITY));
        let m = model_with_initializer(&tensor("W", DT_FLOAT, None, &[0.5, 1.0]));
        assert_eq!(first_non_finite(&m).unwrap(), None);
    }

    #[test]
    fn finds_non_finite_doubles_and_16_bit_floats() {
        let raw: Vec<u8> = [0.0f64, f64::INFINITY]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let m = model_with_initializer(&tensor("D", DT_DOUBLE, Some(&raw), &[]));
        assert_eq!(first_non_finite(&m).unwrap().unwrap().index, 1);
        // half: 0x3c00 = 1.0, 0x7e00 = NaN; bfloat16: 0x3f80 = 1.0, 0xff80 = -inf
        let m = model_with_initializer(&tensor(
            "H",
            DT_FLOAT16,
            Some(&[0x00, 0x3c, 0x00, 0x7e]),
            &[],
        ));
        assert!(first_non_finite(&m).unwrap().unwrap().value.is_nan());
        let m = model_with_initializer(&tensor(
            "B",
            DT_BFLOAT16,
            Some(&[0x80, 0x3f, 0x80, 0xff]),
            &[],
        ));
        assert_eq!(
            first_non_finite(&m).unwrap().unwrap().value,
            f64::NEG_INFINITY
        );
        let m = model_with_initializer(&tensor(
            "B",
            DT_BFLOAT16,
            Some(&[0x80, 0x3f, 0x80, 0x3f]),
            &[],
        ));
        assert_eq!(first_non_finite(&m).unwrap(), None);
    }

    #[test]
    fn finds_nan_in_a_constant_node_attribute() {
        let mut attr = bytes_field(1, b"value");
        attr.extend(bytes_field(5, &tensor("", DT_FLOAT, None, &[f32::NAN])));
        let node = bytes_field(5, &attr);
        let m = bytes_field(7, &bytes_field(1, &node));
        let found = first_non_finite(&m).unwrap().unwrap();
        assert_eq!(found.location, "attribute `value`");
        let mut attr = bytes_field(1, b"clip");
        attr.extend(key(2, 5));
        attr.extend(f32::INFINITY.to_le_bytes());
        let m = bytes_field(7, &bytes_field(1, &bytes_field(5, &attr)));
        assert_eq!(
            first_non_finite(&m).unwrap().unwrap().location,
            "attribute `clip`"
        );
    }

    const MODEL: &[u8] = include_bytes!("../../fixtures/lstm/lstm_h32.onnx");

    #[test]
    fn committed_fixtures_scan_as_expected() {
        assert_eq!(first_non_finite(MODEL).unwrap(), None);
        let nan = include_bytes!("../../fixtures/lstm/bad_nan_weights.onnx");
        let found = first_non_finite(nan).unwrap().unwrap();
        assert_eq!(found.to_string(), "initializer `R` element 43 is NaN");
    }

    /// Every prefix and thousands of byte-flipped copies of a real model: errors or findings,
    /// never a panic.
    #[test]
    fn mangled_real_model_never_panics() {
        for cut in 0..MODEL.len() {
            let _ = first_non_finite(&MODEL[..cut]);
        }
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..3000 {
            let mut m = MODEL.to_vec();
            for _ in 0..1 + next() % 8 {
                let at = (next() % m.len() as u64) as usize;
                m[at] = next() as u8;
            }
            let _ = first_non_finite(&m);
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let raw: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let m = model_with_initializer(&tensor("R", DT_FLOAT, Some(&raw), &[]));
        for cut in 0..m.len() {
            let _ = first_non_finite(&m[..cut]);
        }
        assert!(first_non_finite(&[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(first_non_finite(&[0xff; 11]).is_err());
        // Deeply nested subgraphs stop at the cap.
        let mut g = Vec::new();
        for _ in 0..100 {
            let attr = bytes_field(6, &g);
            g = bytes_field(1, &bytes_field(5, &attr));
        }
        assert!(first_non_finite(&bytes_field(7, &g)).is_err());
    }
}
