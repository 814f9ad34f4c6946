//! The start-up orchestrator: levels, parallel start, ordering, retries with backoff, isolation,
//! timeouts, health checks, graph errors and stop order.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tickpipe_pipeline::orchestrator::{
    AbortCause, AttemptOutcome, Component, ComponentSpec, ComponentState, Orchestrator, Output,
    RetryPolicy, StartError,
};

/// What a probe did, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Healthy,
    Stop,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(Instant, String, Kind)>>>);

impl Log {
    fn push(&self, name: &str, kind: Kind) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), name.to_owned(), kind));
    }
    fn events(&self) -> Vec<(Instant, String, Kind)> {
        self.0.lock().unwrap().clone()
    }
    fn names(&self, kind: Kind) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.2 == kind)
            .map(|e| e.1)
            .collect()
    }
    fn position(&self, name: &str, kind: Kind) -> usize {
        self.events()
            .iter()
            .position(|e| e.1 == name && e.2 == kind)
            .unwrap_or_else(|| panic!("{name} never logged {kind:?}"))
    }
}

type Step = Box<dyn FnMut(u32) -> Result<(), String> + Send>;

/// A component whose `start` and `health_check` run closures given the attempt number.
struct Probe {
    name: String,
    log: Log,
    on_start: Step,
    on_health: Step,
    attempt: u32,
}

impl Probe {
    fn ok(name: &str, log: &Log) -> Self {
        Probe {
            name: name.to_owned(),
            log: log.clone(),
            on_start: Box::new(|_| Ok(())),
            on_health: Box::new(|_| Ok(())),
            attempt: 0,
        }
    }
    fn starting(mut self, f: impl FnMut(u32) -> Result<(), String> + Send + 'static) -> Self {
        self.on_start = Box::new(f);
        self
    }
    fn health(mut self, f: impl FnMut(u32) -> Result<(), String> + Send + 'static) -> Self {
        self.on_health = Box::new(f);
        self
    }
}

impl Component for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn start(&mut self) -> Result<(), String> {
        self.attempt += 1;
        self.log.push(&self.name, Kind::Start);
        (self.on_start)(self.attempt)
    }
    fn health_check(&mut self) -> Result<(), String> {
        (self.on_health)(self.attempt)?;
        self.log.push(&self.name, Kind::Healthy);
        Ok(())
    }
    fn stop(&mut self) {
        self.log.push(&self.name, Kind::Stop);
    }
}

fn policy(attempts: u32, backoff_ms: u64, timeout_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        backoff: Duration::from_millis(backoff_ms),
        backoff_factor: 2.0,
        max_backoff: Duration::from_secs(1),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn fast() -> RetryPolicy {
    policy(3, 1, 2_000)
}

fn aborted(err: StartError) -> Box<tickpipe_pipeline::orchestrator::Aborted> {
    match err {
        StartError::Aborted(a) => a,
        other => panic!("expected an aborted start-up, got {other}"),
    }
}

#[test]
fn diamond_levels() {
    let log = Log::default();
    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("d", &log), &["b", "c"], false)
        .add(Probe::ok("b", &log), &["a"], false)
        .add(Probe::ok("a", &log), &[], false)
        .add(Probe::ok("c", &log), &["a"], false)
        .add(Probe::ok("e", &log), &["a", "d"], false);
    let levels = orch.levels().unwrap();
    let expected = [("d", 2), ("b", 1), ("a", 0), ("c", 1), ("e", 3)];
    assert_eq!(
        levels,
        expected.map(|(n, l)| (n.to_owned(), l)).to_vec(),
        "levels in the order added"
    );
    let running = orch.start().unwrap();
    let report = running.report();
    let by_level: Vec<(&str, usize)> = report
        .components
        .iter()
        .map(|c| (c.name.as_str(), c.level))
        .collect();
    assert_eq!(
        by_level,
        [("a", 0), ("b", 1), ("c", 1), ("d", 2), ("e", 3)],
        "the report lists components in level order"
    );
    assert!(!running.is_degraded());
}

/// Each component waits until all `n` have arrived; run one after another, the first would wait
/// out the deadline and fail instead of hanging the test.
#[derive(Clone)]
struct Rendezvous(Arc<(Mutex<usize>, Condvar)>, usize);

impl Rendezvous {
    fn arrive(&self, deadline: Duration) -> Result<(), String> {
        let (count, cv) = &*self.0;
        let mut n = count.lock().unwrap();
        *n += 1;
        cv.notify_all();
        let (n, timeout) = cv.wait_timeout_while(n, deadline, |n| *n < self.1).unwrap();
        if timeout.timed_out() {
            Err(format!("only {} of {} arrived", *n, self.1))
        } else {
            Ok(())
        }
    }
}

#[test]
fn one_level_starts_in_parallel() {
    let log = Log::default();
    let meet = Rendezvous(Arc::default(), 3);
    let mut orch = Orchestrator::new(policy(1, 1, 10_000));
    orch.add(Probe::ok("root", &log), &[], false);
    for name in ["x", "y", "z"] {
        let meet = meet.clone();
        orch.add(
            Probe::ok(name, &log).starting(move |_| meet.arrive(Duration::from_secs(3))),
            &["root"],
            false,
        );
    }
    let began = Instant::now();
    let running = match orch.start() {
        Ok(r) => r,
        Err(e) => panic!("the level did not start in parallel: {e}"),
    };
    assert!(began.elapsed() < Duration::from_secs(3));
    for name in ["x", "y", "z"] {
        assert!(running.is_running(name));
    }
}

#[test]
fn dependents_start_only_after_their_deps_run() {
    let log = Log::default();
    let slow = |ms: u64| {
        move |_| -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        }
    };
    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("a", &log).starting(slow(15)), &[], false)
        .add(Probe::ok("b", &log).starting(slow(5)), &["a"], false)
        .add(Probe::ok("c", &log).starting(slow(20)), &["a"], false)
        .add(Probe::ok("d", &log), &["b", "c"], false);
    let running = orch.start().unwrap();
    for (dependent, dep) in [("b", "a"), ("c", "a"), ("d", "b"), ("d", "c")] {
        assert!(
            log.position(dep, Kind::Healthy) < log.position(dependent, Kind::Start),
            "{dependent} started before {dep} was healthy: {:?}",
            log.names(Kind::Start)
        );
        let report = running.report();
        let dep_up = report.component(dep).unwrap().running_after.unwrap();
        let first_try = report.component(dependent).unwrap().attempts[0].began;
        assert!(dep_up <= first_try, "{dependent} tried before {dep} ran");
    }
    assert_eq!(running.report().start_order.first().unwrap(), "a");
    assert_eq!(running.report().start_order.last().unwrap(), "d");
}

#[test]
fn flaky_component_succeeds_on_third_try_after_growing_backoff() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(3, 10, 2_000));
    orch.add(
        Probe::ok("flaky", &log).starting(|n| {
            if n < 3 {
                Err(format!("not yet ({n})"))
            } else {
                Ok(())
            }
        }),
        &[],
        false,
    );
    let running = orch.start().unwrap();
    let starts: Vec<Instant> = log
        .events()
        .iter()
        .filter(|e| e.2 == Kind::Start)
        .map(|e| e.0)
        .collect();
    assert_eq!(starts.len(), 3);
    let (gap1, gap2) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(gap1 >= Duration::from_millis(10), "first wait {gap1:?}");
    assert!(gap2 >= Duration::from_millis(20), "second wait {gap2:?}");

    let c = running.report().component("flaky").unwrap();
    assert_eq!(c.state, ComponentState::Running);
    let outcomes: Vec<AttemptOutcome> = c.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::StartFailed,
            AttemptOutcome::StartFailed,
            AttemptOutcome::Ok
        ]
    );
    assert_eq!(c.attempts[1].error.as_deref(), Some("not yet (2)"));
    assert!(c.attempts[2].began - c.attempts[1].began >= Duration::from_millis(20));
}

#[test]
fn backoff_grows_by_the_factor_up_to_the_cap() {
    let p = RetryPolicy {
        max_attempts: 10,
        backoff: Duration::from_millis(100),
        backoff_factor: 3.0,
        max_backoff: Duration::from_millis(1_000),
        timeout: Duration::from_secs(1),
    };
    let waits: Vec<u128> = (1..=6).map(|n| p.backoff_before(n).as_millis()).collect();
    assert_eq!(waits, [0, 100, 300, 900, 1_000, 1_000]);
    assert_eq!(p.backoff_before(u32::MAX), Duration::from_millis(1_000));
}

#[test]
fn failing_required_component_aborts_and_rolls_back_in_reverse() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(3, 1, 2_000));
    orch.add(Probe::ok("a", &log), &[], false)
        .add(Probe::ok("b", &log), &[], false)
        .add(Probe::ok("c", &log), &["a"], false)
        .add(
            Probe::ok("bad", &log).starting(|n| Err(format!("broken #{n}"))),
            &["c"],
            false,
        )
        .add(Probe::ok("later", &log), &["bad"], false);
    let a = aborted(orch.start().unwrap_err());
    assert_eq!(
        a.cause,
        AbortCause::Failed {
            component: "bad".into(),
            attempts: 3,
            error: "broken #3".into()
        }
    );
    let bad = a.report.component("bad").unwrap();
    assert_eq!(bad.state, ComponentState::Failed);
    let errors: Vec<&str> = bad
        .attempts
        .iter()
        .filter_map(|t| t.error.as_deref())
        .collect();
    assert_eq!(errors, ["broken #1", "broken #2", "broken #3"]);
    assert_eq!(
        a.report.component("later").unwrap().state,
        ComponentState::NotStarted
    );
    let mut started = a.report.start_order.clone();
    assert_eq!(started.len(), 3);
    for name in &started {
        assert_eq!(
            a.report.component(name).unwrap().state,
            ComponentState::RolledBack
        );
    }
    started.reverse();
    assert_eq!(a.rollback.stop_order(), started);
    assert_eq!(
        log.names(Kind::Stop),
        started,
        "stop calls in reverse order"
    );
}

#[test]
fn failing_optional_component_is_isolated_and_its_dependents_skipped() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(2, 1, 2_000));
    orch.add(Probe::ok("core", &log), &[], false)
        .add(
            Probe::ok("recorder", &log).starting(|_| Err("disk full".into())),
            &["core"],
            true,
        )
        .add(Probe::ok("uploader", &log), &["recorder"], true)
        .add(Probe::ok("archiver", &log), &["uploader"], true)
        .add(Probe::ok("server", &log), &["core"], false)
        .add(Probe::ok("metrics", &log), &["server"], false);
    let running = orch.start().unwrap();
    let report = running.report();
    let state = |n: &str| report.component(n).unwrap().state;
    assert_eq!(state("recorder"), ComponentState::Isolated);
    assert_eq!(report.component("recorder").unwrap().attempts.len(), 2);
    assert_eq!(state("uploader"), ComponentState::Skipped);
    assert_eq!(state("archiver"), ComponentState::Skipped);
    assert!(
        report
            .component("uploader")
            .unwrap()
            .detail
            .as_deref()
            .unwrap()
            .contains("recorder")
    );
    for name in ["core", "server", "metrics"] {
        assert_eq!(state(name), ComponentState::Running, "{name}");
        assert!(running.is_running(name));
    }
    assert!(running.is_degraded());
    assert!(!log.names(Kind::Start).contains(&"uploader".to_owned()));
}

#[test]
fn required_component_needing_a_failed_optional_one_aborts() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(1, 1, 2_000));
    orch.add(Probe::ok("core", &log), &[], false)
        .add(
            Probe::ok("model", &log).starting(|_| Err("no file".into())),
            &[],
            true,
        )
        .add(Probe::ok("scorer", &log), &["core", "model"], false);
    let err = orch.start().unwrap_err();
    let text = err.to_string();
    let a = aborted(err);
    assert_eq!(
        a.cause,
        AbortCause::DependencyUnavailable {
            component: "scorer".into(),
            dependency: "model".into(),
            state: ComponentState::Isolated
        }
    );
    assert!(
        text.contains("`scorer` depends on optional `model`"),
        "{text}"
    );
    assert_eq!(a.rollback.stop_order(), ["core"]);
    assert!(!log.names(Kind::Start).contains(&"scorer".to_owned()));
}

#[test]
fn hanging_required_start_times_out_without_hanging_start_up() {
    let log = Log::default();
    let (_gate, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let mut orch = Orchestrator::new(policy(3, 1, 20));
    orch.add(Probe::ok("a", &log), &[], false).add(
        Probe::ok("stuck", &log).starting(move |_| {
            let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(10));
            Ok(())
        }),
        &["a"],
        false,
    );
    let began = Instant::now();
    let a = aborted(orch.start().unwrap_err());
    let took = began.elapsed();
    assert!(
        took < Duration::from_millis(1_000),
        "start-up took {took:?}"
    );
    assert_eq!(
        a.cause,
        AbortCause::TimedOut {
            component: "stuck".into(),
            timeout: Duration::from_millis(20)
        }
    );
    let stuck = a.report.component("stuck").unwrap();
    assert_eq!(stuck.state, ComponentState::TimedOut);
    assert_eq!(
        stuck.attempts.len(),
        1,
        "a timed-out component is not retried"
    );
    let t = &stuck.attempts[0];
    assert_eq!(t.outcome, AttemptOutcome::TimedOut);
    assert!(t.duration >= Duration::from_millis(20));
    assert!(t.duration < Duration::from_millis(500), "{:?}", t.duration);
    assert_eq!(a.rollback.stop_order(), ["a"]);
}

#[test]
fn hanging_optional_start_is_abandoned_and_stopped_when_it_finishes_late() {
    let log = Log::default();
    let (gate, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let mut orch = Orchestrator::new(policy(2, 1, 2_000));
    orch.add(Probe::ok("core", &log), &[], false)
        .add_with(
            Probe::ok("slow", &log).starting(move |_| {
                held.lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|e| e.to_string())
            }),
            ComponentSpec::new(&["core"])
                .optional(true)
                .with_policy(policy(2, 1, 15)),
        )
        .add(Probe::ok("after", &log), &["core"], false);
    let running = orch.start().unwrap();
    let report = running.report();
    assert_eq!(
        report.component("slow").unwrap().state,
        ComponentState::TimedOut
    );
    assert!(running.is_running("after"));
    assert!(!log.names(Kind::Stop).contains(&"slow".to_owned()));

    // The abandoned start now succeeds on its worker thread, which stops the component itself.
    gate.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.names(Kind::Stop).contains(&"slow".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "the late start was never stopped"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(log.names(Kind::Healthy).last().unwrap(), "slow");
    let stopped = running.stop();
    assert!(!stopped.stop_order().contains(&"slow"));
}

#[test]
fn failed_health_check_counts_as_an_attempt() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(3, 1, 2_000));
    orch.add(
        Probe::ok("warm", &log).health(|n| {
            if n < 3 {
                Err(format!("cold #{n}"))
            } else {
                Ok(())
            }
        }),
        &[],
        false,
    );
    let running = orch.start().unwrap();
    let c = running.report().component("warm").unwrap();
    assert_eq!(c.state, ComponentState::Running);
    let outcomes: Vec<AttemptOutcome> = c.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            AttemptOutcome::HealthCheckFailed,
            AttemptOutcome::HealthCheckFailed,
            AttemptOutcome::Ok
        ]
    );
    assert_eq!(
        c.attempts[0].error.as_deref(),
        Some("health check: cold #1")
    );
    assert_eq!(log.names(Kind::Start).len(), 3);
    assert_eq!(
        log.names(Kind::Stop).len(),
        2,
        "unhealthy starts are undone"
    );

    let mut orch = Orchestrator::new(policy(2, 1, 2_000));
    orch.add(
        Probe::ok("sick", &log).health(|_| Err("sick".into())),
        &[],
        false,
    );
    let a = aborted(orch.start().unwrap_err());
    assert!(matches!(
        a.cause,
        AbortCause::Failed { ref component, attempts: 2, .. } if component == "sick"
    ));
}

#[test]
fn panicking_start_is_a_failed_attempt() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(2, 1, 2_000));
    orch.add(
        Probe::ok("boom", &log).starting(|n| {
            if n == 1 {
                panic!("first start blows up");
            }
            Ok(())
        }),
        &[],
        false,
    );
    let running = orch.start().unwrap();
    let c = running.report().component("boom").unwrap();
    assert_eq!(c.attempts[0].outcome, AttemptOutcome::Panicked);
    assert!(
        c.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("first start blows up")
    );
    assert_eq!(c.state, ComponentState::Running);
}

#[test]
fn graph_errors_are_typed() {
    let log = Log::default();
    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("a", &log), &["c"], false)
        .add(Probe::ok("b", &log), &["a"], false)
        .add(Probe::ok("c", &log), &["b"], false)
        .add(Probe::ok("free", &log), &[], false);
    match orch.start() {
        Err(StartError::Cycle { cycle }) => {
            assert_eq!(cycle, ["a", "c", "b", "a"]);
        }
        other => panic!("expected a cycle, got {other:?}"),
    }

    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("self", &log), &["self"], false);
    let err = orch.start().unwrap_err();
    assert!(matches!(&err, StartError::Cycle { cycle } if cycle == &["self", "self"]));
    assert_eq!(err.to_string(), "dependency cycle: self -> self");

    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("a", &log), &["ghost"], false);
    assert!(matches!(
        orch.start(),
        Err(StartError::UnknownDependency { component, dependency })
            if component == "a" && dependency == "ghost"
    ));

    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("a", &log), &[], false)
        .add(Probe::ok("a", &log), &[], true);
    assert!(matches!(orch.start(), Err(StartError::DuplicateName { name }) if name == "a"));

    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("", &log), &[], false);
    assert!(matches!(orch.start(), Err(StartError::InvalidName { .. })));

    let mut orch = Orchestrator::new(fast());
    orch.add_with(
        Probe::ok("a", &log),
        ComponentSpec::new(&[]).with_policy(policy(0, 1, 10)),
    );
    assert!(matches!(
        orch.start(),
        Err(StartError::InvalidPolicy { component, .. }) if component == "a"
    ));

    assert!(
        log.events().is_empty(),
        "nothing starts on an invalid graph"
    );
}

#[test]
fn stop_is_the_reverse_of_start_order() {
    let log = Log::default();
    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("ring", &log), &[], false)
        .add(Probe::ok("clock", &log), &[], false)
        .add(Probe::ok("models", &log), &["ring"], false)
        .add(Probe::ok("stages", &log), &["models", "clock"], false)
        .add(Probe::ok("server", &log), &["stages"], false)
        .add(Probe::ok("recorder", &log), &["ring"], true);
    let running = orch.start().unwrap();
    let mut expected = running.report().start_order.clone();
    assert_eq!(expected.len(), 6);
    let levels: Vec<usize> = expected
        .iter()
        .map(|n| running.report().component(n).unwrap().level)
        .collect();
    assert!(
        levels.is_sorted(),
        "start order crosses levels: {expected:?}"
    );
    expected.reverse();
    let stopped = running.stop();
    assert_eq!(stopped.stop_order(), expected);
    assert_eq!(log.names(Kind::Stop), expected);

    let log = Log::default();
    let mut orch = Orchestrator::new(fast());
    orch.add(Probe::ok("first", &log), &[], false).add(
        Probe::ok("second", &log),
        &["first"],
        false,
    );
    drop(orch.start().unwrap());
    assert_eq!(log.names(Kind::Stop), ["second", "first"], "drop stops too");
}

#[test]
fn outputs_reach_dependents_and_the_caller() {
    struct Producer(Output<Vec<u32>>);
    impl Component for Producer {
        fn name(&self) -> &str {
            "producer"
        }
        fn start(&mut self) -> Result<(), String> {
            self.0.put(vec![1, 2, 3]);
            Ok(())
        }
        fn stop(&mut self) {}
    }
    struct Consumer(Output<Vec<u32>>, Output<u32>);
    impl Component for Consumer {
        fn name(&self) -> &str {
            "consumer"
        }
        fn start(&mut self) -> Result<(), String> {
            let sum = self.0.with(|v| v.iter().sum()).ok_or("nothing produced")?;
            self.1.put(sum);
            Ok(())
        }
        fn stop(&mut self) {}
    }
    let (data, sum) = (Output::new(), Output::new());
    let mut orch = Orchestrator::new(fast());
    orch.add(Consumer(data.clone(), sum.clone()), &["producer"], false)
        .add(Producer(data.clone()), &[], false);
    let running = orch.start().unwrap();
    assert_eq!(sum.get(), Some(6));
    assert_eq!(data.take(), Some(vec![1, 2, 3]));
    assert!(!data.is_set());
    running.stop();
}

#[test]
fn retry_policy_reads_duration_strings() {
    let p: RetryPolicy = toml::from_str(
        "max_attempts = 5\nbackoff = \"10ms\"\nbackoff_factor = 1.5\nmax_backoff = \"2s\"\n\
         timeout = \"250us\"",
    )
    .unwrap();
    assert_eq!(
        p,
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(10),
            backoff_factor: 1.5,
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_micros(250),
        }
    );
    let d: RetryPolicy = toml::from_str("").unwrap();
    assert_eq!(d, RetryPolicy::default());
    assert_eq!(d.max_attempts, 3);
    assert_eq!(d.backoff, Duration::from_secs(1));
    assert_eq!(d.timeout, Duration::from_secs(30));

    for (bad, needle) in [
        ("timeout = \"soon\"", "timeout"),
        ("max_attempts = 0", "max_attempts"),
        ("backoff_factor = 0.5", "backoff_factor"),
        ("timeout = \"0s\"", "timeout"),
        ("retries = 3", "retries"),
    ] {
        let err = toml::from_str::<RetryPolicy>(bad).unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn report_prints_a_table_and_serializes_to_json() {
    let log = Log::default();
    let mut orch = Orchestrator::new(policy(2, 1, 2_000));
    orch.add(Probe::ok("ring", &log), &[], false)
        .add(
            Probe::ok("model", &log).starting(|_| Err("bad header".into())),
            &["ring"],
            true,
        )
        .add(Probe::ok("scorer", &log), &["model"], true);
    let running = orch.start().unwrap();
    let report = running.report();

    let table = report.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("component"));
    assert!(lines[1].starts_with("ring ") && lines[1].contains("running"));
    assert!(lines[2].starts_with("model ") && lines[2].contains("isolated"));
    assert!(lines[2].contains("bad header") && lines[2].contains("failed, "));
    assert!(lines[3].starts_with("scorer ") && lines[3].contains("skipped"));
    assert!(lines[4].starts_with("start-up took "));

    let json = serde_json::to_value(report).unwrap();
    let comps = json["components"].as_array().unwrap();
    assert_eq!(comps.len(), 3);
    assert_eq!(comps[0]["name"], "ring");
    assert_eq!(comps[0]["state"], "running");
    assert!(comps[0]["running_after_ns"].as_u64().unwrap() > 0);
    assert_eq!(comps[1]["state"], "isolated");
    assert_eq!(comps[1]["optional"], true);
    assert_eq!(comps[1]["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(comps[1]["attempts"][1]["outcome"], "start_failed");
    assert_eq!(comps[1]["attempts"][1]["error"], "bad header");
    assert!(comps[1]["running_after_ns"].is_null());
    assert_eq!(comps[2]["state"], "skipped");
    assert_eq!(json["start_order"], serde_json::json!(["ring"]));
    assert!(json["total_ns"].as_u64().unwrap() > 0);

    let stopped = running.stop();
    let json = serde_json::to_value(&stopped).unwrap();
    assert_eq!(json["stops"][0]["name"], "ring");
    assert!(
        stopped
            .to_string()
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("ring")
    );
}
