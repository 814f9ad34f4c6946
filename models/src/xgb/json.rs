//! A strict JSON reader for XGBoost model files.
//!
//! Standard JSON (RFC 8259) plus the three non-standard number tokens XGBoost's own reader
//! accepts (`NaN`, `Infinity`, `-Infinity`), so that a model carrying them is refused by the
//! model checks with a message naming the node, not by the parser. Floating-point tokens are
//! parsed straight to `f32` (correctly rounded), as XGBoost does: parsing to `f64` first and
//! narrowing could round twice. Nesting is capped at [`MAX_DEPTH`]; every allocation is
//! bounded by the input length.

use super::XgbError;
use super::value::{MAX_DEPTH, Value, check_unique_keys};

/// Parses a whole document; trailing bytes other than whitespace are an error.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, XgbError> {
    let mut p = Parser { b: bytes, pos: 0 };
    // A UTF-8 byte order mark is tolerated.
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        p.pos = 3;
    }
    let v = p.value(0)?;
    p.ws();
    if p.pos != p.b.len() {
        return Err(p.err("trailing characters after the document"));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> XgbError {
        XgbError::Parse {
            format: "JSON",
            offset: self.pos,
            msg: msg.into(),
        }
    }

    fn eof(&self) -> XgbError {
        self.err("unexpected end of input (truncated file?)")
    }

    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Result<u8, XgbError> {
        self.b.get(self.pos).copied().ok_or_else(|| self.eof())
    }

    fn expect_word(&mut self, word: &[u8]) -> Result<(), XgbError> {
        let end = self.pos + word.len();
        match self.b.get(self.pos..end) {
            Some(s) if s == word => {
                self.pos = end;
                Ok(())
            }
            Some(_) => Err(self.err("invalid literal")),
            None => Err(self.eof()),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, XgbError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH}")));
        }
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => Ok(Value::Str(self.string()?)),
            b't' => self.expect_word(b"true").map(|()| Value::Bool(true)),
            b'f' => self.expect_word(b"false").map(|()| Value::Bool(false)),
            b'n' => self.expect_word(b"null").map(|()| Value::Null),
            b'N' => self.expect_word(b"NaN").map(|()| Value::Float(f32::NAN)),
            b'I' => self
                .expect_word(b"Infinity")
                .map(|()| Value::Float(f32::INFINITY)),
            b'-' if self.b.get(self.pos + 1) == Some(&b'I') => {
                self.pos += 1;
                self.expect_word(b"Infinity")
                    .map(|()| Value::Float(f32::NEG_INFINITY))
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.err("unexpected character")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, XgbError> {
        self.pos += 1; // '{'
        let mut fields = Vec::new();
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(Value::Object(fields));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return Err(self.err("expected a string key"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            let v = self.value(depth + 1)?;
            fields.push((key, v));
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
        check_unique_keys(&fields).map_err(|m| self.err(m))?;
        Ok(Value::Object(fields))
    }

    fn array(&mut self, depth: usize) -> Result<Value, XgbError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, XgbError> {
        let s = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.eof())?;
        let mut v = 0u32;
        for &c in s {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, XgbError> {
        self.pos += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.peek()?;
                    self.pos += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(self.err("unpaired surrogate in \\u escape"));
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("unpaired surrogate in \\u escape"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or_else(|| self.err("invalid \\u escape"))?
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1F => return Err(self.err("control character in string")),
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.b.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Value, XgbError> {
        let start = self.pos;
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n = self.digits();
        if n == 0 {
            return Err(if self.pos >= self.b.len() {
                self.eof()
            } else {
                self.err("expected a digit")
            });
        }
        if n > 1 && self.b[int_start] == b'0' {
            return Err(self.err("leading zero in number"));
        }
        let mut is_float = false;
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            is_float = true;
            if self.digits() == 0 {
                return Err(self.err("expected a digit after '.'"));
            }
        }
        if matches!(self.b.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            is_float = true;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("expected a digit in the exponent"));
            }
        }
        // The token is ASCII by construction.
        let text =
            std::str::from_utf8(&self.b[start..self.pos]).map_err(|_| self.err("bad number"))?;
        if is_float {
            text.parse::<f32>()
                .map(Value::Float)
                .map_err(|_| self.err("invalid number"))
        } else {
            text.parse::<i64>()
                .map(Value::Int)
                .map_err(|_| self.err("integer out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xgboost_shapes() {
        let v = parse(
            br#" {"a":[1,-2,5E-1,-1.25e+2,NaN,-Infinity],"b":"x\u00e9\n","c":true,"d":null} "#,
        )
        .unwrap();
        let Value::Object(f) = v else { panic!() };
        assert_eq!(f[0].0, "a");
        let Value::Array(a) = &f[0].1 else { panic!() };
        assert_eq!(a[0], Value::Int(1));
        assert_eq!(a[1], Value::Int(-2));
        assert_eq!(a[2], Value::Float(0.5));
        assert_eq!(a[3], Value::Float(-125.0));
        assert!(matches!(a[4], Value::Float(x) if x.is_nan()));
        assert_eq!(a[5], Value::Float(f32::NEG_INFINITY));
        assert_eq!(f[1].1, Value::Str("x\u{e9}\n".to_string()));
    }

    #[test]
    fn floats_parse_straight_to_f32() {
        // 1.00000005960464477539 lies exactly half-way between two f32 values after rounding
        // to f64 first; the direct parse must not double-round.
        let v = parse(b"1.000000059604644775390625000001").unwrap();
        assert_eq!(v, Value::Float(f32::from_bits(0x3f80_0001)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":",
            b"{\"a\":1",
            b"[1,]",
            b"[1 2]",
            b"01",
            b"1.",
            b"1e",
            b"\"abc",
            b"\"\\x\"",
            b"{\"a\":1,\"a\":2}",
            b"[1] x",
            b"tru",
            b"99999999999999999999",
            b"\"\\ud800\"",
        ] {
            assert!(
                matches!(parse(bad), Err(XgbError::Parse { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn caps_nesting() {
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(XgbError::Parse { .. })
        ));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
    }
}
