//! The control plane's request path without a socket: `answer_statuses` frames the bytes as one
//! connection's stream (request heads under limits, bodies by `Content-Length`, pipelining),
//! routes, authenticates and calls a stand-in API, as the poll loop does.
//!
//! Input: one byte of options (bit 0: small limits, so the size refusals are reachable; bit 1:
//! no API keys configured), then the bytes the client sends.
//!
//! Properties: no panic; every status is one the server documents; there are no more answers than
//! request heads in the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickpipe_pipeline::control::{
    ApiKeys, ControlApi, ControlConfig, ControlError, answer_statuses,
};

/// A key the seeds use.
const KEY: &str = "fuzz-key-0123456789abcdef";

struct Api;

impl ControlApi for Api {
    fn health(&self) -> (u16, String) {
        (200, "{\"status\":\"ok\"}".into())
    }

    fn metrics(&self) -> String {
        "tickpipe_up 1".into()
    }

    fn promote(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError> {
        match model {
            "missing" => Err(ControlError::NotFound(model.into())),
            "bad" => Err(ControlError::Unprocessable(model.into())),
            _ => Ok(format!(
                "{{\"model\":\"{model}\",\"body_bytes\":{}}}",
                body.len()
            )),
        }
    }

    fn kill_switch(&mut self, engage: bool, reason: &str) -> Result<String, ControlError> {
        if !engage && reason.is_empty() {
            return Err(ControlError::Conflict("no reason".into()));
        }
        Ok(format!("{{\"engaged\":{engage}}}"))
    }
}

const DOCUMENTED: [u16; 16] = [
    200, 400, 401, 403, 404, 405, 408, 409, 411, 413, 422, 429, 431, 500, 501, 503,
];

fuzz_target!(|data: &[u8]| {
    let [options, bytes @ ..] = data else {
        return;
    };
    let mut config = ControlConfig {
        api_keys_env: None,
        ..ControlConfig::default()
    };
    if options & 1 != 0 {
        config.max_header_bytes = 128;
        config.max_body_bytes = 64;
    }
    let keys = if options & 2 != 0 {
        ApiKeys::none()
    } else {
        match ApiKeys::from_keys([KEY]) {
            Ok(k) => k,
            Err(e) => panic!("the fuzz key is refused: {e}"),
        }
    };
    let statuses = match answer_statuses(&config, keys, Api, bytes) {
        Ok(s) => s,
        Err(e) => panic!("the fuzz config is refused: {e}"),
    };
    for s in &statuses {
        assert!(DOCUMENTED.contains(s), "undocumented status {s}");
    }
    // Every answered request but a refused last one ends its head with a blank line.
    let line_ends = bytes.iter().filter(|&&b| b == b'\n').count();
    assert!(
        statuses.len() <= line_ends / 2 + 1,
        "{} answers",
        statuses.len()
    );
});
