//! What `tickpipe run`'s control plane serves: the health monitor's rollup, Prometheus metrics,
//! model promotion from the registry into the running engine, and the kill switch.

use std::path::PathBuf;

use serde::Deserialize;
use tickpipe_models::registry::{Registry, RegistryError};
use tickpipe_pipeline::control::{ControlApi, ControlError};
use tickpipe_pipeline::health::Status;
use tickpipe_pipeline::health::monitor::HealthControl;
use tickpipe_pipeline::health::page::{prometheus, to_json};
use tickpipe_pipeline::swap::ModelControl;

/// The engine behind the control plane.
#[derive(Debug)]
pub struct EngineApi {
    health: HealthControl,
    models: Option<ModelControl>,
    registry: PathBuf,
}

impl EngineApi {
    /// An API over a running engine's health monitor and model control, promoting from the
    /// registry at `registry`.
    pub fn new(health: HealthControl, models: Option<ModelControl>, registry: PathBuf) -> Self {
        Self {
            health,
            models,
            registry,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    version: String,
}

fn registry_error(e: RegistryError) -> ControlError {
    match e {
        RegistryError::UnknownModel(_) | RegistryError::UnknownVersion { .. } => {
            ControlError::NotFound(e.to_string())
        }
        RegistryError::NoRegistry(_) => ControlError::Internal(e.to_string()),
        RegistryError::BadName { .. } => ControlError::BadRequest(e.to_string()),
        other => ControlError::Unprocessable(other.to_string()),
    }
}

impl ControlApi for EngineApi {
    fn health(&self) -> (u16, String) {
        let s = self.health.snapshot();
        let code = if s.status == Status::Ok { 200 } else { 503 };
        (code, to_json(&s).to_string())
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus(&self.health.snapshot(), &mut out);
        out
    }

    fn promote(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError> {
        let body: PromoteBody = serde_json::from_slice(body).map_err(|e| {
            ControlError::BadRequest(format!("expected {{\"version\":\"v<N>\"}}: {e}"))
        })?;
        let control = self
            .models
            .as_mut()
            .ok_or_else(|| ControlError::Conflict("this engine takes no model updates".into()))?;
        // What earlier swaps replaced is dropped here, on the control thread.
        control.collect();
        let reg = Registry::open(&self.registry).map_err(registry_error)?;
        let validated = crate::registry_cmd::with_expected(&reg, model, &body.version, |exp| {
            reg.promote(model, &body.version, exp)
        })
        .map_err(|e| match e.downcast::<RegistryError>() {
            Ok(r) => registry_error(r),
            Err(e) => ControlError::Unprocessable(format!("{e:#}")),
        })?;
        let summary = format!(
            "{} {}: {} golden rows within {:e}",
            validated.manifest.name,
            validated.manifest.model_version,
            validated.report.rows,
            validated.manifest.tolerance
        );
        control.swap_validated(validated).map_err(|e| {
            ControlError::Conflict(format!("promoted in the registry, not swapped: {e}"))
        })?;
        eprintln!("tickpipe run: promoted {summary}");
        Ok(serde_json::json!({
            "promoted": model,
            "version": body.version,
            "detail": summary,
        })
        .to_string())
    }

    fn kill_switch(&mut self, engage: bool, reason: &str) -> Result<String, ControlError> {
        let gone = |_| ControlError::Internal("the health monitor is not running".into());
        let s = if engage {
            eprintln!("tickpipe run: kill switch engaged over the control plane: {reason}");
            self.health.engage().map_err(gone)?
        } else {
            match self.health.release().map_err(gone)? {
                Ok(s) => {
                    eprintln!(
                        "tickpipe run: kill switch released over the control plane: {reason}"
                    );
                    s
                }
                Err(refused) => return Err(ControlError::Conflict(refused.to_string())),
            }
        };
        Ok(serde_json::json!({
            "kill_switch": { "engaged": s.kill, "reasons": tickpipe_pipeline::health::kill_reason::names(s.kill_reasons) },
            "status": s.status,
        })
        .to_string())
    }
}
