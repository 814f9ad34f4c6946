//! `tickpipe run`'s components, started in dependency order by the orchestrator
//! ([`tickpipe_pipeline::orchestrator`]):
//!
//! ```text
//! level 0   md-ring (attach) or md-udp (bind)      signal-ring (create)
//! level 1   engine (model loads, stages, health monitor and page)
//! level 2   control (HTTP control plane; optional: start-up degrades without it)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use tickpipe_pipeline::control::{ControlHandle, ControlServer};
use tickpipe_pipeline::host::{HostReport, SettingOutcome, Want};
use tickpipe_pipeline::orchestrator::{Component, Output};
use tickpipe_pipeline::udp::{UdpConfig, UdpSource};
use tickpipe_pipeline::{Engine, EngineConfig, ThreadHooks};
use tickpipe_shm::mapped::{self, AttachOptions, MappedRegion};
use tickpipe_shm::ring::content;
use tickpipe_shm::{RingReader, RingWriter, StartAt};

use crate::control_api::EngineApi;

/// The market-data source the engine reads.
#[derive(Debug)]
// Built once at start-up and moved into the engine: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum MdInput {
    /// The shared-memory ring.
    Ring(RingReader<MappedRegion>),
    /// A UDP feed.
    Udp(UdpSource),
}

/// Attaches to the market-data ring.
#[derive(Debug)]
pub struct MdRing {
    /// Ring path.
    pub path: PathBuf,
    /// How long one attempt waits for the ring to be ready.
    pub wait: Duration,
    /// Start at the oldest record.
    pub from_oldest: bool,
    /// A ring whose writer's heartbeat is older than this and whose writer process is gone is
    /// left by a dead writer: it is not attached to; the attempt waits for a new writer to
    /// replace it.
    pub stale_after: Duration,
    /// The attached reader.
    pub out: Output<MdInput>,
}

impl Component for MdRing {
    fn name(&self) -> &str {
        "md-ring"
    }

    fn start(&mut self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + self.wait;
        let reader = loop {
            let reader = mapped::attach_wait(
                &self.path,
                AttachOptions {
                    start: if self.from_oldest {
                        StartAt::Oldest
                    } else {
                        StartAt::Tail
                    },
                    read_only: false,
                },
                deadline.saturating_duration_since(std::time::Instant::now()),
            )
            .map_err(|e| e.to_string())?;
            let Some(why) = dead_writer(&reader, self.stale_after) else {
                break reader;
            };
            // A supervisor restarting a crashed writer and the engine together: wait for the
            // new writer to replace the file rather than run on the dead one.
            drop(reader);
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "{}: {why}; no new writer replaced it within {:.1} s",
                    self.path.display(),
                    self.wait.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if reader.info().writer.content_tag != content::DBN {
            return Err(format!(
                "{}: the ring does not carry DBN records",
                self.path.display()
            ));
        }
        self.out.put(MdInput::Ring(reader));
        Ok(())
    }

    fn stop(&mut self) {
        // Dropping the reader releases its slot in the ring header.
        drop(self.out.take());
    }
}

/// Why the ring's writer is dead (running state, heartbeat older than `stale_after`, process
/// gone), or `None` while it lives or has finished cleanly.
fn dead_writer(reader: &RingReader<MappedRegion>, stale_after: Duration) -> Option<String> {
    let status = reader.writer_status();
    let age = mapped::unix_now_ns().saturating_sub(status.heartbeat_ns);
    let pid = reader.info().writer.pid;
    (status.state == tickpipe_shm::ring::WriterState::Running
        && age > stale_after.as_nanos() as u64
        && !mapped::pid_alive(pid))
    .then(|| {
        format!(
            "its writer (pid {pid}) is gone, heartbeat {:.1} s old",
            age as f64 / 1e9
        )
    })
}

/// Binds the market-data UDP socket (joining its group if multicast).
#[derive(Debug)]
pub struct MdUdp {
    /// Address, backend and options.
    pub config: UdpConfig,
    /// The bound source.
    pub out: Output<MdInput>,
    /// Its counters (readable after the source has moved into the engine).
    pub stats: Output<std::sync::Arc<tickpipe_pipeline::udp::UdpStats>>,
}

impl Component for MdUdp {
    fn name(&self) -> &str {
        "md-udp"
    }

    fn start(&mut self) -> Result<(), String> {
        let src = UdpSource::bind(&self.config, quanta::Clock::new()).map_err(|e| e.to_string())?;
        self.stats.put(src.stats());
        self.out.put(MdInput::Udp(src));
        Ok(())
    }

    fn stop(&mut self) {
        drop(self.out.take());
    }
}

/// Creates the signal ring.
#[derive(Debug)]
pub struct SignalRing {
    /// Ring path.
    pub path: PathBuf,
    /// Data bytes.
    pub capacity: usize,
    /// Huge pages for the ring (`[host] hugepages`).
    pub huge_pages: Want,
    /// What became of `huge_pages`.
    pub pages: Output<SettingOutcome>,
    /// The writer.
    pub out: Output<RingWriter<MappedRegion>>,
}

impl Component for SignalRing {
    fn name(&self) -> &str {
        "signal-ring"
    }

    fn start(&mut self) -> Result<(), String> {
        let (w, pages) =
            crate::host_setup::create_signal_ring(&self.path, self.capacity, self.huge_pages)
                .map_err(|e| format!("{e:#}"))?;
        HostReport {
            outcomes: vec![pages.clone()],
        }
        .check_required()
        .map_err(|e| e.to_string())?;
        self.pages.put(pages);
        self.out.put(w);
        Ok(())
    }

    fn stop(&mut self) {
        drop(self.out.take());
    }
}

/// Loads the models and starts the stages and the health monitor.
#[derive(Debug)]
pub struct EngineComponent {
    /// Profile.
    pub config: EngineConfig,
    /// The market-data ring's path (for its page backing; unused for UDP).
    pub md_path: PathBuf,
    /// What became of the `[host]` settings applied here (rings, then stage threads).
    pub host: Output<Vec<SettingOutcome>>,
    /// From `md-ring` or `md-udp`.
    pub md: Output<MdInput>,
    /// From `signal-ring`.
    pub signals: Output<RingWriter<MappedRegion>>,
    /// The running engine (the caller takes it).
    pub out: Output<Engine>,
    /// Control handles for the control plane.
    pub api: Output<EngineApi>,
    /// Model registry for promotions.
    pub registry: PathBuf,
    /// Follow the registry's active versions.
    pub follow_registry: bool,
}

impl Component for EngineComponent {
    fn name(&self) -> &str {
        "engine"
    }

    fn start(&mut self) -> Result<(), String> {
        let md = self
            .md
            .take()
            .ok_or("the market-data source was not handed over")?;
        let signals = self
            .signals
            .take()
            .ok_or("signal-ring handed over no writer")?;
        let ring = match &md {
            MdInput::Ring(r) => Some(r),
            MdInput::Udp(_) => None,
        };
        let mut outcomes = crate::host_setup::on_rings(
            &self.config.host,
            ring,
            ring.map(|_| self.md_path.as_path()),
            &signals,
        );
        HostReport {
            outcomes: outcomes.clone(),
        }
        .check_required()
        .map_err(|e| e.to_string())?;
        let (clock, hooks) = (quanta::Clock::new(), ThreadHooks::default());
        let mut engine = match md {
            MdInput::Ring(r) => Engine::start(&self.config, r, signals, clock, hooks),
            MdInput::Udp(u) => Engine::start(&self.config, u, signals, clock, hooks),
        }
        .map_err(|e| e.to_string())?;
        outcomes.extend(engine.host_outcomes().iter().cloned());
        self.host.put(outcomes);
        if let Some(health) = engine.health() {
            let models = &self.config.models;
            let api = EngineApi::new(health, engine.model_control(), self.registry.clone())
                .with_shadow(engine.shadow_control())
                .with_live_models(
                    [&models.xgboost, &models.sjm]
                        .into_iter()
                        .flatten()
                        .map(PathBuf::as_path),
                )
                .follow_registry(self.follow_registry);
            if self.follow_registry {
                let live: Vec<String> =
                    api.live().iter().map(|(n, v)| format!("{n} {v}")).collect();
                eprintln!(
                    "tickpipe run: following {} for {}",
                    self.registry.display(),
                    if live.is_empty() {
                        "no model (none is loaded from it)".to_string()
                    } else {
                        live.join(", ")
                    }
                );
            }
            self.api.put(api);
        }
        self.out.put(engine);
        Ok(())
    }

    fn health_check(&mut self) -> Result<(), String> {
        match self.out.with(Engine::is_done) {
            Some(false) => Ok(()),
            Some(true) => Err("the engine stopped right after starting".into()),
            None => Err("no engine".into()),
        }
    }

    fn stop(&mut self) {
        // Still here only when start-up was rolled back (the caller takes a running engine);
        // dropping an engine stops and joins it.
        drop(self.out.take());
    }
}

/// Serves the HTTP control plane.
#[derive(Debug)]
pub struct Control {
    /// Server settings.
    pub config: tickpipe_pipeline::control::ControlConfig,
    /// From `engine`.
    pub api: Output<EngineApi>,
    /// The server's address, once listening.
    pub addr: Output<std::net::SocketAddr>,
    /// The server.
    pub handle: Option<ControlHandle>,
}

impl Component for Control {
    fn name(&self) -> &str {
        "control"
    }

    fn start(&mut self) -> Result<(), String> {
        let api = self
            .api
            .take()
            .ok_or("the engine runs no health monitor ([health] enabled = false)")?;
        let h = ControlServer::start(&self.config, api).map_err(|e| e.to_string())?;
        self.addr.put(h.local_addr());
        self.handle = Some(h);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.stop();
        }
    }
}
