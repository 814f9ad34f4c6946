//! SIGINT / SIGTERM as a flag the long-running commands poll between units of work.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Returns a flag that becomes true on SIGINT or SIGTERM.
///
/// # Errors
/// The handlers cannot be installed.
pub fn on_signal() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}
