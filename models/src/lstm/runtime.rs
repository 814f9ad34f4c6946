//! Finding, fetching and loading the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`: nothing is linked at build time, and the library is opened
//! with `dlopen` at run time. tickpipe pins ONNX Runtime **1.31.1** and takes the library from the
//! `onnxruntime==1.31.1` wheel on PyPI, where it lives at
//! `onnxruntime/capi/libonnxruntime.so.1.31.1`.
//!
//! # Lookup order
//!
//! 1. `TICKPIPE_ORT_LIB`: a path to the `.so`. When set (non-empty) it is the only candidate: a
//!    missing or non-ELF file is an error, never a silent fallback.
//! 2. The cache: `${TICKPIPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tickpipe}/onnxruntime-1.31.1/libonnxruntime.so.1.31.1`.
//! 3. A fetch, unless `TICKPIPE_ORT_OFFLINE=1`: `python3 -m pip download --no-deps
//!    --only-binary=:all: ... onnxruntime==1.31.1` into a scratch folder next to the cache entry,
//!    then Python's `zipfile` extracts the one member, which is checked (non-empty, ELF magic) and
//!    renamed into place. The rename is atomic, so processes racing to fill the cache each write
//!    their own temporary file and the last rename wins with identical bytes; a reader never sees
//!    a half-written library. Each child process runs under a hard overall timeout
//!    (`TICKPIPE_ORT_FETCH_TIMEOUT_S`, default 300 s) and is killed when it expires.
//!
//! Other knobs: `TICKPIPE_PYTHON` names the interpreter used for the fetch (default `python3`).
//! On an air-gapped host, set `TICKPIPE_ORT_OFFLINE=1` and provide the library through
//! `TICKPIPE_ORT_LIB` or by copying it to the cache path.
//!
//! # Once per process
//!
//! [`ensure_runtime`] resolves the library and initialises `ort` with it at most once per process;
//! the outcome, success or error, is kept and returned to every later caller, so threads racing
//! to load models are safe and a failure does not trigger a second download. `ort` must never be
//! used before this succeeded: with `load-dynamic`, its fallback would be to `dlopen` a library
//! by its bare name and panic if that fails, so every `ort` call in this crate goes through
//! [`environment`] first.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The ONNX Runtime version tickpipe pins.
pub const ORT_VERSION: &str = "1.31.1";
/// File name of the shared library, as in the wheel and in the cache.
pub const LIB_NAME: &str = "libonnxruntime.so.1.31.1";
/// Path of the shared library inside the `onnxruntime==1.31.1` wheel.
pub const WHEEL_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";
/// Environment variable naming the library to load, bypassing the cache and the fetch.
pub const ENV_LIB: &str = "TICKPIPE_ORT_LIB";
/// Environment variable forbidding the fetch (`1` or `true`).
pub const ENV_OFFLINE: &str = "TICKPIPE_ORT_OFFLINE";
/// Environment variable overriding the cache root (default `$XDG_CACHE_HOME/tickpipe`).
pub const ENV_CACHE: &str = "TICKPIPE_CACHE";
/// Environment variable naming the Python interpreter used for the fetch (default `python3`).
pub const ENV_PYTHON: &str = "TICKPIPE_PYTHON";
/// Environment variable overriding the fetch's overall timeout, in whole seconds (default 300).
pub const ENV_FETCH_TIMEOUT: &str = "TICKPIPE_ORT_FETCH_TIMEOUT_S";

const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(300);
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const STDERR_TAIL_BYTES: usize = 2000;

/// Why the ONNX Runtime library could not be provided. Cloneable so that the once-per-process
/// outcome can be handed to every caller; I/O causes are kept as text for the same reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// `TICKPIPE_ORT_LIB` is set but names no readable file.
    #[error(
        "{ENV_LIB} is set to `{}`, but no file is there ({reason}); point it at a libonnxruntime.so.{ORT_VERSION} or unset it to use the cache at `{}`",
        path.display(),
        cache.display()
    )]
    EnvLibMissing {
        /// The value of `TICKPIPE_ORT_LIB`.
        path: PathBuf,
        /// What the file system said.
        reason: String,
        /// The cache path that would be used without the variable.
        cache: PathBuf,
    },
    /// A candidate file exists but is not a shared library.
    #[error("`{}` (from {source_name}) is not a usable shared library: {reason}", path.display())]
    InvalidLibrary {
        /// The file.
        path: PathBuf,
        /// Where the path came from: `TICKPIPE_ORT_LIB`, the cache, or the fetched wheel.
        source_name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable holds a value this module does not understand.
    #[error("{var}={value:?} is not understood: expected {expected}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// No cache root: none of `TICKPIPE_CACHE`, `XDG_CACHE_HOME`, `HOME` is set.
    #[error(
        "no cache folder for ONNX Runtime: none of {ENV_CACHE}, XDG_CACHE_HOME, HOME is set; set {ENV_LIB} to a libonnxruntime.so.{ORT_VERSION} or {ENV_CACHE} to a writable folder"
    )]
    NoCacheDir,
    /// Offline mode and nothing in the cache.
    #[error(
        "ONNX Runtime {ORT_VERSION} not found: {ENV_LIB} is not set, `{}` does not exist, and {ENV_OFFLINE} forbids fetching it. \
         Provide the library (it is `{WHEEL_MEMBER}` inside the onnxruntime=={ORT_VERSION} wheel from PyPI) \
         by setting {ENV_LIB}=/path/to/{LIB_NAME} or copying it to that cache path",
        cache.display()
    )]
    Offline {
        /// The cache path that was tried.
        cache: PathBuf,
    },
    /// The fetch failed: the child process could not start, failed, timed out, or left no wheel.
    #[error(
        "ONNX Runtime {ORT_VERSION} not found: {ENV_LIB} is not set, `{}` does not exist, and fetching it failed: \
         `{command}` {outcome}; stderr tail: {stderr_tail:?}. \
         Set {ENV_LIB}=/path/to/{LIB_NAME} to use a local copy (or {ENV_OFFLINE}=1 on hosts without PyPI)",
        cache.display()
    )]
    Fetch {
        /// The cache path that was tried first.
        cache: PathBuf,
        /// The command that was run.
        command: String,
        /// What happened: exit status, timeout, spawn error, missing wheel.
        outcome: String,
        /// The last part of its standard error.
        stderr_tail: String,
    },
    /// The cache folder could not be created or written.
    #[error("cannot install ONNX Runtime into `{}`: {reason}", dir.display())]
    Cache {
        /// The folder.
        dir: PathBuf,
        /// What the file system said.
        reason: String,
    },
    /// `ort` refused the library (dlopen failure, missing `OrtGetApiBase`, too old a version) or
    /// could not create its environment.
    #[error("loading ONNX Runtime from `{}` failed: {reason}", path.display())]
    Load {
        /// The library.
        path: PathBuf,
        /// The reason `ort` gave.
        reason: String,
    },
}

/// Where to look for the library and how to fetch it; [`RuntimeConfig::from_env`] reads the
/// environment variables, tests build one directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// An explicit library path (`TICKPIPE_ORT_LIB`); when set, the only candidate.
    pub ort_lib: Option<PathBuf>,
    /// The cache root (`TICKPIPE_CACHE`, or `$XDG_CACHE_HOME/tickpipe`, or `$HOME/.cache/tickpipe`);
    /// the library goes to `<cache_root>/onnxruntime-1.31.1/libonnxruntime.so.1.31.1`.
    pub cache_root: Option<PathBuf>,
    /// Never fetch (`TICKPIPE_ORT_OFFLINE`).
    pub offline: bool,
    /// The Python interpreter for the fetch (`TICKPIPE_PYTHON`, default `python3`).
    pub python: OsString,
    /// The hard limit for each child process of the fetch.
    pub fetch_timeout: Duration,
}

impl RuntimeConfig {
    /// Reads the configuration from the environment variables listed in the [module docs](self).
    ///
    /// # Errors
    /// [`RuntimeError::InvalidEnv`] for an unparseable `TICKPIPE_ORT_OFFLINE` or
    /// `TICKPIPE_ORT_FETCH_TIMEOUT_S`.
    pub fn from_env() -> Result<Self, RuntimeError> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let offline = match var(ENV_OFFLINE) {
            None => false,
            Some(v) => match v.to_string_lossy().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(RuntimeError::InvalidEnv {
                        var: ENV_OFFLINE,
                        value: v.to_string_lossy().into_owned(),
                        expected: "1/true/yes or 0/false/no",
                    });
                }
            },
        };
        let fetch_timeout = match var(ENV_FETCH_TIMEOUT) {
            None => DEFAULT_FETCH_TIMEOUT,
            Some(v) => match v.to_string_lossy().parse::<u64>() {
                Ok(s) if s > 0 => Duration::from_secs(s),
                _ => {
                    return Err(RuntimeError::InvalidEnv {
                        var: ENV_FETCH_TIMEOUT,
                        value: v.to_string_lossy().into_owned(),
                        expected: "a positive whole number of seconds",
                    });
                }
            },
        };
        let cache_root = var(ENV_CACHE)
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("tickpipe")))
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache").join("tickpipe")));
        Ok(Self {
            ort_lib: var(ENV_LIB).map(PathBuf::from),
            cache_root,
            offline,
            python: var(ENV_PYTHON).unwrap_or_else(|| OsString::from("python3")),
            fetch_timeout,
        })
    }

    /// The cache entry: `<cache_root>/onnxruntime-1.31.1/libonnxruntime.so.1.31.1`.
    #[must_use]
    pub fn cache_path(&self) -> Option<PathBuf> {
        self.cache_root
            .as_ref()
            .map(|r| r.join(format!("onnxruntime-{ORT_VERSION}")).join(LIB_NAME))
    }
}

/// Resolves the library path for `config` in the [lookup order](self#lookup-order), fetching into
/// the cache if needed. Does not touch `ort`; see [`ensure_runtime`] for that.
///
/// # Errors
/// Every [`RuntimeError`] but `Load`; each names what was tried.
pub fn locate(config: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    let cache = config.cache_path();
    let cache_display = cache
        .clone()
        .unwrap_or_else(|| PathBuf::from("<no cache folder>"));
    if let Some(lib) = &config.ort_lib {
        let meta = fs::metadata(lib).map_err(|e| RuntimeError::EnvLibMissing {
            path: lib.clone(),
            reason: e.to_string(),
            cache: cache_display.clone(),
        })?;
        if !meta.is_file() {
            return Err(RuntimeError::EnvLibMissing {
                path: lib.clone(),
                reason: "not a regular file".into(),
                cache: cache_display,
            });
        }
        verify_library(lib, ENV_LIB)?;
        // `ort` resolves relative paths against the executable's folder; the user meant the cwd.
        return fs::canonicalize(lib).map_err(|e| RuntimeError::EnvLibMissing {
            path: lib.clone(),
            reason: e.to_string(),
            cache: cache_display,
        });
    }
    let cache = cache.ok_or(RuntimeError::NoCacheDir)?;
    if cache.exists() {
        verify_library(&cache, "the cache")?;
        return Ok(cache);
    }
    if config.offline {
        return Err(RuntimeError::Offline { cache });
    }
    fetch_into_cache(config, &cache)?;
    Ok(cache)
}

/// Checks that `path` is a non-empty file that starts with the ELF magic.
fn verify_library(path: &Path, source_name: &'static str) -> Result<(), RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidLibrary {
        path: path.to_path_buf(),
        source_name,
        reason,
    };
    let mut file = fs::File::open(path).map_err(|e| invalid(e.to_string()))?;
    let len = file.metadata().map_err(|e| invalid(e.to_string()))?.len();
    if len == 0 {
        return Err(invalid("the file is empty".into()));
    }
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|e| invalid(format!("cannot read its header: {e}")))?;
    if magic != ELF_MAGIC {
        return Err(invalid(format!("no ELF magic (starts with {magic:02x?})")));
    }
    Ok(())
}

/// A name no other process or thread uses: pid, time and a process-wide counter.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Relaxed: the counter only has to hand out distinct values.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

/// Removes a scratch file or folder when dropped, whatever path the fetch takes out.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

fn fetch_into_cache(config: &RuntimeConfig, cache: &Path) -> Result<(), RuntimeError> {
    let dir = cache.parent().unwrap_or(Path::new("."));
    let cache_err = |reason: String| RuntimeError::Cache {
        dir: dir.to_path_buf(),
        reason,
    };
    fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
    let suffix = unique_suffix();
    let download = Scratch(dir.join(format!(".download-{suffix}")));
    fs::create_dir(&download.0).map_err(|e| cache_err(e.to_string()))?;

    let python = config.python.to_string_lossy().into_owned();
    let download_dir = download.0.to_string_lossy().into_owned();
    let pip_args: Vec<String> = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--timeout",
        "30",
        "--retries",
        "1",
        "--disable-pip-version-check",
        "--no-input",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .chain([
        format!("onnxruntime=={ORT_VERSION}"),
        "-d".into(),
        download_dir,
    ])
    .collect();
    let fetch_err = |command: &str, outcome: String, stderr_tail: String| RuntimeError::Fetch {
        cache: cache.to_path_buf(),
        command: command.to_string(),
        outcome,
        stderr_tail,
    };

    let pip_cmd = format!("{python} {}", pip_args.join(" "));
    run_with_timeout(
        &config.python,
        &pip_args,
        &download.0,
        "pip",
        config.fetch_timeout,
    )
    .map_err(|(outcome, tail)| fetch_err(&pip_cmd, outcome, tail))?;

    let wheel = fs::read_dir(&download.0)
        .map_err(|e| cache_err(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("onnxruntime-") && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            fetch_err(
                &pip_cmd,
                "exited successfully but left no onnxruntime wheel".into(),
                String::new(),
            )
        })?;

    // The member goes straight to a unique name in the cache folder (same file system), and is
    // renamed over the final name only after it has been checked.
    let part = Scratch(dir.join(format!(".{LIB_NAME}.{suffix}.part")));
    let extract_src = "import shutil, sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
         shutil.copyfileobj(src, dst, 1 << 20)\n";
    let extract_args = vec![
        "-c".to_string(),
        extract_src.to_string(),
        wheel.to_string_lossy().into_owned(),
        WHEEL_MEMBER.to_string(),
        part.0.to_string_lossy().into_owned(),
    ];
    let extract_cmd = format!(
        "{python} -c <zipfile extract of {WHEEL_MEMBER}> {} {}",
        wheel.display(),
        part.0.display()
    );
    run_with_timeout(
        &config.python,
        &extract_args,
        &download.0,
        "extract",
        config.fetch_timeout,
    )
    .map_err(|(outcome, tail)| fetch_err(&extract_cmd, outcome, tail))?;
    verify_library(&part.0, "the fetched wheel")?;
    fs::rename(&part.0, cache).map_err(|e| cache_err(format!("rename into place: {e}")))?;
    Ok(())
}

/// Runs `program args` with stdin closed and stdout/stderr in files under `scratch` (files, not
/// pipes, so a chatty child can never block on a full pipe), killing it at `timeout`.
/// On failure returns (outcome, stderr tail).
fn run_with_timeout(
    program: &std::ffi::OsStr,
    args: &[String],
    scratch: &Path,
    tag: &str,
    timeout: Duration,
) -> Result<(), (String, String)> {
    let out_path = scratch.join(format!("{tag}.stdout"));
    let err_path = scratch.join(format!("{tag}.stderr"));
    let open = |p: &Path| {
        fs::File::create(p).map_err(|e| {
            (
                format!("could not create `{}`: {e}", p.display()),
                String::new(),
            )
        })
    };
    let stdout = open(&out_path)?;
    let stderr = open(&err_path)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env("PIP_NO_INPUT", "1")
        .spawn()
        .map_err(|e| (format!("could not be started: {e}"), String::new()))?;
    let start = Instant::now();
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    format!("timed out after {} s and was killed", timeout.as_secs_f64()),
                    stderr_tail(&err_path),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    format!("could not be waited for: {e}"),
                    stderr_tail(&err_path),
                ));
            }
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err((format!("failed ({status})"), stderr_tail(&err_path)))
    }
}

fn stderr_tail(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// The process-wide outcome: the library path and the `ort` environment built on it.
static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), RuntimeError>> =
    OnceLock::new();

/// Makes ONNX Runtime 1.31.1 available to this process and returns the library's path.
///
/// Reads [`RuntimeConfig::from_env`], [`locate`]s (and if needed fetches) the library, and
/// initialises `ort` from it. Runs at most once per process; later calls, from any thread,
/// return the first outcome (a failure included: fix the environment and restart).
///
/// # Errors
/// The [`RuntimeError`] of the first call, naming every place that was tried.
pub fn ensure_runtime() -> Result<PathBuf, RuntimeError> {
    init()
        .as_ref()
        .map(|(path, _)| path.clone())
        .map_err(Clone::clone)
}

/// The process's `ort` environment, built by [`ensure_runtime`] (which this calls), for code that
/// needs its own `ort` sessions next to [`LstmModel`](super::LstmModel)s (`ort` allows one
/// environment per process).
///
/// # Errors
/// As [`ensure_runtime`].
pub fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    init().as_ref().map(|(_, env)| env).map_err(Clone::clone)
}

fn init() -> &'static Result<(PathBuf, ort::environment::Environment), RuntimeError> {
    RUNTIME.get_or_init(|| {
        let config = RuntimeConfig::from_env()?;
        let path = locate(&config)?;
        let load_err = |reason: String| RuntimeError::Load {
            path: path.clone(),
            reason,
        };
        let builder = ort::init_from(&path).map_err(|e| load_err(load_error_text(&e)))?;
        let env = builder
            .with_name("tickpipe")
            .with_telemetry(false)
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        Ok((path, env))
    })
}

/// `ort`'s message plus, for a `dlopen` failure, the loader's own reason (missing dependency,
/// wrong architecture, ...), which `ort` keeps only as the error's source.
fn load_error_text(e: &ort::LoadDynamicError) -> String {
    let mut text = e.to_string();
    if let ort::LoadDynamicError::Dlopen { error, .. } = e {
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
    }
    text
}
