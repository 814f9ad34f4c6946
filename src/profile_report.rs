//! Rendering the results of `tickpipe profile`: a terminal table, one HdrHistogram percentile
//! distribution (`.hgrm`) per series, an SVG percentile plot and a machine-readable
//! `summary.json`, plus reading summaries back and comparing two runs.
//!
//! Histograms hold nanoseconds. The `.hgrm` files and the plot are in microseconds because that
//! is the unit the public HdrHistogram plotter and most latency write-ups use; `summary.json`
//! keeps integer nanoseconds so that comparisons never suffer from rounding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// File name of the machine-readable summary inside an output directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// File name of the percentile plot inside an output directory.
pub const PLOT_FILE: &str = "percentiles.svg";

/// Matches the HdrHistogram convention used by its plotter and by most published `.hgrm` files.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

const NS_PER_US: f64 = 1000.0;

/// The value `units` must have in `summary.json`; checked on load so that a file produced with a
/// different unit is rejected rather than silently misread.
const SUMMARY_UNITS: &str = "ns";

/// The quantiles reported in the table and in `summary.json`, in that order.
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

/// One measured latency distribution, e.g. a stage's service time or a queue's wait.
#[derive(Debug, Clone)]
pub struct Series {
    /// Dotted name such as `ingest.service`, `features.queue` or `end_to_end`.
    pub name: String,
    /// Latencies in nanoseconds.
    pub hist: Histogram<u64>,
    /// Events per second the series processed over the run; 0.0 where that does not apply.
    pub events_per_s: f64,
    /// Messages dropped or conflated on the way into this stage.
    pub drops: u64,
    /// Values above the histogram's highest trackable value that were clamped to it; they are
    /// counted, but the top percentiles understate them.
    pub overflows: u64,
}

/// Everything one profiling session produced.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    /// Free text describing the run, e.g. `mode=shared rate=1000000/s events=2000000`.
    pub title: String,
    /// The measured series, in display order.
    pub series: Vec<Series>,
    /// Free-form key/values recorded in `summary.json` under `run` (mode, rate, config path,
    /// host cores, ...). A repeated key keeps its last value.
    pub run: Vec<(String, String)>,
}

/// A run's `summary.json`, as read back by [`load_summary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The report's title.
    pub title: String,
    /// The report's run key/values.
    pub run: BTreeMap<String, String>,
    /// Series names in the report's order; `series` itself is keyed by name and so sorted.
    pub order: Vec<String>,
    /// Per-series figures, keyed by series name.
    pub series: BTreeMap<String, SeriesSummary>,
}

/// The figures kept for one series. Latencies are integer nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSummary {
    /// Number of recorded latencies.
    pub count: u64,
    /// Median latency.
    pub p50: u64,
    /// 90th percentile latency.
    pub p90: u64,
    /// 99th percentile latency.
    pub p99: u64,
    /// 99.9th percentile latency.
    pub p99_9: u64,
    /// 99.99th percentile latency.
    pub p99_99: u64,
    /// Largest recorded latency (to the histogram's resolution).
    pub max: u64,
    /// Mean latency in nanoseconds.
    pub mean: f64,
    /// Events per second; 0.0 where that does not apply.
    pub events_per_s: f64,
    /// Messages dropped or conflated on the way in.
    pub drops: u64,
    /// Values clamped to the histogram's highest trackable value.
    pub overflows: u64,
}

impl SeriesSummary {
    fn of(series: &Series) -> Self {
        let h = &series.hist;
        let [p50, p90, p99, p99_9, p99_99] = QUANTILES.map(|q| h.value_at_quantile(q));
        Self {
            count: h.len(),
            p50,
            p90,
            p99,
            p99_9,
            p99_99,
            max: if h.is_empty() { 0 } else { h.max() },
            mean: h.mean(),
            events_per_s: series.events_per_s,
            drops: series.drops,
            overflows: series.overflows,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Terminal table
// ------------------------------------------------------------------------------------------------

/// Writes the report's title (when not empty), then an aligned text table with one row per
/// series, then a note for every series whose histogram clamped out-of-range values.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn print_table(out: &mut impl Write, report: &ProfileReport) -> io::Result<()> {
    if !report.title.is_empty() {
        writeln!(out, "{}", report.title)?;
    }
    let mut rows = vec![
        [
            "series", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max", "events/s", "drops",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &report.series {
        let h = &s.hist;
        let mut row = vec![s.name.clone(), h.len().to_string()];
        if h.is_empty() {
            // An empty histogram answers 0 for every quantile, which would read as "0ns".
            row.extend(std::iter::repeat_n("-".to_string(), QUANTILES.len() + 1));
        } else {
            row.extend(QUANTILES.map(|q| fmt_latency(h.value_at_quantile(q))));
            row.push(fmt_latency(h.max()));
        }
        row.push(fmt_rate(s.events_per_s));
        row.push(s.drops.to_string());
        rows.push(row);
    }
    write_aligned(out, &rows, 1)?;
    for s in report.series.iter().filter(|s| s.overflows > 0) {
        writeln!(
            out,
            "note: {}: {} values exceeded the histogram's range and were clamped to {}; \
             its top percentiles are understated",
            s.name,
            s.overflows,
            fmt_latency(s.hist.high()),
        )?;
    }
    Ok(())
}

/// Writes `rows` with columns separated by two spaces; the first `left` columns are
/// left-aligned (names), the rest right-aligned (numbers).
fn write_aligned(out: &mut impl Write, rows: &[Vec<String>], left: usize) -> io::Result<()> {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let w = widths[c];
            if c < left {
                let _ = write!(line, "{cell:<w$}");
            } else {
                let _ = write!(line, "{cell:>w$}");
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Formats `x` with three significant digits, or as an integer once it reaches 1000.
fn three_sig(x: f64) -> String {
    // Choose the precision from the *rounded* value so that 9.996 becomes "10.0", not "10.00".
    for (decimals, limit) in [(2usize, 10.0), (1, 100.0)] {
        let s = format!("{x:.decimals$}");
        if s.parse::<f64>().is_ok_and(|v| v < limit) {
            return s;
        }
    }
    format!("{x:.0}")
}

/// Scales `x` into the largest unit it reaches and formats it with three significant digits,
/// moving up a unit when rounding would otherwise print "1000".
fn scaled(x: f64, units: &[(f64, &str)]) -> String {
    let mut i = units
        .iter()
        .rposition(|&(scale, _)| x >= scale)
        .unwrap_or(0);
    let mut s = three_sig(x / units[i].0);
    if i + 1 < units.len() && s.parse::<f64>().is_ok_and(|v| v >= 1000.0) {
        i += 1;
        s = three_sig(x / units[i].0);
    }
    format!("{s}{}", units[i].1)
}

/// Human-readable latency from nanoseconds: `85ns`, `1.24us`, `12.5ms`, `3.20s`.
fn fmt_latency(ns: u64) -> String {
    if ns < 1000 {
        return format!("{ns}ns");
    }
    scaled(
        ns as f64,
        &[(1.0, "ns"), (1e3, "us"), (1e6, "ms"), (1e9, "s")],
    )
}

/// Human-readable rate: `850k/s`, `1.00M/s`; `-` where the rate does not apply.
fn fmt_rate(per_s: f64) -> String {
    if !(per_s.is_finite() && per_s > 0.0) {
        return "-".into();
    }
    scaled(
        per_s,
        &[(1.0, "/s"), (1e3, "k/s"), (1e6, "M/s"), (1e9, "G/s")],
    )
}

// ------------------------------------------------------------------------------------------------
// Output directory
// ------------------------------------------------------------------------------------------------

/// Writes the report into `dir` (created if needed): one `<series>.hgrm` per series, the plot
/// [`PLOT_FILE`] and the summary [`SUMMARY_FILE`]. Series names are made file-safe by replacing
/// every character outside `[A-Za-z0-9._-]` with `_`.
///
/// Returns the paths written, `.hgrm` files first in series order.
///
/// # Errors
/// Two series with the same name or the same file-safe name, a non-finite `events_per_s`
/// (checked before anything is written), or a failure to create `dir` or write a file.
pub fn write_outputs(dir: &Path, report: &ProfileReport) -> Result<Vec<PathBuf>> {
    let summary = summarize(report)?;
    let mut file_names = BTreeSet::new();
    for s in &report.series {
        let file = format!("{}.hgrm", sanitize(&s.name));
        if !file_names.insert(file.clone()) {
            bail!("series `{}` would overwrite another series' {file}", s.name);
        }
    }

    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut written = Vec::with_capacity(report.series.len() + 2);
    for s in &report.series {
        let path = dir.join(format!("{}.hgrm", sanitize(&s.name)));
        let write = || -> io::Result<()> {
            let mut f = BufWriter::new(fs::File::create(&path)?);
            write_hgrm(&mut f, &s.hist)?;
            f.into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .sync_all()
        };
        write().with_context(|| format!("{}: cannot write", path.display()))?;
        written.push(path);
    }

    let path = dir.join(PLOT_FILE);
    let svg = render_svg(report).context("rendering the percentile plot")?;
    fs::write(&path, svg).with_context(|| format!("{}: cannot write", path.display()))?;
    written.push(path);

    let path = dir.join(SUMMARY_FILE);
    write_summary(&path, &summary)?;
    written.push(path);
    Ok(written)
}

/// Replaces every character outside `[A-Za-z0-9._-]` with `_`, so that a series name is safe as
/// a file name on every platform.
fn sanitize(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn summarize(report: &ProfileReport) -> Result<Summary> {
    let mut series = BTreeMap::new();
    let mut order = Vec::with_capacity(report.series.len());
    for s in &report.series {
        // serde_json writes NaN and infinities as `null`, which would then fail to load.
        if !s.events_per_s.is_finite() {
            bail!("series `{}`: events_per_s is {}", s.name, s.events_per_s);
        }
        if series
            .insert(s.name.clone(), SeriesSummary::of(s))
            .is_some()
        {
            bail!("series `{}` appears twice in the report", s.name);
        }
        order.push(s.name.clone());
    }
    Ok(Summary {
        title: report.title.clone(),
        run: report.run.iter().cloned().collect(),
        order,
        series,
    })
}

/// Writes `hist` (nanoseconds) in the text format of Java HdrHistogram's
/// `outputPercentileDistribution(out, 5, 1000.0)`, i.e. values in microseconds. The plotter and
/// other tools parse this format by column, so it is reproduced to the character.
fn write_hgrm(out: &mut impl Write, hist: &Histogram<u64>) -> io::Result<()> {
    // Java prints values with as many decimals as the histogram has significant digits.
    let prec = usize::from(hist.sigfig());
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !hist.is_empty() {
        let mut total = 0u64;
        for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / NS_PER_US;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.prec$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.prec$} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev) = (hist.mean() / NS_PER_US, hist.stdev() / NS_PER_US);
    let max = (if hist.is_empty() { 0 } else { hist.max() }) as f64 / NS_PER_US;
    writeln!(
        out,
        "#[Mean    = {mean:12.prec$}, StdDeviation   = {stdev:12.prec$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.prec$}, Total count    = {:12}]",
        hist.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_bucket_count(hist.sigfig())
    )
}

/// Java reports its `subBucketCount`, which the Rust histogram does not expose: the smallest
/// power of two that resolves `2 * 10^sigfig` values at unit resolution.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

// ------------------------------------------------------------------------------------------------
// SVG plot
// ------------------------------------------------------------------------------------------------

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];
/// Dash patterns used once the palette wraps, so that series 11+ stay distinguishable.
const DASHES: [&str; 3] = ["", "6 3", "2 2"];

const SVG_W: f64 = 960.0;
const SVG_H: f64 = 560.0;
const MARGIN_L: f64 = 80.0;
const MARGIN_R: f64 = 50.0;
const MARGIN_T: f64 = 56.0;
const MARGIN_B: f64 = 64.0;

/// The x axis always reaches 99.99%; beyond 12 nines f64 quantiles are no longer meaningful.
const MIN_DECADES: u32 = 4;
const MAX_DECADES: u32 = 12;

/// Plot points of one series: x is `log10(1/(1-p))`, y is microseconds. The final 100% row has
/// no place on a log axis, so it is left out as in the HdrHistogram plotter.
fn plot_points(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    hist.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            let x = -(1.0 - v.quantile_iterated_to()).log10();
            (
                x.min(f64::from(MAX_DECADES)),
                v.value_iterated_to() as f64 / NS_PER_US,
            )
        })
        .collect()
}

/// `0%`, `90%`, `99%`, `99.9%`, ... for `decades` nines.
fn percentile_label(decades: u32) -> String {
    match decades {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// The finest 1-2-5 step that covers `[0, max]` in at most eight intervals, and the axis top it
/// implies; finer steps would crowd the labels, coarser ones waste the plot's height.
fn nice_axis(max: f64) -> (f64, f64) {
    const MAX_INTERVALS: f64 = 8.0;
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let mut mag = 10f64.powf((max / 10.0).log10().floor());
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * mag;
            let intervals = (max / step).ceil();
            if intervals <= MAX_INTERVALS {
                return (step, intervals * step);
            }
        }
        mag *= 10.0;
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders every series as a percentile curve in the style of the HdrHistogram plotter.
fn render_svg(report: &ProfileReport) -> Result<String, std::fmt::Error> {
    let points: Vec<Vec<(f64, f64)>> = report.series.iter().map(|s| plot_points(&s.hist)).collect();
    let all = || points.iter().flatten();
    let max_x = all().map(|p| p.0).fold(0.0, f64::max);
    let max_y = all().map(|p| p.1).fold(0.0, f64::max);
    // The epsilon keeps an exact 10^k (give or take an ulp) from adding an empty decade.
    let decades = ((max_x - 1e-9).ceil().max(0.0) as u32).clamp(MIN_DECADES, MAX_DECADES);
    let (step, top_y) = nice_axis(max_y);
    let decimals = (-step.log10() - 1e-9).ceil().max(0.0) as usize;

    let plot_w = SVG_W - MARGIN_L - MARGIN_R;
    let plot_h = SVG_H - MARGIN_T - MARGIN_B;
    let px = |x: f64| MARGIN_L + x / f64::from(decades) * plot_w;
    let py = |y: f64| MARGIN_T + plot_h - y / top_y * plot_h;
    let title = xml_escape(&report.title);

    let mut s = String::new();
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" viewBox="0 0 {SVG_W} {SVG_H}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(s, "<title>{title}</title>")?;
    writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
    writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{title}</text>"#,
        SVG_W / 2.0
    )?;

    writeln!(s, r##"<g stroke="#e0e0e0" stroke-width="1">"##)?;
    for k in 0..=decades {
        let x = px(f64::from(k));
        writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{MARGIN_T}" x2="{x:.1}" y2="{:.1}"/>"#,
            MARGIN_T + plot_h
        )?;
    }
    let ticks = (top_y / step).round() as u32;
    for i in 0..=ticks {
        let y = py(f64::from(i) * step);
        writeln!(
            s,
            r#"<line x1="{MARGIN_L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
            MARGIN_L + plot_w
        )?;
    }
    writeln!(s, "</g>")?;
    writeln!(
        s,
        r#"<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    )?;

    for k in 0..=decades {
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px(f64::from(k)),
            MARGIN_T + plot_h + 18.0,
            percentile_label(k)
        )?;
    }
    for i in 0..=ticks {
        let v = f64::from(i) * step;
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.decimals$}</text>"#,
            MARGIN_L - 6.0,
            py(v) + 4.0
        )?;
    }
    writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>"#,
        MARGIN_L + plot_w / 2.0,
        SVG_H - 16.0
    )?;
    writeln!(
        s,
        r#"<text x="20" y="{y:.1}" text-anchor="middle" transform="rotate(-90 20 {y:.1})">Latency (µs)</text>"#,
        y = MARGIN_T + plot_h / 2.0
    )?;

    for (i, pts) in points.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = DASHES[(i / PALETTE.len()) % DASHES.len()];
        let mut coords = String::new();
        for &(x, y) in pts {
            if !coords.is_empty() {
                coords.push(' ');
            }
            write!(coords, "{:.1},{:.1}", px(x), py(y))?;
        }
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash_attr} points="{coords}"/>"#
        )?;
    }

    // Top-left is where percentile curves are lowest, so the legend hides the least there.
    if !report.series.is_empty() {
        let labels: Vec<String> = report
            .series
            .iter()
            .map(|s| {
                if s.hist.is_empty() {
                    format!("{} (no samples)", s.name)
                } else {
                    s.name.clone()
                }
            })
            .collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let (x0, y0) = (MARGIN_L + 12.0, MARGIN_T + 12.0);
        writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{:.0}" height="{:.0}" fill="white" fill-opacity="0.85" stroke="#999"/>"##,
            44.0 + 7.0 * longest as f64,
            10.0 + 18.0 * labels.len() as f64
        )?;
        for (i, label) in labels.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let dash = DASHES[(i / PALETTE.len()) % DASHES.len()];
            let y = y0 + 18.0 * (i as f64 + 1.0);
            let dash_attr = if dash.is_empty() {
                String::new()
            } else {
                format!(r#" stroke-dasharray="{dash}""#)
            };
            writeln!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash_attr}/>"#,
                x0 + 8.0,
                y - 4.0,
                x0 + 30.0,
                y - 4.0
            )?;
            writeln!(
                s,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                x0 + 36.0,
                xml_escape(label)
            )?;
        }
    }
    writeln!(s, "</svg>")?;
    Ok(s)
}

// ------------------------------------------------------------------------------------------------
// summary.json
// ------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct SummaryFileOut<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    units: &'static str,
}

/// `series` is read as raw JSON first so that a missing field can be reported together with the
/// series it is missing from.
#[derive(Deserialize)]
struct SummaryFileIn {
    title: String,
    run: BTreeMap<String, String>,
    order: Vec<String>,
    series: BTreeMap<String, serde_json::Value>,
    units: String,
}

fn write_summary(path: &Path, summary: &Summary) -> Result<()> {
    let mut json = serde_json::to_string_pretty(&SummaryFileOut {
        summary,
        units: SUMMARY_UNITS,
    })
    .with_context(|| format!("{}: cannot encode", path.display()))?;
    json.push('\n');
    fs::write(path, json).with_context(|| format!("{}: cannot write", path.display()))
}

/// Reads `dir/summary.json` as written by [`write_outputs`].
///
/// # Errors
/// A missing or unreadable file, malformed JSON, a missing or mistyped field, units other than
/// nanoseconds, or an `order` list that does not name exactly the series present. Every message
/// starts with the file's path.
pub fn load_summary(dir: &Path) -> Result<Summary> {
    let path = dir.join(SUMMARY_FILE);
    let fail = |msg: String| anyhow!("{}: {msg}", path.display());
    let text =
        fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let file: SummaryFileIn = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if file.units != SUMMARY_UNITS {
        return Err(fail(format!(
            "units are `{}`, expected `{SUMMARY_UNITS}`",
            file.units
        )));
    }

    let mut series = BTreeMap::new();
    for (name, value) in file.series {
        let s =
            SeriesSummary::deserialize(value).map_err(|e| fail(format!("series `{name}`: {e}")))?;
        series.insert(name, s);
    }
    let mut listed = BTreeSet::new();
    for name in &file.order {
        if !listed.insert(name.as_str()) {
            return Err(fail(format!("`order` lists `{name}` twice")));
        }
        if !series.contains_key(name) {
            return Err(fail(format!(
                "`order` lists `{name}`, which has no entry in `series`"
            )));
        }
    }
    if let Some(name) = series.keys().find(|n| !listed.contains(n.as_str())) {
        return Err(fail(format!("series `{name}` is missing from `order`")));
    }

    Ok(Summary {
        title: file.title,
        run: file.run,
        order: file.order,
        series,
    })
}

// ------------------------------------------------------------------------------------------------
// Resident memory over a run
// ------------------------------------------------------------------------------------------------

/// Resident memory of this process, from `/proc/self/status`, in KiB.
///
/// `RssAnon` is the figure that tells whether the engine grows: anonymous pages (heap, stacks,
/// anonymous mappings). The rings are file mappings: in `/dev/shm` (tmpfs) their pages count in
/// `RssShmem`, on a disk-backed file system in `RssFile`; the executable and shared libraries
/// count in `RssFile` too. `VmRSS` is the sum of the three; `VmHWM` its peak since the process
/// started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RssSample {
    /// `RssAnon`.
    pub anon_kib: u64,
    /// `RssFile`.
    pub file_kib: u64,
    /// `RssShmem`.
    pub shmem_kib: u64,
    /// `VmRSS`.
    pub vm_rss_kib: u64,
    /// `VmHWM`.
    pub vm_hwm_kib: u64,
}

/// Parses the fields of [`RssSample`] out of the text of `/proc/<pid>/status`.
///
/// # Errors
/// A field missing or not a number of kB.
pub fn parse_status(text: &str) -> Result<RssSample> {
    let field = |key: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
            .ok_or_else(|| anyhow!("/proc/self/status has no {key}"))?;
        let kib = line
            .trim()
            .strip_suffix("kB")
            .ok_or_else(|| anyhow!("{key}: {line:?} is not in kB"))?;
        kib.trim()
            .parse()
            .with_context(|| format!("{key}: {line:?} is not a number"))
    };
    Ok(RssSample {
        anon_kib: field("RssAnon")?,
        file_kib: field("RssFile")?,
        shmem_kib: field("RssShmem")?,
        vm_rss_kib: field("VmRSS")?,
        vm_hwm_kib: field("VmHWM")?,
    })
}

/// Reads this process's [`RssSample`] into `buf` (reused, so a sampler that keeps its buffer
/// does not allocate once it has grown to the file's size).
///
/// # Errors
/// `/proc/self/status` unreadable or without the fields (not Linux).
pub fn read_rss(buf: &mut String) -> Result<RssSample> {
    use std::io::Read;
    buf.clear();
    fs::File::open("/proc/self/status")
        .and_then(|mut f| f.read_to_string(buf))
        .context("reading /proc/self/status")?;
    parse_status(buf)
}

/// One sample of a run's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssPoint {
    /// Since the engine finished starting.
    pub at: std::time::Duration,
    /// Frames the engine had ingested.
    pub ingested: u64,
    /// The process's resident memory.
    pub rss: RssSample,
}

/// A run's resident memory: a sample when start-up was done, then one every `interval` until
/// the engine drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryTimeline {
    /// Sampling period.
    pub interval: std::time::Duration,
    /// Events in the run: the first sample after the engine ingested a tenth of them is the
    /// first steady one (books, windows and histograms have seen the stream by then).
    pub events: u64,
    /// Samples, the start-up sample first.
    pub points: Vec<RssPoint>,
}

impl MemoryTimeline {
    /// The sample taken when start-up was done.
    pub fn startup(&self) -> Option<&RssPoint> {
        self.points.first()
    }

    /// The first steady sample: after start-up, with a tenth of the events ingested.
    pub fn first_steady(&self) -> Option<&RssPoint> {
        let warm = self.events.div_ceil(10);
        self.points
            .iter()
            .skip(1)
            .find(|p| p.ingested >= warm.max(1))
    }

    /// The highest `RssAnon` sampled.
    pub fn peak_anon_kib(&self) -> u64 {
        self.points
            .iter()
            .map(|p| p.rss.anon_kib)
            .max()
            .unwrap_or(0)
    }

    /// Highest `RssAnon` from the first steady sample on, minus that sample's (`None` without a
    /// steady sample).
    pub fn growth_kib(&self) -> Option<i64> {
        let first = self.first_steady()?;
        let peak = self
            .points
            .iter()
            .filter(|p| p.at >= first.at)
            .map(|p| p.rss.anon_kib)
            .max()
            .unwrap_or(first.rss.anon_kib);
        Some(peak as i64 - first.rss.anon_kib as i64)
    }

    /// Key/values for `summary.json`'s `run` (KiB; the samples as `seconds:anon/file/shmem`).
    pub fn run_entries(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            "rss_interval_ms".to_string(),
            self.interval.as_millis().to_string(),
        )];
        if let Some(s) = self.startup() {
            out.push(("rss_anon_startup_kib".into(), s.rss.anon_kib.to_string()));
        }
        if let Some(s) = self.first_steady() {
            out.push(("rss_anon_steady_kib".into(), s.rss.anon_kib.to_string()));
            out.push((
                "rss_anon_steady_at_s".into(),
                format!("{:.3}", s.at.as_secs_f64()),
            ));
        }
        if let Some(g) = self.growth_kib() {
            out.push(("rss_anon_growth_kib".into(), g.to_string()));
        }
        let max = |f: fn(&RssSample) -> u64| self.points.iter().map(|p| f(&p.rss)).max();
        for (key, v) in [
            ("rss_anon_peak_kib", max(|r| r.anon_kib)),
            ("rss_file_peak_kib", max(|r| r.file_kib)),
            ("rss_shmem_peak_kib", max(|r| r.shmem_kib)),
            ("vm_hwm_kib", max(|r| r.vm_hwm_kib)),
        ] {
            if let Some(v) = v {
                out.push((key.into(), v.to_string()));
            }
        }
        let samples: Vec<String> = self
            .points
            .iter()
            .map(|p| {
                format!(
                    "{:.1}:{}/{}/{}",
                    p.at.as_secs_f64(),
                    p.rss.anon_kib,
                    p.rss.file_kib,
                    p.rss.shmem_kib
                )
            })
            .collect();
        out.push(("rss_samples".into(), samples.join(" ")));
        out
    }

    /// Prints the timeline: every sample (at most about 30 lines: evenly thinned beyond that,
    /// the first, the first steady and the last always kept), then the peak and the growth.
    ///
    /// # Errors
    /// Whatever writing to `out` returns.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let mib = |kib: u64| kib as f64 / 1024.0;
        writeln!(
            out,
            "memory (from /proc/self/status; rings count in RssShmem or RssFile, not RssAnon):"
        )?;
        writeln!(
            out,
            "  {:>8}  {:>10}  {:>11}  {:>11}  {:>12}",
            "t", "ingested", "RssAnon", "RssFile", "RssShmem"
        )?;
        let steady_at = self.first_steady().map(|p| p.at);
        let step = self.points.len().div_ceil(30).max(1);
        let last = self.points.len().saturating_sub(1);
        for (i, p) in self.points.iter().enumerate() {
            let keep = i.is_multiple_of(step) || i == last || Some(p.at) == steady_at;
            if !keep {
                continue;
            }
            let label = if i == 0 {
                " start-up done"
            } else if Some(p.at) == steady_at {
                " first steady sample"
            } else {
                ""
            };
            writeln!(
                out,
                "  {:>7.1}s  {:>10}  {:>7.1} MiB  {:>7.1} MiB  {:>8.1} MiB{label}",
                p.at.as_secs_f64(),
                p.ingested,
                mib(p.rss.anon_kib),
                mib(p.rss.file_kib),
                mib(p.rss.shmem_kib),
            )?;
        }
        write!(out, "  RssAnon peak {:.1} MiB", mib(self.peak_anon_kib()))?;
        match (self.first_steady(), self.growth_kib()) {
            (Some(s), Some(g)) => writeln!(
                out,
                ", growth from the first steady sample ({:.1} s) {:+} KiB",
                s.at.as_secs_f64(),
                g
            ),
            _ => writeln!(
                out,
                "; no steady sample (the run was shorter than one interval)"
            ),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Comparing two runs
// ------------------------------------------------------------------------------------------------

/// Prints the two runs' titles, then for every series in either run (A's order first, then the
/// series only B has) its p50, p99, p99.9, p99.99, max and events/s under A and B, with the ratio
/// B/A. A value or ratio that does not exist (series absent or empty on one side, A equal to 0)
/// is shown as `-`.
///
/// # Errors
/// Either summary failing to load (see [`load_summary`]), or writing to `out` failing.
pub fn compare(out: &mut impl Write, a_dir: &Path, b_dir: &Path) -> Result<()> {
    let a = load_summary(a_dir)?;
    let b = load_summary(b_dir)?;
    writeln!(out, "A: {}  ({})", a.title, a_dir.display())?;
    writeln!(out, "B: {}  ({})", b.title, b_dir.display())?;
    writeln!(out)?;

    let names = a
        .order
        .iter()
        .chain(b.order.iter().filter(|n| !a.series.contains_key(*n)));
    let mut rows = vec![
        ["series", "metric", "A", "B", "B/A"]
            .map(String::from)
            .to_vec(),
    ];
    for name in names {
        let sa = a.series.get(name);
        let sb = b.series.get(name);
        for (metric, pick) in COMPARED_LATENCIES {
            // A side without samples has no latency, not a latency of zero.
            let va = sa.filter(|s| s.count > 0).map(pick);
            let vb = sb.filter(|s| s.count > 0).map(pick);
            rows.push(vec![
                name.clone(),
                metric.to_string(),
                va.map_or_else(|| "-".into(), fmt_latency),
                vb.map_or_else(|| "-".into(), fmt_latency),
                ratio(va.map(|v| v as f64), vb.map(|v| v as f64)),
            ]);
        }
        // A rate of 0 means "not applicable" rather than "stalled".
        let ra = sa.map(|s| s.events_per_s).filter(|&r| r > 0.0);
        let rb = sb.map(|s| s.events_per_s).filter(|&r| r > 0.0);
        rows.push(vec![
            name.clone(),
            "events/s".into(),
            ra.map_or_else(|| "-".into(), fmt_rate),
            rb.map_or_else(|| "-".into(), fmt_rate),
            ratio(ra, rb),
        ]);
    }
    write_aligned(out, &rows, 2)?;
    Ok(())
}

type LatencyPick = fn(&SeriesSummary) -> u64;

const COMPARED_LATENCIES: [(&str, LatencyPick); 5] = [
    ("p50", |s| s.p50),
    ("p99", |s| s.p99),
    ("p99.9", |s| s.p99_9),
    ("p99.99", |s| s.p99_99),
    ("max", |s| s.max),
];

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && a.is_finite() && b.is_finite() => {
            format!("{:.2}x", b / a)
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
    }

    fn uniform() -> Histogram<u64> {
        let mut h = hist();
        for v in 1..=10_000 {
            h.record(v).unwrap();
        }
        h
    }

    /// 90% around 1-2µs, 10% around 0.5-1ms: the shape of a fast path with a slow fallback.
    fn bimodal() -> Histogram<u64> {
        let mut h = hist();
        for i in 0..9_000u64 {
            h.record(1_000 + i % 1_000).unwrap();
        }
        for i in 0..1_000u64 {
            h.record(500_000 + i * 500).unwrap();
        }
        h
    }

    fn series(name: &str, hist: Histogram<u64>) -> Series {
        Series {
            name: name.into(),
            hist,
            events_per_s: 1_000_000.0,
            drops: 3,
            overflows: 0,
        }
    }

    fn report() -> ProfileReport {
        ProfileReport {
            title: "mode=shared rate=1000000/s events=20000".into(),
            series: vec![
                series("ingest.service", uniform()),
                series("features.queue", bimodal()),
            ],
            run: vec![
                ("mode".into(), "shared".into()),
                ("events".into(), "20000".into()),
            ],
        }
    }

    struct Row {
        value: f64,
        percentile: f64,
        count: u64,
        inverse: Option<f64>,
    }

    struct Hgrm {
        rows: Vec<Row>,
        max: f64,
        total: u64,
    }

    /// Parses an `.hgrm` the way the HdrHistogram plotter does, by whitespace-separated columns,
    /// and checks the fixed-width layout along the way.
    fn parse_hgrm(text: &str) -> Hgrm {
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        let mut rows = Vec::new();
        let mut footer = Vec::new();
        for line in lines {
            if line.starts_with("#[") {
                footer.push(line.to_string());
                continue;
            }
            assert!(footer.is_empty(), "row after footer: {line}");
            // %12.3f, a space, then a percentile with exactly twelve decimals.
            assert_eq!(&line[12..13], " ", "{line}");
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert!(cols.len() == 3 || cols.len() == 4, "{line}");
            assert_eq!(cols[1].split_once('.').unwrap().1.len(), 12, "{line}");
            rows.push(Row {
                value: cols[0].parse().unwrap(),
                percentile: cols[1].parse().unwrap(),
                count: cols[2].parse().unwrap(),
                inverse: cols.get(3).map(|c| c.parse().unwrap()),
            });
        }
        assert_eq!(footer.len(), 3, "{text}");
        let field = |line: &str, key: &str| -> String {
            let rest = &line[line.find(key).unwrap() + key.len()..];
            let rest = rest.trim_start_matches([' ', '=']);
            rest.split([',', ']']).next().unwrap().trim().to_string()
        };
        assert!(footer[0].starts_with("#[Mean    = "));
        assert!(footer[2].starts_with("#[Buckets = "));
        Hgrm {
            rows,
            max: field(&footer[1], "Max").parse().unwrap(),
            total: field(&footer[1], "Total count").parse().unwrap(),
        }
    }

    #[test]
    fn status_fields_parse_and_missing_ones_are_errors() {
        let text = "Name:\ttickpipe\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n\
                    RssAnon:\t   20480 kB\nRssFile:\t   10240 kB\nRssShmem:\t   10240 kB\n";
        assert_eq!(
            parse_status(text).unwrap(),
            RssSample {
                anon_kib: 20480,
                file_kib: 10240,
                shmem_kib: 10240,
                vm_rss_kib: 40960,
                vm_hwm_kib: 51200,
            }
        );
        let err = parse_status("VmRSS: 1 kB\n").unwrap_err().to_string();
        assert!(err.contains("RssAnon"), "{err}");
        let live = read_rss(&mut String::new()).unwrap();
        assert!(
            live.anon_kib > 0 && live.vm_rss_kib >= live.anon_kib,
            "{live:?}"
        );
    }

    #[test]
    fn timeline_finds_the_steady_sample_and_the_growth() {
        let point = |s: u64, ingested: u64, anon_kib: u64| RssPoint {
            at: std::time::Duration::from_secs(s),
            ingested,
            rss: RssSample {
                anon_kib,
                ..RssSample::default()
            },
        };
        let t = MemoryTimeline {
            interval: std::time::Duration::from_secs(1),
            events: 100,
            points: vec![
                point(0, 0, 1000),
                point(1, 5, 3000),
                point(2, 40, 3500),
                point(3, 80, 3600),
                point(4, 100, 3550),
            ],
        };
        assert_eq!(t.first_steady().map(|p| p.at.as_secs()), Some(2));
        assert_eq!(t.growth_kib(), Some(100));
        assert_eq!(t.peak_anon_kib(), 3600);
        let kv: BTreeMap<_, _> = t.run_entries().into_iter().collect();
        assert_eq!(kv["rss_anon_startup_kib"], "1000");
        assert_eq!(kv["rss_anon_growth_kib"], "100");
        assert_eq!(kv["rss_samples"].split(' ').count(), 5);
        let mut out = Vec::new();
        t.print(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("first steady sample") && text.contains("+100 KiB"),
            "{text}"
        );
        let short = MemoryTimeline {
            points: vec![point(0, 0, 1000)],
            ..t
        };
        assert_eq!((short.first_steady(), short.growth_kib()), (None, None));
    }

    #[test]
    fn latency_and_rate_formatting() {
        assert_eq!(fmt_latency(85), "85ns");
        assert_eq!(fmt_latency(999), "999ns");
        assert_eq!(fmt_latency(1_240), "1.24us");
        assert_eq!(fmt_latency(12_500_000), "12.5ms");
        assert_eq!(fmt_latency(3_200_000_000), "3.20s");
        assert_eq!(fmt_latency(999_999), "1.00ms");
        assert_eq!(fmt_latency(9_996), "10.0us");
        assert_eq!(fmt_latency(250_000), "250us");
        assert_eq!(fmt_rate(1_000_000.0), "1.00M/s");
        assert_eq!(fmt_rate(850_000.0), "850k/s");
        assert_eq!(fmt_rate(12.0), "12.0/s");
        assert_eq!(fmt_rate(0.0), "-");
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_axis(5_001.98), (1_000.0, 6_000.0));
        assert_eq!(nice_axis(999.0), (200.0, 1_000.0));
        assert_eq!(nice_axis(1_000.0), (200.0, 1_000.0));
        let (step, top) = nice_axis(0.085);
        assert!(
            (step - 0.02).abs() < 1e-12 && (top - 0.1).abs() < 1e-12,
            "{step} {top}"
        );
        assert_eq!(nice_axis(0.0), (0.2, 1.0));
    }

    #[test]
    fn sanitize_keeps_safe_characters_only() {
        assert_eq!(sanitize("ingest.service"), "ingest.service");
        assert_eq!(sanitize("a/b c:d-e_f"), "a_b_c_d-e_f");
        assert_eq!(sanitize("µs"), "_s");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn summary_round_trips_with_exact_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let r = report();
        let written = write_outputs(dir.path(), &r).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ingest.service.hgrm",
                "features.queue.hgrm",
                "percentiles.svg",
                "summary.json"
            ]
        );
        assert!(written.iter().all(|p| p.is_file()));

        let s = load_summary(dir.path()).unwrap();
        assert_eq!(s.title, r.title);
        assert_eq!(s.order, ["ingest.service", "features.queue"]);
        assert_eq!(s.run["mode"], "shared");
        assert_eq!(s.run["events"], "20000");
        for series in &r.series {
            let h = &series.hist;
            let got = &s.series[&series.name];
            assert_eq!(got.count, h.len());
            assert_eq!(got.p50, h.value_at_quantile(0.5));
            assert_eq!(got.p90, h.value_at_quantile(0.9));
            assert_eq!(got.p99, h.value_at_quantile(0.99));
            assert_eq!(got.p99_9, h.value_at_quantile(0.999));
            assert_eq!(got.p99_99, h.value_at_quantile(0.9999));
            assert_eq!(got.max, h.max());
            assert_eq!(got.mean, h.mean());
            assert_eq!(got.events_per_s, 1_000_000.0);
            assert_eq!(got.drops, 3);
        }
        // Independent of the library: the uniform series' median is ~5000ns to 3 digits.
        let p50 = s.series["ingest.service"].p50;
        assert!((4_995..=5_005).contains(&p50), "{p50}");
        let json = fs::read_to_string(dir.path().join(SUMMARY_FILE)).unwrap();
        assert!(json.contains(r#""units": "ns""#), "{json}");
    }

    #[test]
    fn hgrm_parses_back() {
        for h in [uniform(), bimodal()] {
            let mut buf = Vec::new();
            write_hgrm(&mut buf, &h).unwrap();
            let text = String::from_utf8(buf).unwrap();
            let parsed = parse_hgrm(&text);
            let rows = &parsed.rows;
            assert!(rows.len() > 20, "{text}");
            for pair in rows.windows(2) {
                assert!(pair[0].count <= pair[1].count, "{text}");
                assert!(pair[0].percentile <= pair[1].percentile, "{text}");
                assert!(pair[0].value <= pair[1].value, "{text}");
            }
            let (last, init) = rows.split_last().unwrap();
            assert_eq!(last.percentile, 1.0);
            assert!(last.inverse.is_none());
            assert!(
                init.iter()
                    .all(|r| r.inverse.is_some() && r.percentile < 1.0)
            );
            assert_eq!(rows[0].percentile, 0.0);
            assert_eq!(rows[0].inverse, Some(1.0));
            assert_eq!(last.count, h.len());
            assert_eq!(parsed.total, h.len());
            assert_eq!(parsed.max, h.max() as f64 / 1000.0);
            assert_eq!(last.value, parsed.max);
            let buckets = format!(
                "#[Buckets = {:12}, SubBuckets     =         2048]\n",
                h.buckets()
            );
            assert!(text.ends_with(&buckets), "{text}");
        }
    }

    #[test]
    fn empty_histogram_writes_zero_footer_and_renders() {
        let mut buf = Vec::new();
        write_hgrm(&mut buf, &hist()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let parsed = parse_hgrm(&text);
        assert!(parsed.rows.is_empty());
        assert!(text.contains("#[Mean    =        0.000, StdDeviation   =        0.000]\n"));
        assert!(text.contains("#[Max     =        0.000, Total count    =            0]\n"));

        let r = ProfileReport {
            title: String::new(),
            series: vec![series("idle", hist())],
            run: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        write_outputs(dir.path(), &r).unwrap();
        let s = load_summary(dir.path()).unwrap();
        assert_eq!(s.series["idle"].count, 0);
        assert_eq!(s.series["idle"].max, 0);
        let svg = fs::read_to_string(dir.path().join(PLOT_FILE)).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("idle (no samples)"));
        let mut out = Vec::new();
        print_table(&mut out, &r).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(table.lines().nth(1).unwrap().starts_with("idle"), "{table}");
        assert!(table.contains(" - "), "{table}");
    }

    #[test]
    fn svg_has_one_curve_per_series_and_escapes_text() {
        let mut r = report();
        r.title = "a<b & c>d \"q\"".into();
        r.series.push(series("x<y>", uniform()));
        let svg = render_svg(&r).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("a&lt;b &amp; c&gt;d &quot;q&quot;"));
        assert!(svg.contains("x&lt;y&gt;"));
        assert!(!svg.contains("a<b") && !svg.contains("x<y"));
        // Every polyline point lies inside the plot area.
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let pts = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"/>");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((MARGIN_L..=SVG_W - MARGIN_R).contains(&x), "{p}");
                assert!((MARGIN_T..=SVG_H - MARGIN_B).contains(&y), "{p}");
            }
        }
    }

    #[test]
    fn svg_axis_spans_what_the_data_supports() {
        let plot = |hist: Histogram<u64>| {
            render_svg(&ProfileReport {
                title: "axis".into(),
                series: vec![series("end_to_end", hist)],
                run: Vec::new(),
            })
            .unwrap()
        };
        // 100 samples reach about 99%: the axis still runs to its minimum, 99.99%.
        let mut h = hist();
        for v in 1..=100 {
            h.record(v * 100).unwrap();
        }
        let svg = plot(h);
        assert!(svg.contains(">99.99%<"), "{svg}");
        assert!(!svg.contains(">99.999%<"), "{svg}");

        // One outlier in a million: its row lies beyond 99.9999%, and the y axis must reach it.
        let mut h = hist();
        h.record_n(1_000, 999_999).unwrap();
        h.record(5_000_000).unwrap();
        let svg = plot(h);
        assert!(svg.contains(">99.9999%<"), "{svg}");
        assert!(svg.contains(">5000</text>"), "{svg}");
    }

    #[test]
    fn table_is_aligned_and_notes_overflows() {
        let mut r = report();
        r.series[1].overflows = 42;
        r.series[1].events_per_s = 850_000.0;
        let mut out = Vec::new();
        print_table(&mut out, &r).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r.title);
        assert!(lines[1].starts_with("series"));
        assert!(lines[1].ends_with("drops"));
        assert_eq!(lines[1].len(), lines[2].len(), "{text}");
        assert_eq!(lines[1].len(), lines[3].len(), "{text}");
        assert!(lines[2].contains("1.00M/s"), "{text}");
        assert!(lines[3].contains("850k/s"), "{text}");
        // The uniform series' max is 10000ns, within 3-digit resolution.
        assert!(lines[2].contains("10.0us"), "{text}");
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[4].starts_with("note: features.queue: 42 values"),
            "{text}"
        );
    }

    fn doctored(p99: u64, eps: f64, extra: &str) -> Summary {
        let s = SeriesSummary {
            count: 100,
            p50: 1_000,
            p90: 1_500,
            p99,
            p99_9: 0,
            p99_99: 10_000,
            max: 20_000,
            mean: 1_100.0,
            events_per_s: eps,
            drops: 0,
            overflows: 0,
        };
        Summary {
            title: format!("run p99={p99}"),
            run: BTreeMap::new(),
            order: vec!["end_to_end".into(), extra.into()],
            series: [
                ("end_to_end".to_string(), s.clone()),
                (extra.to_string(), s),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn compare_prints_ratios() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write_summary(
            &a.path().join(SUMMARY_FILE),
            &doctored(5_000, 1e6, "only_a"),
        )
        .unwrap();
        write_summary(
            &b.path().join(SUMMARY_FILE),
            &doctored(10_000, 0.0, "only_b"),
        )
        .unwrap();
        let mut out = Vec::new();
        compare(&mut out, a.path(), b.path()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let row = |series: &str, metric: &str| -> Vec<String> {
            text.lines()
                .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                .find(|c| c.len() >= 2 && c[0] == series && c[1] == metric)
                .unwrap_or_else(|| panic!("no {series} {metric} row in\n{text}"))
        };
        assert!(text.starts_with("A: run p99=5000  ("), "{text}");
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("B: run p99=10000  (")
        );
        assert_eq!(
            row("end_to_end", "p99"),
            ["end_to_end", "p99", "5.00us", "10.0us", "2.00x"]
        );
        assert_eq!(row("end_to_end", "p50")[4], "1.00x");
        // A is 0 for p99.9, and B's rate does not apply: no ratio.
        assert_eq!(row("end_to_end", "p99.9")[4], "-");
        assert_eq!(
            row("end_to_end", "events/s"),
            ["end_to_end", "events/s", "1.00M/s", "-", "-"]
        );
        assert_eq!(row("only_a", "max"), ["only_a", "max", "20.0us", "-", "-"]);
        assert_eq!(row("only_b", "max"), ["only_b", "max", "-", "20.0us", "-"]);
        let pos = |s: &str| text.find(&format!("\n{s} ")).unwrap();
        assert!(pos("end_to_end") < pos("only_a") && pos("only_a") < pos("only_b"));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SUMMARY_FILE);
        let shown = path.display().to_string();

        let err = load_summary(dir.path()).unwrap_err();
        assert!(format!("{err:#}").starts_with(&shown), "{err:#}");

        fs::write(&path, "{ not json").unwrap();
        let err = load_summary(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with(&shown), "{err}");

        write_outputs(dir.path(), &report()).unwrap();
        let json = fs::read_to_string(&path).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["series"]["end_to_end"] = value["series"]["ingest.service"].clone();
        value["series"]["ingest.service"]
            .as_object_mut()
            .unwrap()
            .remove("p99");
        fs::write(&path, value.to_string()).unwrap();
        let err = load_summary(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with(&shown), "{err}");
        assert!(
            err.contains("series `ingest.service`: missing field `p99`"),
            "{err}"
        );

        value["series"]["ingest.service"]["p99"] = 7.into();
        fs::write(&path, value.to_string()).unwrap();
        let err = load_summary(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("series `end_to_end` is missing from `order`"),
            "{err}"
        );

        value["units"] = "us".into();
        fs::write(&path, value.to_string()).unwrap();
        let err = load_summary(dir.path()).unwrap_err().to_string();
        assert!(err.contains("units are `us`"), "{err}");
    }

    #[test]
    fn duplicate_names_are_rejected_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut r = report();
        r.series.push(series("ingest.service", uniform()));
        let err = write_outputs(&out, &r).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
        r.series.pop();
        r.series.push(series("a/b", uniform()));
        r.series.push(series("a:b", uniform()));
        let err = write_outputs(&out, &r).unwrap_err().to_string();
        assert!(err.contains("a_b.hgrm"), "{err}");
        r.series.truncate(2);
        r.series[0].events_per_s = f64::NAN;
        assert!(write_outputs(&out, &r).is_err());
        assert!(!out.exists());
    }
}
