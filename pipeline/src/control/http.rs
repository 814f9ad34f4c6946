//! HTTP/1.1 framing: parsing a request head under limits, and writing an answer.

use std::io::Write;

/// Most header fields in a request head; more is answered 431.
pub(crate) const MAX_HEADERS: usize = 64;

/// The request methods the routes know; anything else is answered 404 or 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Other,
}

/// What the server needs from a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    /// The path, query string removed.
    pub(crate) path: String,
    /// Bytes of the head, blank line included: the body starts here.
    pub(crate) head_len: usize,
    /// Body bytes that follow the head.
    pub(crate) content_length: usize,
    /// Whether the connection stays open after the answer.
    pub(crate) keep_alive: bool,
    /// `X-API-Key`, trimmed.
    pub(crate) api_key: Option<Vec<u8>>,
    /// `Expect: 100-continue`.
    pub(crate) expect_continue: bool,
}

/// A request that cannot be framed or is refused before its body is read. The connection is
/// closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FramingError {
    pub(crate) status: u16,
    pub(crate) message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> FramingError {
    FramingError {
        status,
        message: message.into(),
    }
}

/// The limits that apply while a request head is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) max_header_bytes: usize,
    pub(crate) max_body_bytes: usize,
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses the head at the start of `buf`. `Ok(None)` means more bytes are needed.
///
/// # Errors
/// The status to answer with: 400 (malformed, non-UTF-8 target, bad or conflicting
/// `Content-Length`, duplicate `X-API-Key`), 411 (`POST` without `Content-Length`), 413 (body over
/// the limit), 431 (head over the limit or too many fields), 501 (`Transfer-Encoding`).
pub(crate) fn parse_head(
    buf: &[u8],
    limits: HeadLimits,
) -> Result<Option<RequestHead>, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_header_bytes {
                return Err(refuse(431, "request head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many header fields"));
        }
        Err(e) => return Err(refuse(400, format!("malformed request: {e}"))),
    };
    if head_len > limits.max_header_bytes {
        return Err(refuse(431, "request head too large"));
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') {
        return Err(refuse(400, "request target must be an absolute path"));
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let http11 = req.version == Some(1);

    let mut content_length: Option<u64> = None;
    let mut connection_close = !http11;
    let mut api_key: Option<Vec<u8>> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| refuse(400, "bad Content-Length"))?;
            if content_length.is_some_and(|c| c != parsed) {
                return Err(refuse(400, "conflicting Content-Length headers"));
            }
            content_length = Some(parsed);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse(
                501,
                "Transfer-Encoding is not supported; send Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(value, "close") {
                connection_close = true;
            } else if has_token(value, "keep-alive") {
                connection_close = false;
            }
        } else if h.name.eq_ignore_ascii_case("x-api-key") {
            if api_key.is_some() {
                return Err(refuse(400, "duplicate X-API-Key header"));
            }
            api_key = Some(value.to_vec());
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let content_length = match (content_length, method) {
        (Some(n), _) => n,
        (None, Method::Post) => return Err(refuse(411, "POST needs Content-Length")),
        (None, _) => 0,
    };
    let content_length = usize::try_from(content_length)
        .ok()
        .filter(|&n| n <= limits.max_body_bytes)
        .ok_or_else(|| {
            refuse(
                413,
                format!("body larger than {} bytes", limits.max_body_bytes),
            )
        })?;
    Ok(Some(RequestHead {
        method,
        path,
        head_len,
        content_length,
        keep_alive: !connection_close,
        api_key,
        expect_continue,
    }))
}

/// The reason phrase of the status codes the server sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// An answer, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    /// `Allow` (405).
    pub(crate) allow: Option<&'static str>,
    /// `Retry-After` in seconds (429).
    pub(crate) retry_after: Option<u64>,
    /// Close the connection after this answer.
    pub(crate) close: bool,
}

/// `application/json`.
pub(crate) const JSON: &str = "application/json";
/// Prometheus' text exposition format.
pub(crate) const PROMETHEUS: &str = "text/plain; version=0.0.4";

impl Reply {
    /// A JSON answer.
    pub(crate) fn json(status: u16, body: String) -> Self {
        Reply {
            status,
            content_type: JSON,
            body,
            allow: None,
            retry_after: None,
            close: false,
        }
    }

    /// `{"error": message}`.
    pub(crate) fn error(status: u16, message: &str) -> Self {
        Reply::json(status, serde_json::json!({ "error": message }).to_string())
    }

    /// Writes status line, headers and body into `out` (cleared first).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            let _ = write!(out, "Allow: {allow}\r\n");
        }
        if let Some(secs) = self.retry_after {
            let _ = write!(out, "Retry-After: {secs}\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 256,
        max_body_bytes: 100,
    };

    fn parse(text: &[u8]) -> Result<Option<RequestHead>, FramingError> {
        parse_head(text, LIMITS)
    }

    fn status(text: &[u8]) -> u16 {
        parse(text).expect_err("refused").status
    }

    #[test]
    fn get_with_query_and_keep_alive() {
        let text = b"GET /health?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let head = parse(text).expect("ok").expect("complete");
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path, "/health");
        assert_eq!(head.head_len, text.len() - 4);
        assert_eq!(head.content_length, 0);
        assert!(head.keep_alive);
        assert_eq!(head.api_key, None);
    }

    #[test]
    fn connection_handling() {
        let h = |t: &[u8]| parse(t).expect("ok").expect("complete").keep_alive;
        assert!(!h(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!h(b"GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n"));
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(h(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn post_framing() {
        let head = parse(
            b"POST /kill-switch HTTP/1.1\r\nContent-Length: 12\r\nX-API-Key:  abc \r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.content_length, 12);
        assert_eq!(head.api_key.as_deref(), Some(&b"abc"[..]));
        assert!(head.expect_continue);
        assert_eq!(status(b"POST /x HTTP/1.1\r\n\r\n"), 411);
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status(
                b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nX-API-Key: a\r\nx-api-key: a\r\n\r\n"
            ),
            400
        );
        // Equal duplicates are accepted.
        let head = parse(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(head.content_length, 3);
    }

    #[test]
    fn malformed_and_oversized() {
        assert_eq!(status(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(status(b"GET /\xff\xfe HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"G\xc3\xa9T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/9.9\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://x/health HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(parse(b"GET /health HTTP/1.1\r\nHost:").expect("ok"), None);
        let mut big = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        big.resize(300, b'a');
        assert_eq!(status(&big), 431);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        let limits = HeadLimits {
            max_header_bytes: 8192,
            max_body_bytes: 0,
        };
        assert_eq!(parse_head(&many, limits).expect_err("refused").status, 431);
    }

    #[test]
    fn reply_bytes() {
        let mut out = Vec::new();
        let mut r = Reply::error(405, "use \"GET\"");
        r.allow = Some("GET");
        r.close = true;
        r.write_to(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        let body = r#"{"error":"use \"GET\""}"#;
        assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
        assert!(
            text.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{text}"
        );
    }
}
