//! `tickpipe features`: runs the feature stage's own code ([`FeatureEngine`]) over captures and
//! writes one row per emitted vector, so that models are trained on the numbers that serve.
//!
//! Output formats: CSV (full-precision shortest round-trip decimals; an undefined value is an
//! empty cell) or Arrow IPC file (`.arrow`, `.feather`, `.ipc`; undefined values stay NaN). Both
//! carry `ts_recv`, `ts_event` and `instrument_id` ahead of the features in schema order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{Float64Builder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use tickpipe_pipeline::config::FeatureSettings;
use tickpipe_pipeline::feature_engine::{FeatureEngine, FeatureEngineCounts};
use tickpipe_pipeline::features::{Bar, N_FEATURES, SCHEMA, SCHEMA_NAME, SCHEMA_VERSION};
use tickpipe_pipeline::msg::{Event, MAX_PARTS, Tick};

use crate::capture::Capture;

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// Arrow IPC file.
    Arrow,
}

impl Format {
    /// The format a file name implies (`.arrow`, `.feather`, `.ipc`: Arrow; otherwise CSV).
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("arrow" | "feather" | "ipc") => Format::Arrow,
            _ => Format::Csv,
        }
    }
}

/// What to export.
#[derive(Debug, Clone)]
pub struct FeaturesOptions {
    /// Captures, read in order as one stream.
    pub captures: Vec<PathBuf>,
    /// Output file for the vectors.
    pub out: PathBuf,
    /// Its format.
    pub format: Format,
    /// Output file for the time bars (CSV), if wanted.
    pub bars: Option<PathBuf>,
    /// Book and window settings (the engine profile's `[features]` table).
    pub settings: FeatureSettings,
}

/// What an export did.
#[derive(Debug, Clone)]
pub struct FeaturesSummary {
    /// Records read.
    pub records: u64,
    /// Records that were not readable events (counted, skipped).
    pub undecodable: u64,
    /// Rows written.
    pub rows: u64,
    /// Bars written.
    pub bars: u64,
    /// The feature stage's counters.
    pub counts: FeatureEngineCounts,
}

/// Vector rows, in either format.
trait RowSink {
    fn row(&mut self, t: &Tick) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

struct CsvRows {
    out: BufWriter<File>,
    path: PathBuf,
}

impl CsvRows {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = String::from("ts_recv,ts_event,instrument_id");
        for spec in SCHEMA.iter() {
            header.push(',');
            header.push_str(spec.name);
        }
        writeln!(out, "{header}").with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            out,
            path: path.to_path_buf(),
        })
    }
}

impl RowSink for CsvRows {
    fn row(&mut self, t: &Tick) -> Result<()> {
        let mut line = String::with_capacity(32 * (N_FEATURES + 3));
        write_row(&mut line, t);
        self.out
            .write_all(line.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// One CSV row: shortest round-trip decimals (they parse back to the same f64), NaN as empty.
fn write_row(line: &mut String, t: &Tick) {
    use std::fmt::Write as _;
    let _ = write!(line, "{},{},{}", t.ts_recv, t.ts_event, t.instrument_id);
    for v in &t.values {
        line.push(',');
        if !v.is_nan() {
            let _ = write!(line, "{v:?}");
        }
    }
    line.push('\n');
}

const ARROW_BATCH: usize = 8192;

struct ArrowRows {
    writer: arrow_ipc::writer::FileWriter<BufWriter<File>>,
    schema: Arc<Schema>,
    ts_recv: UInt64Builder,
    ts_event: UInt64Builder,
    instrument: UInt32Builder,
    values: Vec<Float64Builder>,
    pending: usize,
    path: PathBuf,
}

impl ArrowRows {
    fn create(path: &Path) -> Result<Self> {
        let mut fields = vec![
            Field::new("ts_recv", DataType::UInt64, false),
            Field::new("ts_event", DataType::UInt64, false),
            Field::new("instrument_id", DataType::UInt32, false),
        ];
        fields.extend(
            SCHEMA
                .iter()
                .map(|s| Field::new(s.name, DataType::Float64, false)),
        );
        let metadata = [
            ("tickpipe.schema".to_string(), SCHEMA_NAME.to_string()),
            (
                "tickpipe.schema_version".to_string(),
                SCHEMA_VERSION.to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let writer = arrow_ipc::writer::FileWriter::try_new(BufWriter::new(file), &schema)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            writer,
            schema,
            ts_recv: UInt64Builder::with_capacity(ARROW_BATCH),
            ts_event: UInt64Builder::with_capacity(ARROW_BATCH),
            instrument: UInt32Builder::with_capacity(ARROW_BATCH),
            values: (0..N_FEATURES)
                .map(|_| Float64Builder::with_capacity(ARROW_BATCH))
                .collect(),
            pending: 0,
            path: path.to_path_buf(),
        })
    }

    fn write_batch(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts_recv.finish()),
            Arc::new(self.ts_event.finish()),
            Arc::new(self.instrument.finish()),
        ];
        columns.extend(
            self.values
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .context("building an Arrow record batch")?;
        self.writer
            .write(&batch)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.pending = 0;
        Ok(())
    }
}

impl RowSink for ArrowRows {
    fn row(&mut self, t: &Tick) -> Result<()> {
        self.ts_recv.append_value(t.ts_recv);
        self.ts_event.append_value(t.ts_event);
        self.instrument.append_value(t.instrument_id);
        for (b, v) in self.values.iter_mut().zip(&t.values) {
            b.append_value(*v);
        }
        self.pending += 1;
        if self.pending == ARROW_BATCH {
            self.write_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.write_batch()?;
        self.writer
            .finish()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// A DBN fixed-point price as an exact decimal.
pub fn fixed_price(p: i64) -> String {
    let sign = if p < 0 { "-" } else { "" };
    let a = p.unsigned_abs();
    let (int, frac) = (a / 1_000_000_000, a % 1_000_000_000);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

struct BarRows {
    out: BufWriter<File>,
    path: PathBuf,
    error: Option<std::io::Error>,
    count: u64,
}

impl BarRows {
    fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        writeln!(
            out,
            "instrument_id,interval_s,ts_start,open,high,low,close,volume,trades"
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            out,
            path: path.to_path_buf(),
            error: None,
            count: 0,
        })
    }

    fn bar(&mut self, instrument_id: u32, b: &Bar) {
        if self.error.is_some() {
            return;
        }
        let r = writeln!(
            self.out,
            "{instrument_id},{},{},{},{},{},{},{},{}",
            b.interval_ns as f64 / 1e9,
            b.ts_start,
            fixed_price(b.open),
            fixed_price(b.high),
            fixed_price(b.low),
            fixed_price(b.close),
            b.volume,
            b.trades
        );
        match r {
            Ok(()) => self.count += 1,
            Err(e) => self.error = Some(e),
        }
    }

    fn finish(mut self) -> Result<u64> {
        if let Some(e) = self.error.take() {
            return Err(e).with_context(|| format!("writing {}", self.path.display()));
        }
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(self.count)
    }
}

/// Exports the vectors (and bars) the feature stage computes for `opts.captures`.
///
/// # Errors
/// A missing, corrupt or truncated capture (nothing is left half-written under the output
/// name: the output is written to a temporary name and renamed at the end), an invalid setting,
/// or an output that cannot be written.
pub fn run(opts: &FeaturesOptions) -> Result<FeaturesSummary> {
    if opts.captures.is_empty() {
        bail!("no capture given");
    }
    // Open every capture up front: a bad file fails before anything is written.
    let captures = opts
        .captures
        .iter()
        .map(|p| Capture::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut engine = FeatureEngine::new(&opts.settings.engine_config())?;
    let tmp = temp_name(&opts.out);
    let mut sink: Box<dyn RowSink> = match opts.format {
        Format::Csv => Box::new(CsvRows::create(&tmp)?),
        Format::Arrow => Box::new(ArrowRows::create(&tmp)?),
    };
    let bars_tmp = opts.bars.as_deref().map(temp_name);
    let mut bars = match &bars_tmp {
        Some(p) => Some(BarRows::create(p)?),
        None => None,
    };
    let mut parts = [Event::default(); MAX_PARTS];
    let mut tick = Tick::default();
    let (mut records, mut undecodable, mut rows) = (0u64, 0u64, 0u64);
    let mut failure = None;
    let result = (|| -> Result<()> {
        for mut capture in captures {
            let _ = capture.visit(|rec| {
                records += 1;
                let Ok(n) = Event::decode_parts(rec.as_ref(), records, 0, &mut parts) else {
                    undecodable += 1;
                    return ControlFlow::Continue(());
                };
                for ev in &parts[..n] {
                    let emitted = engine.on_event(ev, &mut tick, &mut |id, bar| {
                        if let Some(b) = bars.as_mut() {
                            b.bar(id, &bar);
                        }
                    });
                    if emitted {
                        if let Err(e) = sink.row(&tick) {
                            failure = Some(e);
                            return ControlFlow::Break(());
                        }
                        rows += 1;
                    }
                }
                ControlFlow::Continue(())
            })?;
            if let Some(e) = failure.take() {
                return Err(e);
            }
        }
        engine.flush_bars(&mut |id, bar| {
            if let Some(b) = bars.as_mut() {
                b.bar(id, &bar);
            }
        });
        Ok(())
    })();
    let finished = result.and_then(|()| sink.finish());
    let bar_count = match (finished, bars) {
        (Ok(()), Some(b)) => b.finish(),
        (Ok(()), None) => Ok(0),
        (Err(e), _) => Err(e),
    };
    let bar_count = match bar_count {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if let Some(b) = &bars_tmp {
                let _ = std::fs::remove_file(b);
            }
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &opts.out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), opts.out.display()))?;
    if let (Some(from), Some(to)) = (&bars_tmp, &opts.bars) {
        std::fs::rename(from, to)
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    }
    Ok(FeaturesSummary {
        records,
        undecodable,
        rows,
        bars: bar_count,
        counts: engine.counts(),
    })
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_prices_are_exact_decimals() {
        assert_eq!(fixed_price(4_750_250_000_000), "4750.25");
        assert_eq!(fixed_price(-1_500_000_000), "-1.5");
        assert_eq!(fixed_price(1), "0.000000001");
        assert_eq!(fixed_price(0), "0");
        assert_eq!(fixed_price(i64::MIN), "-9223372036.854775808");
    }

    #[test]
    fn csv_rows_round_trip_and_leave_nan_empty() {
        let mut t = Tick {
            ts_recv: 2,
            ts_event: 1,
            instrument_id: 7,
            ..Tick::default()
        };
        t.values[0] = 0.1 + 0.2;
        t.values[1] = -1e-300;
        let mut line = String::new();
        write_row(&mut line, &t);
        let cells: Vec<&str> = line.trim_end().split(',').collect();
        assert_eq!(&cells[..3], ["2", "1", "7"]);
        assert_eq!(cells[3].parse::<f64>().unwrap(), 0.1 + 0.2);
        assert_eq!(cells[4].parse::<f64>().unwrap(), -1e-300);
        assert!(cells[5..].iter().all(|c| c.is_empty()));
        assert_eq!(cells.len(), 3 + N_FEATURES);
    }
}
