//! What `tickpipe run`'s control plane serves: the health monitor's rollup, Prometheus metrics,
//! model promotion from the registry into the running engine (behind the shadow gate when one is
//! configured), shadow runs of candidate versions, and the kill switch.

use std::path::PathBuf;

use serde::Deserialize;
use tickpipe_models::registry::{Registry, RegistryError};
use tickpipe_pipeline::control::{ControlApi, ControlError};
use tickpipe_pipeline::health::Status;
use tickpipe_pipeline::health::monitor::HealthControl;
use tickpipe_pipeline::health::page::{prometheus, to_json};
use tickpipe_pipeline::shadow::ShadowControl;
use tickpipe_pipeline::swap::ModelControl;

/// The engine behind the control plane.
#[derive(Debug)]
pub struct EngineApi {
    health: HealthControl,
    models: Option<ModelControl>,
    shadow: Option<ShadowControl>,
    registry: PathBuf,
}

impl EngineApi {
    /// An API over a running engine's health monitor and model control, promoting from the
    /// registry at `registry`.
    pub fn new(health: HealthControl, models: Option<ModelControl>, registry: PathBuf) -> Self {
        Self {
            health,
            models,
            shadow: None,
            registry,
        }
    }

    /// Adds the engine's shadow lane: `POST /models/{name}/shadow`, `GET /models/shadow`, and
    /// its gate on every promotion.
    pub fn with_shadow(mut self, shadow: Option<ShadowControl>) -> Self {
        self.shadow = shadow;
        self
    }

    fn validated(
        &self,
        model: &str,
        version: &str,
        promote: bool,
    ) -> Result<tickpipe_models::registry::Validated, ControlError> {
        let reg = Registry::open(&self.registry).map_err(registry_error)?;
        crate::registry_cmd::with_expected(&reg, model, version, |exp| {
            if promote {
                reg.promote(model, version, exp)
            } else {
                reg.validate(model, version, exp)
            }
        })
        .map_err(|e| match e.downcast::<RegistryError>() {
            Ok(r) => registry_error(r),
            Err(e) => ControlError::Unprocessable(format!("{e:#}")),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    version: String,
}

/// `POST /models/{name}/shadow`: `{"version":"v2"}` starts (or replaces) a candidate,
/// `{"action":"stop"}` ends the run.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowBody {
    version: Option<String>,
    action: Option<String>,
}

const SHADOW_SHAPE: &str = r#"expected {"version":"v<N>"} or {"action":"stop"}"#;

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
        if self.models.is_none() {
            return Err(ControlError::Conflict(
                "this engine takes no model updates".into(),
            ));
        }
        // The gate, before the registry is touched: a refused promotion changes nothing.
        if let Some(shadow) = &mut self.shadow {
            shadow
                .may_promote(model, &body.version)
                .map_err(|why| ControlError::Conflict(format!("not promoted: {why}")))?;
        }
        let validated = self.validated(model, &body.version, true)?;
        let control = self
            .models
            .as_mut()
            .ok_or_else(|| ControlError::Conflict("this engine takes no model updates".into()))?;
        // What earlier swaps replaced is dropped here, on the control thread.
        control.collect();
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
        // A promoted candidate is live now: its shadow run ends with this report.
        let mut shadowed = serde_json::Value::Null;
        if let Some(shadow) = &mut self.shadow
            && let Some(r) = shadow.report()
            && r.name == model
            && r.version == body.version
        {
            shadowed = r.to_json(shadow.gate());
            shadow.stop().map_err(|e| {
                ControlError::Internal(format!("promoted; shadow not stopped: {e}"))
            })?;
        }
        Ok(serde_json::json!({
            "promoted": model,
            "version": body.version,
            "detail": summary,
            "shadow": shadowed,
        })
        .to_string())
    }

    fn shadow(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError> {
        let body: ShadowBody = serde_json::from_slice(body)
            .map_err(|e| ControlError::BadRequest(format!("{SHADOW_SHAPE}: {e}")))?;
        if self.shadow.is_none() {
            return Err(ControlError::NotFound(
                "this engine has no shadow lane ([shadow] enabled = true)".into(),
            ));
        }
        match (body.version, body.action.as_deref()) {
            (None, Some("stop")) => {
                let shadow = self.shadow.as_mut().expect("checked above");
                match shadow.report() {
                    None => return Err(ControlError::Conflict("no candidate is shadowing".into())),
                    Some(r) if r.name != model => {
                        return Err(ControlError::Conflict(format!(
                            "the candidate shadowing is {} {}, not {model}",
                            r.name, r.version
                        )));
                    }
                    Some(_) => {}
                }
                let r = shadow
                    .stop()
                    .map_err(|e| ControlError::Conflict(e.to_string()))?
                    .ok_or_else(|| ControlError::Conflict("no candidate is shadowing".into()))?;
                eprintln!("tickpipe run: shadow of {} {} stopped", r.name, r.version);
                let gate = shadow.gate().clone();
                Ok(serde_json::json!({ "stopped": r.to_json(&gate) }).to_string())
            }
            (Some(version), None | Some("start")) => {
                let validated = self.validated(model, &version, false)?;
                let kind = validated.manifest.kind;
                let shadow = self.shadow.as_mut().expect("checked above");
                shadow.start_validated(validated).map_err(|e| match e {
                    tickpipe_pipeline::shadow::ShadowError::Busy => {
                        ControlError::Conflict(e.to_string())
                    }
                    other => ControlError::Unprocessable(other.to_string()),
                })?;
                eprintln!("tickpipe run: shadowing {model} {version} ({kind})");
                Ok(serde_json::json!({ "shadowing": model, "version": version }).to_string())
            }
            _ => Err(ControlError::BadRequest(SHADOW_SHAPE.into())),
        }
    }

    fn shadow_report(&mut self) -> Result<String, ControlError> {
        let shadow = self.shadow.as_mut().ok_or_else(|| {
            ControlError::NotFound(
                "this engine has no shadow lane ([shadow] enabled = true)".into(),
            )
        })?;
        let gate = shadow.gate().clone();
        let gate_json = serde_json::json!({
            "min_time_s": gate.min_time.map(|d| d.as_secs_f64()),
            "min_vectors": gate.min_vectors,
            "min_agreement": gate.min_agreement,
            "max_score_diff": gate.max_score_diff,
        });
        Ok(match shadow.report() {
            Some(r) => serde_json::json!({ "shadow": r.to_json(&gate), "gate": gate_json }),
            None => serde_json::json!({ "shadow": null, "gate": gate_json }),
        }
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
