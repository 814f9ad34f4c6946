//! A strict, bounds-checked UBJSON (Universal Binary JSON, draft 12) reader for XGBoost's
//! binary model format (`.ubj`).
//!
//! The input is untrusted: every length is checked against the bytes that remain before
//! anything is allocated, nesting is capped at [`MAX_DEPTH`], and no input makes it panic.
//!
//! Accepted: the scalars `Z T F i U I l L d D C S`; objects (`{` … `}`, or with a `#` count);
//! arrays (`[` … `]`, with a `#` count, or typed with `$type#count`). Lengths and counts may
//! use any integer marker (XGBoost writes `L`). Multi-byte numbers are big-endian. Refused,
//! as XGBoost refuses them: high-precision numbers (`H`), the no-op marker (`N`), typed
//! objects.

use super::XgbError;
use super::value::{MAX_DEPTH, Value, check_unique_keys};

/// Parses a whole document; trailing bytes are an error.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, XgbError> {
    let mut r = Reader { b: bytes, pos: 0 };
    let marker = r.byte()?;
    let v = r.value(marker, 0)?;
    if r.pos != bytes.len() {
        return Err(r.err("trailing bytes after the document"));
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn err(&self, msg: impl Into<String>) -> XgbError {
        XgbError::Parse {
            format: "UBJSON",
            offset: self.pos,
            msg: msg.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], XgbError> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(format!(
                "unexpected end of input: {n} bytes needed, {} left (truncated file?)",
                self.b.len() - self.pos
            ))),
        }
    }

    fn array_n<const N: usize>(&mut self) -> Result<[u8; N], XgbError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, XgbError> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Result<u8, XgbError> {
        self.b
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err("unexpected end of input (truncated file?)"))
    }

    /// An integer payload after its marker, or `None` if the marker is not an integer type.
    fn int_of(&mut self, marker: u8) -> Result<Option<i64>, XgbError> {
        Ok(Some(match marker {
            b'i' => i64::from(i8::from_be_bytes(self.array_n()?)),
            b'U' => i64::from(self.byte()?),
            b'I' => i64::from(i16::from_be_bytes(self.array_n()?)),
            b'l' => i64::from(i32::from_be_bytes(self.array_n()?)),
            b'L' => i64::from_be_bytes(self.array_n()?),
            _ => return Ok(None),
        }))
    }

    /// A length or count: an integer marker and a non-negative value that fits in what is
    /// left of the input at `min_size` bytes per element (so a forged count cannot make the
    /// reader allocate more than the file could hold).
    fn length(&mut self, min_size: usize) -> Result<usize, XgbError> {
        let at = self.pos;
        let marker = self.byte()?;
        let n = self
            .int_of(marker)?
            .ok_or_else(|| self.err("expected an integer length"))?;
        let n = usize::try_from(n).map_err(|_| XgbError::Parse {
            format: "UBJSON",
            offset: at,
            msg: format!("negative length {n}"),
        })?;
        let left = self.b.len() - self.pos;
        if n.checked_mul(min_size.max(1))
            .is_none_or(|bytes| bytes > left)
        {
            return Err(XgbError::Parse {
                format: "UBJSON",
                offset: at,
                msg: format!("length {n} exceeds the {left} bytes left (truncated file?)"),
            });
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, XgbError> {
        let n = self.length(1)?;
        let at = self.pos;
        let s = self.take(n)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(XgbError::Parse {
                format: "UBJSON",
                offset: at,
                msg: "string is not valid UTF-8".to_string(),
            }),
        }
    }

    fn value(&mut self, marker: u8, depth: usize) -> Result<Value, XgbError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH}")));
        }
        if let Some(i) = self.int_of(marker)? {
            return Ok(Value::Int(i));
        }
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'd' => Value::Float(f32::from_be_bytes(self.array_n()?)),
            // XGBoost keeps numbers as f32; a double is narrowed the same way.
            b'D' => Value::Float(f64::from_be_bytes(self.array_n()?) as f32),
            b'C' => Value::Int(i64::from(self.byte()?)),
            b'S' => Value::Str(self.string()?),
            b'[' => self.array(depth)?,
            b'{' => self.object(depth)?,
            b'H' => return Err(self.err("high-precision numbers ('H') are not supported")),
            other => {
                self.pos -= 1;
                return Err(self.err(format!("unknown marker 0x{other:02x}")));
            }
        })
    }

    fn array(&mut self, depth: usize) -> Result<Value, XgbError> {
        match self.peek()? {
            b'$' => {
                self.pos += 1;
                let ty = self.byte()?;
                if self.byte()? != b'#' {
                    self.pos -= 1;
                    return Err(self.err("typed array without a '#' count"));
                }
                let size = match ty {
                    b'i' | b'U' | b'C' => 1,
                    b'I' => 2,
                    b'l' | b'd' => 4,
                    b'L' | b'D' => 8,
                    other => {
                        return Err(
                            self.err(format!("typed array of 0x{other:02x} is not supported"))
                        );
                    }
                };
                let n = self.length(size)?;
                let raw = self.take(n * size)?;
                Ok(match ty {
                    b'd' => Value::Floats(
                        raw.chunks_exact(4)
                            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                    b'D' => Value::Floats(
                        raw.chunks_exact(8)
                            .map(|c| {
                                let mut a = [0u8; 8];
                                a.copy_from_slice(c);
                                f64::from_be_bytes(a) as f32
                            })
                            .collect(),
                    ),
                    b'i' => Value::Ints(raw.iter().map(|&x| i64::from(x as i8)).collect()),
                    b'U' | b'C' => Value::Ints(raw.iter().map(|&x| i64::from(x)).collect()),
                    b'I' => Value::Ints(
                        raw.chunks_exact(2)
                            .map(|c| i64::from(i16::from_be_bytes([c[0], c[1]])))
                            .collect(),
                    ),
                    b'l' => Value::Ints(
                        raw.chunks_exact(4)
                            .map(|c| i64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                            .collect(),
                    ),
                    _ => Value::Ints(
                        raw.chunks_exact(8)
                            .map(|c| {
                                let mut a = [0u8; 8];
                                a.copy_from_slice(c);
                                i64::from_be_bytes(a)
                            })
                            .collect(),
                    ),
                })
            }
            b'#' => {
                self.pos += 1;
                // Each element takes at least its one-byte marker.
                let n = self.length(1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = self.byte()?;
                    items.push(self.value(m, depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            _ => {
                let mut items = Vec::new();
                loop {
                    let m = self.byte()?;
                    if m == b']' {
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value(m, depth + 1)?);
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, XgbError> {
        let mut fields = Vec::new();
        match self.peek()? {
            b'$' => return Err(self.err("typed objects are not supported")),
            b'#' => {
                self.pos += 1;
                // A key is at least a length marker, one length byte; a value one marker.
                let n = self.length(3)?;
                fields.reserve(n);
                for _ in 0..n {
                    let key = self.string()?;
                    let m = self.byte()?;
                    fields.push((key, self.value(m, depth + 1)?));
                }
            }
            _ => loop {
                if self.peek()? == b'}' {
                    self.pos += 1;
                    break;
                }
                let key = self.string()?;
                let m = self.byte()?;
                fields.push((key, self.value(m, depth + 1)?));
            },
        }
        check_unique_keys(&fields).map_err(|m| self.err(m))?;
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Vec<u8> {
        let mut v = vec![b'L'];
        v.extend_from_slice(&(s.len() as i64).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn sample() -> Vec<u8> {
        let mut b = vec![b'{'];
        b.extend(key("f"));
        b.extend([b'[', b'$', b'd', b'#', b'i', 2]);
        b.extend(0.5f32.to_be_bytes());
        b.extend((-2.0f32).to_be_bytes());
        b.extend(key("n"));
        b.extend([b'[', b'#', b'L']);
        b.extend(2i64.to_be_bytes());
        b.extend([b'i', 0xFF, b'S', b'i', 1, b'x']);
        b.extend(key("u"));
        b.extend([b'[', b'$', b'U', b'#', b'U', 3, 0, 1, 255]);
        b.extend(key("e"));
        b.extend([b'[', b'T', b'Z', b']']);
        b.push(b'}');
        b
    }

    #[test]
    fn reads_xgboost_shapes() {
        let v = parse(&sample()).unwrap();
        let Value::Object(f) = v else { panic!() };
        assert_eq!(f[0].1, Value::Floats(vec![0.5, -2.0]));
        assert_eq!(
            f[1].1,
            Value::Array(vec![Value::Int(-1), Value::Str("x".into())])
        );
        assert_eq!(f[2].1, Value::Ints(vec![0, 1, 255]));
        assert_eq!(f[3].1, Value::Array(vec![Value::Bool(true), Value::Null]));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample();
        for n in 0..b.len() {
            assert!(
                matches!(parse(&b[..n]), Err(XgbError::Parse { .. })),
                "prefix of {n} bytes"
            );
        }
    }

    #[test]
    fn forged_lengths_do_not_allocate() {
        // A typed array claiming 2^60 floats, and a negative string length.
        let mut b = vec![b'[', b'$', b'd', b'#', b'L'];
        b.extend((1i64 << 60).to_be_bytes());
        assert!(matches!(parse(&b), Err(XgbError::Parse { .. })));
        let b = [b'S', b'i', 0xFE, b'x'];
        assert!(matches!(parse(&b), Err(XgbError::Parse { .. })));
        let mut b = vec![b'[', b'#', b'L'];
        b.extend(i64::MAX.to_be_bytes());
        assert!(matches!(parse(&b), Err(XgbError::Parse { .. })));
    }

    #[test]
    fn caps_nesting_and_rejects_unknown_markers() {
        let deep = vec![b'['; 100_000];
        assert!(matches!(parse(&deep), Err(XgbError::Parse { .. })));
        for bad in [&b"N"[..], b"H", b"?", b"[$x#i\x01\x00", b"[$d", b"Z Z"] {
            assert!(matches!(parse(bad), Err(XgbError::Parse { .. })), "{bad:?}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: mutate the sample byte by byte.
        let base = sample();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = base.clone();
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
            let cut = ((x >> 40) as usize) % (b.len() + 1);
            let _ = parse(&b[..cut]);
        }
    }
}
