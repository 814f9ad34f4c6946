//! The `tickpipe` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tickpipe::engine_cmd::{ProfileInput, ProfileOptions, RunEnd, RunOptions, TailOptions};
use tickpipe::pipeline::EngineConfig;
use tickpipe::record::{EndReason, RecordOptions};
use tickpipe::replay::{ReplayOptions, Speed};
use tickpipe::shm::StartAt;
use tickpipe::shm::mapped::CreateOptions;
use tickpipe::synth::SynthConfig;

/// Exit status when records were lost.
const EXIT_DATA_LOSS: u8 = 3;
/// Exit status when the ring's writer died mid-stream.
const EXIT_WRITER_DEAD: u8 = 4;
/// Exit status when interrupted by a signal before the work was done.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "tickpipe",
    version,
    about = "Lock-free stream processing for co-located trading"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish captured DBN records into a shared-memory ring, or send them as UDP datagrams.
    Replay {
        /// DBN captures (.dbn, .dbn.zst, or metadata-less *.frag*), replayed in order as one stream.
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        /// Ring file to create (normally under /dev/shm).
        #[arg(long, required_unless_present = "udp", conflicts_with = "udp")]
        ring: Option<PathBuf>,
        /// Send the records as UDP datagrams to this address (unicast or multicast group,
        /// e.g. 127.0.0.1:5000 or 239.1.1.1:5000) instead of publishing into a ring.
        #[arg(long, value_name = "ADDR")]
        udp: Option<std::net::SocketAddr>,
        /// UDP: most records in one datagram.
        #[arg(long, default_value_t = 64, requires = "udp")]
        records_per_datagram: u16,
        /// UDP: most bytes in one datagram, header included (1472 fits an Ethernet MTU).
        #[arg(long, default_value_t = 1472, requires = "udp")]
        max_datagram: usize,
        /// UDP: send from this local address (its interface carries multicast; 127.0.0.1 for
        /// receivers that joined on loopback).
        #[arg(long, value_name = "IP", requires = "udp")]
        udp_interface: Option<std::net::IpAddr>,
        /// UDP, testing: do not send the datagram with this sequence number (repeatable).
        #[arg(long, hide = true, requires = "udp")]
        drop_seq: Vec<u64>,
        /// UDP, testing: do not send every Nth datagram.
        #[arg(long, hide = true, requires = "udp")]
        drop_every: Option<u64>,
        /// 1 = as captured, N = N times faster, max = no pacing.
        #[arg(long, default_value = "max")]
        speed: Speed,
        /// Replay the captures this many times.
        #[arg(long = "loop", default_value_t = 1)]
        loops: u64,
        /// Shorten gaps between records longer than this (e.g. 1s, 250ms).
        #[arg(long, value_parser = parse_duration)]
        max_gap: Option<Duration>,
        /// Ring data area in bytes (power of two; K/M/G suffixes).
        #[arg(long, default_value = "64M", value_parser = parse_size)]
        capacity: usize,
        /// Group allowed to read the ring (mode 0640); default mode 0600.
        #[arg(long)]
        group: Option<String>,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
    },
    /// Drain a market-data ring into a DBN file.
    Record {
        /// Ring file to read.
        #[arg(long)]
        ring: PathBuf,
        /// Output file (.dbn or .dbn.zst).
        #[arg(long)]
        out: PathBuf,
        /// Seconds to wait for the ring to appear.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// Record only records published after attaching (default: from the oldest still held).
        #[arg(long)]
        from_tail: bool,
        /// Consider the writer dead when its heartbeat is older than this and its process is gone.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        stale_after: Duration,
        /// Write with std I/O even where io_uring is available.
        #[arg(long)]
        no_uring: bool,
        /// Exit 0 even if records were lost to laps.
        #[arg(long)]
        allow_loss: bool,
    },
    /// The quick-start job: generate a capture, replay it through a ring into a separate
    /// recorder process, and check the recording is identical.
    Demo {
        /// Working folder (capture cache, recording).
        #[arg(long, default_value = "target/tickpipe-demo")]
        dir: PathBuf,
        /// Generated events.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Replay speed (1, N, max).
        #[arg(long, default_value = "max")]
        speed: Speed,
    },
    /// Run the engine on a market-data ring until stopped (SIGINT/SIGTERM) or the writer finishes.
    Run {
        /// Engine profile (TOML; see tuning/profiles/).
        #[arg(long)]
        config: PathBuf,
        /// Market-data ring (overrides the profile's md_ring).
        #[arg(long)]
        md_ring: Option<PathBuf>,
        /// Signal ring to create (overrides the profile's signal_ring).
        #[arg(long)]
        signals: Option<PathBuf>,
        /// Seconds to wait for the market-data ring to appear with a live writer (a ring left by a
        /// dead writer is waited on until a new writer replaces it).
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// Start with the oldest record still in the ring (default: new records only).
        #[arg(long)]
        from_oldest: bool,
        /// Consider the writer dead when its heartbeat is older than this and its process is gone.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        stale_after: Duration,
        /// Model registry that the control plane promotes from (default models/registry).
        #[arg(long)]
        registry: Option<PathBuf>,
        /// Follow the registry: when the active version of a serving model (one loaded from
        /// REGISTRY/NAME/VERSION/) changes there, validate it and swap it in, behind the shadow
        /// gate. Needs the control plane ([control]); its thread checks every 500 ms.
        #[arg(long)]
        follow_registry: bool,
        /// Read market data from UDP datagrams on this address (a multicast group is joined)
        /// instead of a ring; `--from-oldest` then counts datagrams before the first received
        /// as lost.
        #[arg(long, value_name = "ADDR", conflicts_with = "md_ring")]
        udp: Option<std::net::SocketAddr>,
        /// UDP receive path: mio (non-blocking recv), uring (io_uring multishot where the kernel
        /// has it), uring-single (io_uring single-shot recv).
        #[arg(long, default_value = "mio", requires = "udp")]
        udp_backend: tickpipe::pipeline::udp::UdpBackend,
        /// UDP: end the stream when no datagram arrived for this long (after the first one).
        #[arg(long, value_parser = parse_duration, requires = "udp")]
        udp_idle_timeout: Option<Duration>,
        /// UDP: interface address for an IPv4 multicast join.
        #[arg(long, requires = "udp")]
        udp_interface: Option<std::net::Ipv4Addr>,
        /// UDP: largest datagram received whole (bytes).
        #[arg(long, default_value_t = 9216, requires = "udp")]
        udp_max_datagram: usize,
    },
    /// Replay into a private ring with the engine behind it; report latency per stage.
    Profile {
        /// Engine profile (TOML); default: all stages on one unpinned thread.
        #[arg(long)]
        config: Option<PathBuf>,
        /// DBN captures to replay (in order).
        #[arg(long, conflicts_with = "generate")]
        input: Vec<PathBuf>,
        /// Generate this many synthetic MBO events instead.
        #[arg(long)]
        generate: Option<u64>,
        /// Publish at this many events per second; latency is measured from each event's scheduled
        /// instant, so a stalled feeder or engine cannot hide behind coordinated omission.
        #[arg(long, conflicts_with = "max")]
        rate: Option<f64>,
        /// Publish as fast as possible (the default without --rate).
        #[arg(long)]
        max: bool,
        /// Threading mode (overrides the profile).
        #[arg(long)]
        mode: Option<tickpipe::pipeline::ThreadingMode>,
        /// Report folder (.hgrm per series, percentiles.svg, summary.json).
        #[arg(long, default_value = "target/profile")]
        out: PathBuf,
        /// Market-data ring bytes (power of two; K/M/G); default: room for the whole input.
        #[arg(long, value_parser = parse_size)]
        ring_capacity: Option<usize>,
        /// Print two earlier runs side by side with ratios (B/A) instead of running.
        #[arg(long, num_args = 2, value_names = ["DIR_A", "DIR_B"])]
        compare: Option<Vec<PathBuf>>,
        /// Run without the slow-lane forecaster (LSTM), for a side-by-side with it.
        #[arg(long)]
        no_lstm: bool,
        /// Run without any model (inference passes vectors through).
        #[arg(long)]
        no_models: bool,
        /// Hot-swap the scoring model this often during the replay (e.g. 10ms).
        #[arg(long, value_parser = parse_duration)]
        swap_every: Option<Duration>,
        /// Shadow this candidate beside the live models from the first event: an XGBoost file
        /// (a scoring candidate) or a jump-model directory (a regime candidate).
        #[arg(long, value_name = "MODEL")]
        shadow: Option<PathBuf>,
        /// Sample resident memory (RssAnon, RssFile, RssShmem) this often.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        rss_interval: Duration,
        /// Serve the HTTP control plane on this address while the replay runs (port 0: any;
        /// the address is printed). A profile's own `[control]` table serves it too.
        #[arg(long, value_name = "ADDR")]
        control: Option<std::net::SocketAddr>,
        /// Model registry that the control plane promotes from (default models/registry).
        #[arg(long)]
        registry: Option<PathBuf>,
        /// Feed the engine over loopback UDP datagrams (wire to signal) instead of the ring,
        /// received through this backend: mio, uring (multishot) or uring-single.
        #[arg(long, value_name = "BACKEND", num_args = 0..=1, default_missing_value = "mio")]
        udp: Option<tickpipe::pipeline::udp::UdpBackend>,
    },
    /// Export the feature vectors the engine computes for captures (CSV or Arrow IPC).
    Features {
        /// DBN captures, read in order as one stream (e.g. a snapshot, then a day).
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        /// Output file: .csv, or .arrow / .feather / .ipc for an Arrow IPC file.
        #[arg(long)]
        out: PathBuf,
        /// Also write the 1 s and 1 min OHLCV bars here (CSV).
        #[arg(long)]
        bars: Option<PathBuf>,
        /// Engine profile whose [features] table sets book sizes and windows.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Timestamp that drives the time windows: ts_recv or ts_event (overrides the profile).
        #[arg(long)]
        time_source: Option<tickpipe::pipeline::features::TimeSource>,
    },
    /// Fit and run models offline.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Read an engine's signal ring.
    Signals {
        #[command(subcommand)]
        command: SignalsCommand,
    },
    /// Print an engine's health rollup from its shared-memory health page (JSON). Exit status:
    /// 0 OK, 1 DEGRADED, 2 CRITICAL, 3 unknown (no page, unreadable, or its engine gone).
    Health {
        /// The health page (the profile's `[health] page`).
        #[arg(long)]
        page: PathBuf,
        /// Seconds to wait for the page to appear.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
        /// One line instead of pretty-printed JSON.
        #[arg(long)]
        compact: bool,
    },
    /// Inspect rings.
    Ring {
        #[command(subcommand)]
        command: RingCommand,
    },
    /// Inspect the host for a profile: what to change for low latency, and why.
    Tune {
        #[command(subcommand)]
        command: TuneCommand,
    },
    /// Write a seeded synthetic MBO capture.
    Gen {
        /// PRNG seed: the same seed gives the same file.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of MBO records.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Number of instruments.
        #[arg(long, default_value_t = 4)]
        instruments: u32,
        /// Output file (.dbn or .dbn.zst).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Fit a Statistical Jump Model (regimes) and write its model directory.
    FitSjm {
        /// Feature rows: a CSV with named columns (e.g. from `tickpipe features`).
        #[arg(long, conflicts_with = "bars", required_unless_present = "bars")]
        features: Option<PathBuf>,
        /// OHLCV bars (CSV with open, high, low, close, volume columns) instead of features.
        #[arg(long)]
        bars: Option<PathBuf>,
        /// Feature columns to fit on (comma-separated; default: spread_bps, depth_imbalance_l1,
        /// ofi_1s, rv_10s, log_return_10s, event_rate_1s).
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// Number of regimes K.
        #[arg(long)]
        states: usize,
        /// Jump penalty λ (cost of one regime switch, in squared z-score units).
        #[arg(long)]
        lambda: f64,
        /// k-means++ starts; the fit with the lowest objective is kept.
        #[arg(long, default_value_t = 10)]
        n_init: usize,
        /// Most coordinate-descent iterations per start.
        #[arg(long, default_value_t = 1000)]
        max_iter: usize,
        /// PRNG seed of the k-means++ starts.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output model directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Score CSV rows with a model (XGBoost file, jump-model directory or ONNX file).
    Predict {
        /// The model.
        #[arg(long)]
        model: PathBuf,
        /// Input rows: header = feature names; an empty cell is a missing value. For jump models
        /// and LSTMs the rows are one stream in order (per `instrument_id` if that column exists).
        #[arg(long)]
        input: PathBuf,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the registry's models with their active and available versions.
    List {
        /// Registry directory.
        #[arg(long, default_value = tickpipe::registry_cmd::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
    /// Show one model's active record and every version's manifest.
    Show {
        /// Model name.
        name: String,
        /// Registry directory.
        #[arg(long, default_value = tickpipe::registry_cmd::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
    /// Validate a version (default: the active one): checksums, schema, load, goldens, latency.
    Validate {
        /// Model name.
        name: String,
        /// Version (default: the active one).
        version: Option<String>,
        /// Registry directory.
        #[arg(long, default_value = tickpipe::registry_cmd::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
    /// Validate a version and make it the active one; with --control, in a running engine too
    /// (through its control plane: validated there, behind its shadow gate, then swapped in).
    Promote {
        /// Model name.
        name: String,
        /// Version.
        version: String,
        /// Registry directory (ignored with --control: the engine promotes from its own).
        #[arg(long, default_value = tickpipe::registry_cmd::DEFAULT_REGISTRY)]
        registry: PathBuf,
        /// A running engine's control plane (`tickpipe run`'s `[control] bind`).
        #[arg(long)]
        control: Option<std::net::SocketAddr>,
        /// Environment variable holding the API key for --control.
        #[arg(long, default_value = tickpipe::control_client::DEFAULT_KEY_ENV)]
        key_env: String,
    },
    /// Shadow a candidate version beside the live model in a running engine, stop it, or (with
    /// no name) print the running candidate's measurements and the promotion gate's verdict.
    Shadow {
        /// Model name (omit to print the report).
        name: Option<String>,
        /// Version to shadow.
        #[arg(conflicts_with = "stop")]
        version: Option<String>,
        /// Stop the running shadow of NAME.
        #[arg(long, requires = "name")]
        stop: bool,
        /// The engine's control plane (`tickpipe run`'s `[control] bind`).
        #[arg(long)]
        control: std::net::SocketAddr,
        /// Environment variable holding the API key.
        #[arg(long, default_value = tickpipe::control_client::DEFAULT_KEY_ENV)]
        key_env: String,
    },
    /// Validate the previous version and make it active again.
    Rollback {
        /// Model name.
        name: String,
        /// Registry directory.
        #[arg(long, default_value = tickpipe::registry_cmd::DEFAULT_REGISTRY)]
        registry: PathBuf,
    },
    /// Register a new version from an artifact, recording the model's outputs on golden rows.
    Register {
        /// Registry directory.
        #[arg(long, default_value = tickpipe::registry_cmd::DEFAULT_REGISTRY)]
        registry: PathBuf,
        /// Model name.
        #[arg(long)]
        name: String,
        /// New version.
        #[arg(long)]
        version: String,
        /// Kind: xgboost, sjm or onnx-lstm.
        #[arg(long)]
        kind: String,
        /// Artifact file (or jump-model directory).
        #[arg(long)]
        artifact: PathBuf,
        /// Golden input rows: CSV, header = column names, empty cell = missing.
        #[arg(long)]
        goldens_input: PathBuf,
        /// Training data start (free-form).
        #[arg(long, default_value = "unknown")]
        train_start: String,
        /// Training data end (free-form).
        #[arg(long, default_value = "unknown")]
        train_end: String,
        /// Metric, name=value (repeatable).
        #[arg(long)]
        metric: Vec<String>,
        /// Absolute tolerance of the golden comparison.
        #[arg(long, default_value_t = 1e-6)]
        tolerance: f64,
        /// Latency budget in microseconds per golden row.
        #[arg(long, default_value_t = 1000.0)]
        latency_budget_us: f64,
    },
}

#[derive(Subcommand, Debug)]
enum TuneCommand {
    /// Check CPUs, isolation, frequency, C-states, huge pages, IRQs, TSC and limits. Exit status:
    /// 0 tuned for the profile, 1 not tuned (the checks to change are listed), 2 bad arguments.
    Check {
        /// Engine profile to check for (default: spinning on every online CPU but the first).
        #[arg(long, conflicts_with = "cores")]
        profile: Option<PathBuf>,
        /// Check for a profile spinning on this many cores instead.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
        cores: Option<u16>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read /proc and /sys under this folder (a copy taken from another host).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SignalsCommand {
    /// Print signals as they are published.
    Tail {
        /// Signal ring file.
        #[arg(long)]
        ring: PathBuf,
        /// Start with the oldest signal still held (default: new signals only).
        #[arg(long)]
        from_start: bool,
        /// Stop after this many signals.
        #[arg(long)]
        count: Option<u64>,
        /// Seconds to wait for the ring to appear.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
}

#[derive(Subcommand, Debug)]
enum RingCommand {
    /// Print a ring's header, positions, readers and writer heartbeat.
    Stat {
        /// Ring file.
        path: PathBuf,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 2s, 250ms, 10us)"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "bad duration unit {unit:?} in {s:?} (ns, us, ms, s, m, h)"
            ));
        }
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("duration must be non-negative, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    if !(value.is_finite() && value >= 0.0) {
        anyhow::bail!("{flag} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?} (e.g. 4096, 64M, 1G)"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Replay {
            captures,
            ring,
            udp,
            records_per_datagram,
            max_datagram,
            udp_interface,
            drop_seq,
            drop_every,
            speed,
            loops,
            max_gap,
            capacity,
            group,
            quiet,
        } => {
            let stop = tickpipe::shutdown::on_signal()?;
            let opts = ReplayOptions {
                captures,
                ring: ring.unwrap_or_default(),
                udp: udp.map(|addr| tickpipe::udp_send::UdpSendOptions {
                    records_per_datagram,
                    max_datagram,
                    drop_seqs: drop_seq.into_iter().collect(),
                    drop_every,
                    interface: udp_interface,
                    ..tickpipe::udp_send::UdpSendOptions::new(addr)
                }),
                speed,
                loops,
                max_gap,
                ring_options: CreateOptions {
                    capacity,
                    group,
                    max_payload: tickpipe::capture::MAX_DBN_RECORD,
                    ..CreateOptions::default()
                },
                progress: !quiet,
            };
            let summary = tickpipe::replay::run(&opts, &stop)?;
            summary.print(&mut std::io::stdout().lock(), &opts)?;
            Ok(if summary.interrupted {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Features {
            captures,
            out,
            bars,
            config,
            time_source,
        } => {
            let mut settings = match &config {
                Some(path) => EngineConfig::load(path)?.features,
                None => Default::default(),
            };
            if let Some(t) = time_source {
                settings.time_source = t;
            }
            let opts = tickpipe::features_cmd::FeaturesOptions {
                format: tickpipe::features_cmd::Format::from_path(&out),
                captures,
                out,
                bars,
                settings,
            };
            let s = tickpipe::features_cmd::run(&opts)?;
            let b = &s.counts.book;
            println!(
                "features: {} records -> {} vectors to {}; {} bars; {} trades; undecodable {}",
                s.records,
                s.rows,
                opts.out.display(),
                s.bars,
                s.counts.trades,
                s.undecodable
            );
            println!("book: {b:?}");
            println!("windows: {:?}", s.counts.features);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command:
                ModelsCommand::FitSjm {
                    features,
                    bars,
                    columns,
                    states,
                    lambda,
                    n_init,
                    max_iter,
                    seed,
                    out,
                },
        } => {
            let fit = tickpipe::models::sjm::SjmFitConfig {
                n_states: states,
                jump_penalty: lambda,
                n_init,
                max_iter,
                seed,
                ..Default::default()
            };
            let s = tickpipe::models_cmd::fit_sjm(&tickpipe::models_cmd::FitSjmOptions {
                features,
                bars,
                columns,
                fit,
                out: out.clone(),
            })?;
            println!(
                "fit-sjm: {} of {} rows used (all features finite), features {:?} -> {}",
                s.used,
                s.rows,
                s.features,
                out.display()
            );
            println!("{}", s.report);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command: ModelsCommand::Predict { model, input, out },
        } => {
            let n = tickpipe::models_cmd::predict(&model, &input, &out)?;
            println!("predict: {n} rows -> {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command: ModelsCommand::List { registry },
        } => {
            print!("{}", tickpipe::registry_cmd::list(&registry)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command: ModelsCommand::Show { name, registry },
        } => {
            print!("{}", tickpipe::registry_cmd::show(&registry, &name)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command:
                ModelsCommand::Validate {
                    name,
                    version,
                    registry,
                },
        } => {
            let s = tickpipe::registry_cmd::validate(&registry, &name, version.as_deref())?;
            println!("{s}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command:
                ModelsCommand::Promote {
                    name,
                    version,
                    registry,
                    control,
                    key_env,
                },
        } => {
            match control {
                Some(addr) => {
                    let client = tickpipe::control_client::ControlClient::new(addr, &key_env);
                    let body = serde_json::json!({ "version": version }).to_string();
                    println!(
                        "{}",
                        client.post(&format!("/models/{name}/promote"), &body)?
                    );
                }
                None => println!(
                    "{}",
                    tickpipe::registry_cmd::promote(&registry, &name, &version)?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command:
                ModelsCommand::Shadow {
                    name,
                    version,
                    stop,
                    control,
                    key_env,
                },
        } => {
            let client = tickpipe::control_client::ControlClient::new(control, &key_env);
            let out = match (name, version, stop) {
                (None, _, _) => client.get("/models/shadow")?,
                (Some(name), None, true) => {
                    client.post(&format!("/models/{name}/shadow"), r#"{"action":"stop"}"#)?
                }
                (Some(name), Some(version), false) => client.post(
                    &format!("/models/{name}/shadow"),
                    &serde_json::json!({ "version": version }).to_string(),
                )?,
                (Some(_), _, _) => {
                    anyhow::bail!("models shadow NAME takes a VERSION to shadow, or --stop")
                }
            };
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command: ModelsCommand::Rollback { name, registry },
        } => {
            println!("{}", tickpipe::registry_cmd::rollback(&registry, &name)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Models {
            command:
                ModelsCommand::Register {
                    registry,
                    name,
                    version,
                    kind,
                    artifact,
                    goldens_input,
                    train_start,
                    train_end,
                    metric,
                    tolerance,
                    latency_budget_us,
                },
        } => {
            let o = tickpipe::registry_cmd::RegisterOptions {
                registry,
                name,
                version,
                kind,
                artifact,
                goldens_input,
                train_start,
                train_end,
                metrics: metric,
                tolerance,
                latency_budget_us,
            };
            println!("{}", tickpipe::registry_cmd::register(&o)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            ring,
            out,
            wait,
            from_tail,
            stale_after,
            no_uring,
            allow_loss,
        } => {
            let stop = tickpipe::shutdown::on_signal()?;
            if !(wait.is_finite() && wait >= 0.0) {
                anyhow::bail!("--wait must be a non-negative number of seconds");
            }
            let opts = RecordOptions {
                ring,
                out,
                wait: Duration::from_secs_f64(wait),
                start: if from_tail {
                    StartAt::Tail
                } else {
                    StartAt::Oldest
                },
                stale_after,
                prefer_uring: !no_uring,
            };
            let s = tickpipe::record::run(&opts, &stop)?;
            let end = match s.end {
                EndReason::WriterFinished => "writer finished".to_string(),
                EndReason::Signal => "stopped by signal".to_string(),
                EndReason::WriterDead { heartbeat_age_ms } => {
                    format!("writer died (heartbeat {heartbeat_age_ms} ms old, process gone)")
                }
            };
            let backend = match &s.backend.1 {
                Some(why) => format!("{} (io_uring unavailable: {why})", s.backend.0),
                None => s.backend.0.to_string(),
            };
            println!(
                "record: {} records ({} bytes) to {} in {:.3} s via {backend}; missed {} in {} laps; {end}",
                s.records,
                s.bytes,
                opts.out.display(),
                s.elapsed.as_secs_f64(),
                s.missed,
                s.laps
            );
            if s.missed > 0 && !allow_loss {
                eprintln!(
                    "tickpipe record: error: {} records were lost (lapped by the writer); the file has gaps",
                    s.missed
                );
                return Ok(ExitCode::from(EXIT_DATA_LOSS));
            }
            if matches!(s.end, EndReason::WriterDead { .. }) {
                eprintln!(
                    "tickpipe record: error: {end}; the recording ends where the writer stopped"
                );
                return Ok(ExitCode::from(EXIT_WRITER_DEAD));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            md_ring,
            signals,
            wait,
            from_oldest,
            stale_after,
            registry,
            follow_registry,
            udp,
            udp_backend,
            udp_idle_timeout,
            udp_interface,
            udp_max_datagram,
        } => {
            let stop = tickpipe::shutdown::on_signal()?;
            let cfg = EngineConfig::load(&config)?;
            if follow_registry && cfg.control.is_none() {
                anyhow::bail!(
                    "--follow-registry needs the control plane (a [control] table in {})",
                    config.display()
                );
            }
            let udp = udp.map(|addr| tickpipe::pipeline::udp::UdpConfig {
                backend: udp_backend,
                interface: udp_interface,
                idle_timeout: udp_idle_timeout,
                max_datagram: udp_max_datagram,
                from_start: from_oldest,
                ..tickpipe::pipeline::udp::UdpConfig::new(addr)
            });
            let md_ring = match (&udp, md_ring.or_else(|| cfg.md_ring.clone())) {
                (_, Some(p)) => p,
                (Some(_), None) => PathBuf::new(),
                (None, None) => anyhow::bail!(
                    "no market-data ring: give --md-ring, --udp, or set md_ring in {}",
                    config.display()
                ),
            };
            let signal_ring = signals
                .or_else(|| cfg.signal_ring.clone())
                .unwrap_or_else(|| tickpipe::engine_cmd::default_ring_path("signals"));
            let opts = RunOptions {
                config: cfg,
                md_ring,
                udp,
                signal_ring,
                wait: seconds("--wait", wait)?,
                from_oldest,
                stale_after,
                registry: tickpipe::registry_cmd::registry_dir(registry.as_deref()),
                follow_registry,
                startup: Default::default(),
            };
            let tickpipe::engine_cmd::RunOutcome { end, report, udp } =
                tickpipe::engine_cmd::run(&opts, &stop)?;
            let series = tickpipe::engine_cmd::series(&report)?;
            let mut out = std::io::stdout().lock();
            tickpipe::profile_report::print_table(
                &mut out,
                &tickpipe::profile_report::ProfileReport {
                    title: format!("tickpipe run: {} mode", report.mode),
                    series,
                    run: Vec::new(),
                },
            )?;
            tickpipe::engine_cmd::print_counters(&mut out, &report)?;
            if let Some(u) = &udp {
                use std::io::Write as _;
                writeln!(out, "udp: {u}")?;
            }
            Ok(match end {
                RunEnd::WriterDead => ExitCode::from(EXIT_WRITER_DEAD),
                RunEnd::Corrupt => {
                    eprintln!(
                        "tickpipe run: error: {}",
                        report.ingest.fatal.as_deref().unwrap_or("ingest stopped")
                    );
                    ExitCode::FAILURE
                }
                _ if report.main_path_loss() > 0 => {
                    eprintln!(
                        "tickpipe run: error: {} records were lost ({})",
                        report.main_path_loss(),
                        if udp.is_some() {
                            "gaps in the UDP feed"
                        } else {
                            "lapped by the writer"
                        }
                    );
                    ExitCode::from(EXIT_DATA_LOSS)
                }
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Profile {
            config,
            input,
            generate,
            rate,
            max: _,
            mode,
            out,
            ring_capacity,
            compare,
            no_lstm,
            no_models,
            swap_every,
            shadow,
            rss_interval,
            control,
            registry,
            udp,
        } => {
            if let Some(dirs) = compare {
                tickpipe::profile_report::compare(
                    &mut std::io::stdout().lock(),
                    &dirs[0],
                    &dirs[1],
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let stop = tickpipe::shutdown::on_signal()?;
            let (mut cfg, mut config_name) = match &config {
                Some(p) => (EngineConfig::load(p)?, p.display().to_string()),
                None if input.is_empty() => {
                    // Generated input: per-instrument state sized for the generator's universe,
                    // as a deployment sizes it for its symbols (see `reserved_summary`).
                    let mut cfg = EngineConfig {
                        models: tickpipe::engine_cmd::shipped_models(),
                        ..EngineConfig::default()
                    };
                    // Orders: 16 times what the generator ever rests on one instrument.
                    cfg.features.max_instruments =
                        tickpipe::synth::SynthConfig::default().instruments as usize;
                    cfg.features.max_orders = 16 * tickpipe::synth::MAX_RESTING_ORDERS;
                    (
                        cfg,
                        "built-in default, sized for the generated instruments".to_string(),
                    )
                }
                None => {
                    let cfg = EngineConfig {
                        models: tickpipe::engine_cmd::shipped_models(),
                        ..EngineConfig::default()
                    };
                    (cfg, "built-in default".to_string())
                }
            };
            if no_models {
                cfg.models = Default::default();
                config_name += " (no models)";
            } else if no_lstm {
                cfg.models.lstm = None;
                config_name += " (no LSTM)";
            }
            if let Some(m) = mode {
                cfg.mode = m;
                cfg.validate()?;
            }
            if shadow.is_some() {
                cfg.shadow.enabled = true;
            }
            if let Some(addr) = control {
                let c = cfg.control.get_or_insert_with(Default::default);
                c.bind = addr;
                c.validate()?;
            }
            if rss_interval.is_zero() {
                anyhow::bail!("--rss-interval must be longer than zero");
            }
            if let Some(r) = rate
                && !(r.is_finite() && r > 0.0)
            {
                anyhow::bail!("--rate must be a positive number of events per second");
            }
            let input = if input.is_empty() {
                ProfileInput::Generate(generate.unwrap_or(1_000_000))
            } else {
                ProfileInput::Captures(input)
            };
            let report = tickpipe::engine_cmd::profile(
                &ProfileOptions {
                    config: cfg,
                    config_name,
                    input,
                    rate,
                    out,
                    ring_capacity,
                    swap_every,
                    shadow,
                    rss_interval,
                    registry: tickpipe::registry_cmd::registry_dir(registry.as_deref()),
                    udp,
                },
                &stop,
            )?;
            if report.main_path_loss() > 0 {
                eprintln!(
                    "tickpipe profile: error: {} events were lost on the main path (see the counters above)",
                    report.main_path_loss()
                );
                return Ok(ExitCode::from(EXIT_DATA_LOSS));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Signals {
            command:
                SignalsCommand::Tail {
                    ring,
                    from_start,
                    count,
                    wait,
                },
        } => {
            let stop = tickpipe::shutdown::on_signal()?;
            let (_, missed) = tickpipe::engine_cmd::tail(
                &TailOptions {
                    ring,
                    from_start,
                    count,
                    wait: seconds("--wait", wait)?,
                },
                &stop,
            )?;
            if missed > 0 {
                eprintln!("tickpipe signals tail: error: {missed} signals were missed (lapped)");
                return Ok(ExitCode::from(EXIT_DATA_LOSS));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Health {
            page,
            wait,
            compact,
        } => Ok(ExitCode::from(tickpipe::health_cmd::health(
            &page,
            seconds("--wait", wait)?,
            compact,
            &mut std::io::stdout().lock(),
        ))),
        Command::Ring {
            command: RingCommand::Stat { path },
        } => {
            print!("{}", tickpipe::ringstat::report(&path)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, events, speed } => {
            let stop = tickpipe::shutdown::on_signal()?;
            tickpipe::demo::run(&tickpipe::demo::DemoOptions { dir, events, speed }, &stop)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tune {
            command:
                TuneCommand::Check {
                    profile,
                    cores,
                    json,
                    root,
                },
        } => {
            let sel = match (profile, cores) {
                (Some(p), _) => tickpipe::tune::Selection::Profile(p),
                (None, Some(n)) => tickpipe::tune::Selection::Cores(usize::from(n)),
                (None, None) => tickpipe::tune::Selection::Default,
            };
            let out = &mut std::io::stdout().lock();
            Ok(ExitCode::from(tickpipe::tune::check_command(
                &root, &sel, json, out,
            )))
        }
        Command::Gen {
            seed,
            events,
            instruments,
            out,
        } => {
            let cfg = SynthConfig {
                seed,
                events,
                instruments,
                ..SynthConfig::default()
            };
            let stats = tickpipe::synth::write_capture(&cfg, &out)?;
            println!(
                "gen: {} records to {} ({stats:?})",
                stats.records,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tickpipe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
