//! What `tickpipe run`'s control plane serves: the health monitor's rollup, Prometheus metrics,
//! model promotion from the registry into the running engine (behind the shadow gate when one is
//! configured), shadow runs of candidate versions, the kill switch, and (with
//! `--follow-registry`) following the registry's active versions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Registry name → the version serving, for the models loaded from the registry.
    live: BTreeMap<String, String>,
    /// Swap in whatever the registry makes active (see [`EngineApi::follow_registry`]).
    follow: bool,
    /// Per name, the last version the follower could not take, why (logged once), and whether
    /// to try it again (a gate refusal may pass later; a version that fails validation will
    /// not, until the registry changes).
    refused: BTreeMap<String, (String, String, bool)>,
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
            live: BTreeMap::new(),
            follow: false,
            refused: BTreeMap::new(),
        }
    }

    /// Names the registry versions of the serving models: each model file (or directory)
    /// under `registry/NAME/VERSION/` is `NAME` at `VERSION`; models from elsewhere have no
    /// registry identity. Promotions keep the record current.
    pub fn with_live_models<'a>(mut self, paths: impl IntoIterator<Item = &'a Path>) -> Self {
        for p in paths {
            if let Some((name, version)) = registry_identity(&self.registry, p) {
                self.live.insert(name, version);
            }
        }
        self
    }

    /// Follows the registry: when a serving model's active version changes there (a `tickpipe
    /// models promote` or `rollback` against the registry directory), the control thread
    /// validates that version and swaps it in, behind the shadow gate like any promotion. A
    /// version the gate refuses is logged once and tried again on every tick (the gate may pass
    /// later); one that fails validation is logged once and left alone until the registry names
    /// another.
    pub fn follow_registry(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// The serving models' registry identities (name → version).
    pub fn live(&self) -> &BTreeMap<String, String> {
        &self.live
    }

    /// One pass of the follower (see [`EngineApi::follow_registry`]).
    fn follow_once(&mut self) {
        let Ok(reg) = Registry::open(&self.registry) else {
            return;
        };
        let names: Vec<(String, String)> = self
            .live
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (name, serving) in names {
            let active = match reg.active(&name) {
                Ok(Some(rec)) => rec.active,
                Ok(None) => continue,
                Err(e) => {
                    self.refuse(&name, "?", &e.to_string(), true);
                    continue;
                }
            };
            if active == serving {
                self.refused.remove(&name);
                continue;
            }
            if let Some((v, _, false)) = self.refused.get(&name)
                && *v == active
            {
                continue;
            }
            match self.take(&name, &active) {
                Ok(detail) => {
                    self.refused.remove(&name);
                    eprintln!(
                        "tickpipe run: following the registry: {name} {active} (was {serving}): {detail}"
                    );
                }
                Err(e) => {
                    let gated = e.message().starts_with(GATE_REFUSAL);
                    self.refuse(&name, &active, e.message(), gated);
                }
            }
        }
    }

    fn refuse(&mut self, name: &str, version: &str, why: &str, retry: bool) {
        let entry = (version.to_string(), why.to_string(), retry);
        if self.refused.get(name) != Some(&entry) {
            eprintln!(
                "tickpipe run: the registry makes {name} {version} active; not following it: {why}"
            );
            self.refused.insert(name.to_string(), entry);
        }
    }

    /// Validates `name` `version` (promoting it in the registry too when `promote`), checks the
    /// shadow gate, swaps it in and ends its shadow run; returns a one-line summary.
    fn take_with(
        &mut self,
        name: &str,
        version: &str,
        promote: bool,
    ) -> Result<(String, serde_json::Value), ControlError> {
        if self.models.is_none() {
            return Err(ControlError::Conflict(
                "this engine takes no model updates".into(),
            ));
        }
        // The gate, before the registry is touched: a refused promotion changes nothing.
        if let Some(shadow) = &mut self.shadow {
            shadow
                .may_promote(name, version)
                .map_err(|why| ControlError::Conflict(format!("{GATE_REFUSAL}{why}")))?;
        }
        let validated = self.validated(name, version, promote)?;
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
            ControlError::Conflict(if promote {
                format!("promoted in the registry, not swapped: {e}")
            } else {
                format!("not swapped: {e}")
            })
        })?;
        self.live.insert(name.to_string(), version.to_string());
        // A promoted candidate is live now: its shadow run ends with this report.
        let mut shadowed = serde_json::Value::Null;
        if let Some(shadow) = &mut self.shadow
            && let Some(r) = shadow.report()
            && r.name == name
            && r.version == version
        {
            shadowed = r.to_json(shadow.gate());
            shadow
                .stop()
                .map_err(|e| ControlError::Internal(format!("swapped; shadow not stopped: {e}")))?;
        }
        Ok((summary, shadowed))
    }

    fn take(&mut self, name: &str, version: &str) -> Result<String, ControlError> {
        self.take_with(name, version, false).map(|(s, _)| s)
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

fn no_shadow() -> ControlError {
    ControlError::NotFound("this engine has no shadow lane ([shadow] enabled = true)".into())
}

/// How a refusal by the shadow gate begins.
const GATE_REFUSAL: &str = "not promoted: ";

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
        let (summary, shadowed) = self.take_with(model, &body.version, true)?;
        eprintln!("tickpipe run: promoted {summary}");
        Ok(serde_json::json!({
            "promoted": model,
            "version": body.version,
            "detail": summary,
            "shadow": shadowed,
        })
        .to_string())
    }

    fn tick(&mut self) {
        if self.follow {
            self.follow_once();
        }
    }

    fn shadow(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError> {
        let body: ShadowBody = serde_json::from_slice(body)
            .map_err(|e| ControlError::BadRequest(format!("{SHADOW_SHAPE}: {e}")))?;
        if self.shadow.is_none() {
            return Err(no_shadow());
        }
        match (body.version, body.action.as_deref()) {
            (None, Some("stop")) => {
                let Some(shadow) = self.shadow.as_mut() else {
                    return Err(no_shadow());
                };
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
                let Some(shadow) = self.shadow.as_mut() else {
                    return Err(no_shadow());
                };
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
        let shadow = self.shadow.as_mut().ok_or_else(no_shadow)?;
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

/// `NAME` and `VERSION` of a model at `registry/NAME/VERSION/...`, if it is one of that
/// version's files (its manifest names it as the artifact).
fn registry_identity(registry: &Path, model: &Path) -> Option<(String, String)> {
    let root = registry.canonicalize().ok()?;
    let path = model.canonicalize().ok()?;
    let rel = path.strip_prefix(&root).ok()?;
    let mut parts = rel.components().map(|c| c.as_os_str().to_str());
    let (name, version) = (parts.next()??, parts.next()??);
    let artifact = parts.next()??;
    if parts.next().is_some() {
        return None;
    }
    let reg = Registry::open(registry).ok()?;
    let manifest = reg.manifest(name, version).ok()?;
    (manifest.artifact == artifact).then(|| (name.to_string(), version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_under_the_registry_have_its_names() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let reg = root.join("models/registry");
        assert_eq!(
            registry_identity(&reg, &reg.join("score/v2/binary_logistic_v2.json")),
            Some(("score".into(), "v2".into()))
        );
        assert_eq!(
            registry_identity(&reg, &reg.join("regime/v1/sjm")),
            Some(("regime".into(), "v1".into()))
        );
        // Not the manifest's artifact, outside the registry, or missing.
        assert_eq!(
            registry_identity(&reg, &reg.join("score/v2/goldens.json")),
            None
        );
        assert_eq!(
            registry_identity(&reg, &root.join("models/fixtures/pipeline/score.json")),
            None
        );
        assert_eq!(registry_identity(&reg, &reg.join("score/v9/x.json")), None);
    }
}
