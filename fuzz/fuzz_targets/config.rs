//! The engine's TOML profile: `EngineConfig::from_toml` (parse and validate), the control
//! plane's own table (`ControlConfig::from_toml`), the API key sources (`ApiKeys::parse_file`,
//! `ApiKeys::parse_env_value`) and the duration syntax shared by all of them.
//!
//! Input: the text (invalid UTF-8 is read lossily, as a file would fail earlier).
//!
//! Properties: no panic; a profile that is accepted validates again, and its derived settings
//! (slow lane, feature engine, inference) can be computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickpipe_pipeline::EngineConfig;
use tickpipe_pipeline::config::parse_duration;
use tickpipe_pipeline::control::{ApiKeys, ControlConfig};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = EngineConfig::from_toml(&text) {
        if let Err(e) = cfg.validate() {
            panic!("an accepted profile fails validation: {e}");
        }
        let _ = cfg.effective_slow_lane();
        let _ = cfg.features.engine_config();
        let _ = cfg.models.inference(cfg.features.max_instruments);
    }
    let _ = ControlConfig::from_toml(&text);
    let _ = ApiKeys::parse_file(&text);
    let _ = ApiKeys::parse_env_value(&text);
    for line in text.lines().take(16) {
        let _ = parse_duration(line);
    }
});
