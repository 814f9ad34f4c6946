//! The embedding builder: the same signals as `Engine::start`, user stages and signal consumers
//! that see every tick and signal exactly once and in order, a user scoring model beside or in
//! place of the built-in one, and typed errors for an incomplete or invalid builder.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tickpipe_pipeline::builder::{BuildError, Delivery, EngineBuilder, Scorer, UserStage};
use tickpipe_pipeline::config::{ModelSettings, Placement};
use tickpipe_pipeline::msg::Tick;
use tickpipe_pipeline::sample::{INSTRUMENTS, sample_mbo};
use tickpipe_pipeline::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe_pipeline::{
    Engine, EngineConfig, EngineReport, IdleStrategy, PipelineError, ThreadHooks, ThreadingMode,
};
use tickpipe_shm::ring::{HeapRegion, RingInfo, content};
use tickpipe_shm::{ReadError, RingReader, RingWriter, StartAt, heap_ring};

type Ring = RingWriter<Arc<HeapRegion>>;

fn md_ring() -> (Ring, RingReader<Arc<HeapRegion>>) {
    let (md, info) = heap_ring(16 << 20, 1024, b"DBN", content::DBN).unwrap();
    let reader = RingReader::new(md.region().clone(), info, StartAt::Oldest);
    (md, reader)
}

fn signal_ring() -> (Ring, RingInfo) {
    heap_ring(16 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap()
}

fn read_all(reader: &mut RingReader<Arc<HeapRegion>>) -> Vec<[u8; SIGNAL_LEN]> {
    let mut out = Vec::new();
    let mut buf = [0u8; SIGNAL_LEN];
    loop {
        match reader.try_read(&mut buf) {
            Ok(_) => out.push(buf),
            Err(ReadError::Empty) => break,
            Err(e) => panic!("signal ring: {e}"),
        }
    }
    out
}

fn models() -> ModelSettings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/pipeline");
    ModelSettings {
        sjm: Some(dir.join("sjm")),
        xgboost: Some(dir.join("score.json")),
        ..ModelSettings::default()
    }
}

fn config(mode: ThreadingMode) -> EngineConfig {
    let mut cfg = EngineConfig {
        mode,
        batch: 32,
        link_capacity: 64,
        report_interval: Duration::from_millis(5),
        models: models(),
        ..EngineConfig::default()
    };
    // The monitor stamps its alert level on signals: off, so runs compare byte for byte.
    cfg.health.enabled = false;
    // Threads yield when idle so the tests do not need a core per stage.
    for p in &mut cfg.stages {
        p.idle = IdleStrategy::Yielding;
    }
    cfg
}

/// Publishes `n` sample records (driving an invoker as it goes), finishes the ring and joins.
fn feed(engine: &mut Engine, md: &mut Ring, n: u64) {
    let clock = quanta::Clock::new();
    for i in 0..n {
        md.publish(&sample_mbo(i), clock.raw()).unwrap();
        if i % 5 == 0 {
            engine.invoke();
        }
    }
    md.finish();
}

/// Collects what a consumer sees.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Signal>>>);

impl Seen {
    fn consumer(&self) -> impl FnMut(&Signal) + Send + 'static {
        let seen = self.0.clone();
        move |s: &Signal| seen.lock().unwrap().push(*s)
    }

    fn take(&self) -> Vec<Signal> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn decode(ring: &[[u8; SIGNAL_LEN]]) -> Vec<Signal> {
    ring.iter().map(|b| Signal::decode(b).unwrap()).collect()
}

/// The reference: `Engine::start` on the same input.
fn reference(n: u64) -> Vec<[u8; SIGNAL_LEN]> {
    let (mut md, reader) = md_ring();
    let (sig, sig_info) = signal_ring();
    let mut sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let cfg = config(ThreadingMode::Invoker);
    let mut engine = Engine::start(
        &cfg,
        reader,
        sig,
        quanta::Clock::new(),
        ThreadHooks::default(),
    )
    .unwrap();
    feed(&mut engine, &mut md, n);
    let rep = engine.join().unwrap();
    assert_eq!(rep.signals, n);
    read_all(&mut sig_reader)
}

#[test]
fn builder_gives_the_same_signals_as_engine_start() {
    let n = 4_000;
    let want = reference(n);
    assert_eq!(want.len() as u64, n);
    for mode in [
        ThreadingMode::Invoker,
        ThreadingMode::Shared,
        ThreadingMode::Dedicated,
    ] {
        let (mut md, reader) = md_ring();
        let (sig, sig_info) = signal_ring();
        let mut sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
        let (inline, threaded) = (Seen::default(), Seen::default());
        let mut engine = EngineBuilder::new()
            .config(config(mode))
            .market_data_reader(reader)
            .signal_writer(sig)
            .signal_consumer("inline", Delivery::Inline, inline.consumer())
            .signal_consumer("threaded", Delivery::default(), threaded.consumer())
            .start()
            .unwrap();
        feed(&mut engine, &mut md, n);
        let rep = engine.join().unwrap();
        let got = read_all(&mut sig_reader);
        assert!(got == want, "{mode} mode: the builder's signals differ");
        // Compared as bytes: NaN scores never compare equal as floats.
        let bytes = |v: Vec<Signal>| v.iter().map(Signal::encode).collect::<Vec<_>>();
        assert!(bytes(inline.take()) == want, "{mode}: the inline consumer");
        assert!(
            bytes(threaded.take()) == want,
            "{mode}: the threaded consumer"
        );
        let tap = rep
            .links
            .iter()
            .find(|l| l.name == "health->threaded")
            .expect("the consumer's link is counted");
        assert_eq!((tap.pushed, tap.popped), (n, n));
    }
}

/// What the tick counter saw: ticks, per instrument, out of order, its thread's name.
type Counted = (u64, [u64; INSTRUMENTS as usize + 1], u64, String);

/// Counts ticks per instrument and checks they arrive in input order.
struct TickCounter {
    next_seq: u64,
    per_instrument: [u64; INSTRUMENTS as usize + 1],
    out_of_order: u64,
    started_on: Option<String>,
    result: Arc<Mutex<Option<Counted>>>,
}

impl UserStage for TickCounter {
    fn name(&self) -> &str {
        "tick-counter"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.started_on = std::thread::current().name().map(str::to_string);
        Ok(())
    }

    fn on_tick(&mut self, tick: &Tick) {
        if tick.seq != self.next_seq {
            self.out_of_order += 1;
        }
        self.next_seq = tick.seq + 1;
        if let Some(c) = self.per_instrument.get_mut(tick.instrument_id as usize) {
            *c += 1;
        }
    }

    fn on_close(&mut self) {
        *self.result.lock().unwrap() = Some((
            self.next_seq,
            self.per_instrument,
            self.out_of_order,
            self.started_on.clone().unwrap_or_default(),
        ));
    }
}

#[test]
fn user_stage_and_consumer_see_every_tick_and_signal() {
    let n = 10_000;
    for mode in [ThreadingMode::Shared, ThreadingMode::Dedicated] {
        let (mut md, reader) = md_ring();
        let result = Arc::new(Mutex::new(None));
        let counted = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicU64::new(0));
        let mut cfg = config(mode);
        // Small links, so the slow consumer below fills its link and holds the pipeline back.
        cfg.link_capacity = 8;
        struct Slow {
            counted: Arc<AtomicU64>,
            closed: Arc<AtomicU64>,
            n: u64,
        }
        impl tickpipe_pipeline::SignalConsumer for Slow {
            fn on_signal(&mut self, s: &Signal) {
                assert_eq!(s.input_seq, self.n, "signals in order");
                self.n += 1;
                if self.n.is_multiple_of(1_000) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                self.counted.store(self.n, Ordering::Relaxed);
            }
            fn on_close(&mut self) {
                self.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut engine = EngineBuilder::new()
            .config(cfg)
            .market_data_reader(reader)
            .user_stage(
                TickCounter {
                    next_seq: 0,
                    per_instrument: [0; INSTRUMENTS as usize + 1],
                    out_of_order: 0,
                    started_on: None,
                    result: result.clone(),
                },
                Some(Placement {
                    core: None,
                    idle: IdleStrategy::Yielding,
                }),
            )
            .signal_consumer(
                "slow",
                Delivery::default(),
                Slow {
                    counted: counted.clone(),
                    closed: closed.clone(),
                    n: 0,
                },
            )
            .start()
            .unwrap();
        feed(&mut engine, &mut md, n);
        let rep: EngineReport = engine.join().unwrap();
        assert_eq!(rep.signals, n);
        assert_eq!(counted.load(Ordering::Relaxed), n, "{mode}: every signal");
        assert_eq!(closed.load(Ordering::Relaxed), 1, "closed once");
        let (ticks, per, out_of_order, thread) = result.lock().unwrap().take().unwrap();
        assert_eq!(ticks, n, "{mode}: every tick");
        assert_eq!(out_of_order, 0);
        assert_eq!(thread, "tick-counter", "runs on a thread of its own");
        // Round robin over the instruments in groups of four records.
        for (id, &c) in per.iter().enumerate().skip(1) {
            let want = (0..n)
                .filter(|i| (i / 4) % INSTRUMENTS + 1 == id as u64)
                .count();
            assert_eq!(c, want as u64, "instrument {id}");
        }
        let slow = rep.links.iter().find(|l| l.name == "health->slow").unwrap();
        assert_eq!((slow.pushed, slow.popped, slow.dropped), (n, n, 0));
        assert!(slow.stalls > 0, "the slow consumer held the pipeline back");
        assert!(rep.threads.iter().any(|(name, _)| name == "slow"));
        assert_eq!(rep.main_path_loss(), 0);
    }
}

/// Scores each vector with its instrument id and mid.
struct IdScorer(usize);

impl Scorer for IdScorer {
    fn name(&self) -> &str {
        "id"
    }
    fn outputs(&self) -> usize {
        self.0
    }
    fn score(&mut self, tick: &Tick, out: &mut [f32]) {
        out[0] = tick.instrument_id as f32;
        for o in &mut out[1..] {
            *o = tick.values[tickpipe_pipeline::features::MID] as f32;
        }
    }
}

fn scored(cfg: EngineConfig, outputs: usize, n: u64) -> Vec<Signal> {
    let (mut md, reader) = md_ring();
    let seen = Seen::default();
    let mut engine = EngineBuilder::new()
        .config(cfg)
        .market_data_reader(reader)
        .scorer(IdScorer(outputs))
        .signal_consumer("seen", Delivery::Inline, seen.consumer())
        .start()
        .unwrap();
    feed(&mut engine, &mut md, n);
    engine.join().unwrap();
    seen.take()
}

#[test]
fn user_scorer_runs_beside_or_in_place_of_the_builtin_model() {
    let n = 500;
    let builtin = decode(&reference(n));
    // Beside XGBoost: its score first, the user's after it.
    let beside = scored(config(ThreadingMode::Invoker), 2, n);
    assert_eq!(beside.len() as u64, n);
    for (s, b) in beside.iter().zip(&builtin) {
        assert_eq!(s.n_scores, 3);
        assert_eq!(s.scores[0].to_bits(), b.scores[0].to_bits());
        assert_eq!(s.scores[1], s.instrument_id as f32);
        let mid = s.price as f64 * 1e-9;
        assert!(s.scores[2].is_nan() || (f64::from(s.scores[2]) - mid).abs() < 1e-2);
    }
    // In its place.
    let mut cfg = config(ThreadingMode::Invoker);
    cfg.models.xgboost = None;
    let alone = scored(cfg, 1, n);
    for s in &alone {
        assert_eq!((s.n_scores, s.scores[0]), (1, s.instrument_id as f32));
        assert_eq!(s.scoring_version, 0);
    }
    // Too many outputs for a signal, with the built-in model's.
    let (_md, reader) = md_ring();
    let err = EngineBuilder::new()
        .config(config(ThreadingMode::Invoker))
        .market_data_reader(reader)
        .scorer(IdScorer(4))
        .signal_consumer("x", Delivery::Inline, |_: &Signal| {})
        .start()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Config(e) if e.to_string().contains("models.user")),
        "{err}"
    );
}

struct FailsToStart;

impl UserStage for FailsToStart {
    fn name(&self) -> &str {
        "fails"
    }
    fn on_start(&mut self) -> Result<(), PipelineError> {
        Err(PipelineError::Internal("no licence".into()))
    }
    fn on_tick(&mut self, _: &Tick) {}
}

#[test]
fn bad_builder_use_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let sink = |_: &Signal| {};
    // No source.
    let err = EngineBuilder::new()
        .signal_consumer("c", Delivery::Inline, sink)
        .start()
        .unwrap_err();
    assert!(matches!(err, BuildError::MissingSource), "{err}");
    // Nowhere for signals to go.
    let (_md, reader) = md_ring();
    let err = EngineBuilder::new()
        .market_data_reader(reader)
        .start()
        .unwrap_err();
    assert!(matches!(err, BuildError::NoOutput), "{err}");
    // An invalid config struct, and a config file that is missing or invalid.
    let (_md, reader) = md_ring();
    let err = EngineBuilder::new()
        .config(EngineConfig {
            batch: 0,
            ..EngineConfig::default()
        })
        .market_data_reader(reader)
        .signal_consumer("c", Delivery::Inline, sink)
        .start()
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::Config(PipelineError::Config { field, .. }) if field == "batch"),
        "{err}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "mode = \"sideways\"\n").unwrap();
    for path in [dir.path().join("missing.toml"), bad] {
        let (_md, reader) = md_ring();
        let err = EngineBuilder::new()
            .config_file(&path)
            .market_data_reader(reader)
            .signal_consumer("c", Delivery::Inline, sink)
            .start()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::Config(_)) && err.to_string().contains("toml"),
            "{}: {err}",
            path.display()
        );
    }
    // A market-data ring that is not there, and one that carries signals.
    let missing = dir.path().join("none.ring");
    let err = EngineBuilder::new()
        .market_data_ring(&missing)
        .signal_consumer("c", Delivery::Inline, sink)
        .start()
        .unwrap_err();
    assert!(matches!(err, BuildError::Attach { .. }), "{err}");
    let signals = dir.path().join("signals.ring");
    let (_md, reader) = md_ring();
    let engine = EngineBuilder::new()
        .config(config(ThreadingMode::Shared))
        .market_data_reader(reader)
        .signal_ring(&signals)
        .start()
        .unwrap();
    let err = EngineBuilder::new()
        .market_data_ring(&signals)
        .signal_consumer("c", Delivery::Inline, sink)
        .start()
        .unwrap_err();
    assert!(matches!(err, BuildError::NotMarketData { .. }), "{err}");
    engine.stop();
    drop(engine);
    // A signal ring that cannot be created.
    let (_md, reader) = md_ring();
    let err = EngineBuilder::new()
        .market_data_reader(reader)
        .signal_ring(dir.path().join("no/such/dir/signals.ring"))
        .start()
        .unwrap_err();
    assert!(matches!(err, BuildError::SignalRing { .. }), "{err}");
    // A user stage that cannot start: nothing runs, and the signal ring is not left behind.
    let (_md, reader) = md_ring();
    let ring = dir.path().join("left.ring");
    let err = EngineBuilder::new()
        .config(config(ThreadingMode::Shared))
        .market_data_reader(reader)
        .signal_ring(&ring)
        .user_stage(FailsToStart, None)
        .start()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Start(_)) && err.to_string().contains("no licence"),
        "{err}"
    );
    assert!(!ring.exists(), "the signal ring was removed");
}
