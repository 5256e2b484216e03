//! `loadtest report`: turns the `--json` files of one or more runs into one
//! self-contained HTML page (inline SVG, no scripts, fonts or images from
//! elsewhere) or one SVG: latency percentile curves on a scale of nines,
//! throughput over time, the router's CPU and RSS over time (when the runs
//! recorded them with `--router-pid`), every run overlaid in its own colour,
//! and a table of each run's figures.
//!
//! The charts are drawn with plotters' SVG backend; its text goes out as SVG
//! `<text>` laid out by the browser, so no font files are needed here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

/// What `loadtest report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One HTML page: the table and every chart as inline SVG.
    Html,
    /// One SVG: a summary of each run, then every chart.
    Svg,
}

// What a run's JSON file holds (written by `--json`, see `Report` in
// main.rs). Fields added later are optional, so that files from older runs
// still make a report.

use super::Latency as LatencyIn;

#[derive(Debug, Deserialize)]
struct PercentileIn {
    percentile: f64,
    us: f64,
}

#[derive(Debug, Deserialize)]
struct PointIn {
    t_s: f64,
    sent_per_s: f64,
    received_per_s: f64,
    router_cpu_pct: Option<f64>,
    router_rss_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct TimelineIn {
    interval_s: f64,
    points: Vec<PointIn>,
}

#[derive(Debug, Deserialize)]
struct RouterIn {
    cpu_pct_mean: f64,
    cpu_pct_max: f64,
    rss_max_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct RunIn {
    label: Option<String>,
    scenario: String,
    target: String,
    serializer: String,
    mode: String,
    duration_s: f64,
    sent: u64,
    received: u64,
    lost: Option<u64>,
    errors: u64,
    sent_per_s: f64,
    received_per_s: f64,
    latency: LatencyIn,
    percentiles: Option<Vec<PercentileIn>>,
    timeline: Option<TimelineIn>,
    router: Option<RouterIn>,
}

/// One run as the report shows it.
struct Run {
    label: String,
    file: String,
    color: RGBColor,
    data: RunIn,
    /// The latency curve: (nines, µs), see [`nines`].
    curve: Vec<(f64, f64)>,
}

/// Colours of the runs, in order (distinct, and readable on white).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1F, 0x77, 0xB4),
    RGBColor(0xD6, 0x27, 0x28),
    RGBColor(0x2C, 0xA0, 0x2C),
    RGBColor(0xFF, 0x7F, 0x0E),
    RGBColor(0x94, 0x67, 0xBD),
    RGBColor(0x8C, 0x56, 0x4B),
    RGBColor(0xE3, 0x77, 0xC2),
    RGBColor(0x17, 0xBE, 0xCF),
];

/// The x axis of the latency chart in nines: 0 is 0 %, 1 is 90 %, 2 is
/// 99 % ... 5 is 99.999 %; the maximum is drawn at [`X_MAX`].
const X_NINES: f64 = 5.0;
const X_MAX: f64 = 5.5;

const CHART_W: u32 = 960;
const CHART_H: u32 = 430;
const FONT: &str = "sans-serif";

fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        X_MAX
    } else {
        (-(1.0 - percentile / 100.0).log10()).clamp(0.0, X_NINES)
    }
}

fn nines_label(x: f64) -> String {
    if x >= X_MAX - 1e-9 {
        return "max".into();
    }
    let k = x.round() as i32;
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        k => format!("99.{}%", "9".repeat((k - 2).max(0) as usize)).replace(".%", "%"),
    }
}

/// The latency chart's x axis: nines from 0 to [`X_MAX`], with a tick and a
/// label at each nine (0%, 90%, ... 99.999%) and at the maximum.
struct NinesAxis;

impl Ranged for NinesAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (span * value.clamp(0.0, X_MAX) / X_MAX).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, X_MAX]
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..X_MAX
    }
}

impl ValueFormatter<f64> for NinesAxis {
    fn format(value: &f64) -> String {
        nines_label(*value)
    }
}

fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// 1234567.8 -> "1,234,568".
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let n = v.round().abs() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if v.round() < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// An axis value with an SI suffix: 1500000 -> "1.5M".
fn si(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

/// A latency in µs as an axis label: "50 µs", "2 ms", "1.5 s".
fn duration_label(us: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

fn load(paths: &[PathBuf]) -> Result<Vec<Run>, String> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let data: RunIn =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a loadtest run (a file written by --json): {e}", path.display()))?;
        let base = data.label.clone().unwrap_or_else(|| format!("{} {}", data.target, data.scenario));
        // two runs with one name would be told apart by colour only
        let mut label = base.clone();
        let mut n = 2;
        while runs.iter().any(|r| r.label == label) {
            label = format!("{base} ({n})");
            n += 1;
        }
        let curve = curve(&data);
        runs.push(Run {
            label,
            file: path.display().to_string(),
            color: PALETTE[i % PALETTE.len()],
            data,
            curve,
        });
    }
    Ok(runs)
}

/// The run's latency curve in (nines, µs); from the summary percentiles
/// when the file has no `percentiles` (older runs).
fn curve(r: &RunIn) -> Vec<(f64, f64)> {
    let l = &r.latency;
    let points: Vec<(f64, f64)> = match &r.percentiles {
        Some(p) if !p.is_empty() => p.iter().map(|p| (p.percentile, p.us)).collect(),
        _ if l.samples > 0 => vec![
            (50.0, l.p50_us),
            (90.0, l.p90_us),
            (99.0, l.p99_us),
            (99.9, l.p999_us),
            (100.0, l.max_us),
        ],
        _ => Vec::new(),
    };
    let mut c: Vec<(f64, f64)> = points
        .into_iter()
        .filter(|(p, us)| p.is_finite() && us.is_finite() && *us > 0.0 && (0.0..=100.0).contains(p))
        .map(|(p, us)| (nines(p), us))
        .collect();
    c.sort_by(|a, b| a.0.total_cmp(&b.0));
    c
}

fn points(r: &Run) -> &[PointIn] {
    r.data.timeline.as_ref().map(|t| t.points.as_slice()).unwrap_or(&[])
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Which charts the runs have data for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chart {
    Latency,
    Throughput,
    Cpu,
    Rss,
}

fn charts(runs: &[Run]) -> Vec<Chart> {
    let mut v = vec![Chart::Latency];
    if runs.iter().any(|r| !points(r).is_empty()) {
        v.push(Chart::Throughput);
    }
    if runs.iter().any(|r| points(r).iter().any(|p| p.router_cpu_pct.is_some())) {
        v.push(Chart::Cpu);
    }
    if runs.iter().any(|r| points(r).iter().any(|p| p.router_rss_bytes.is_some())) {
        v.push(Chart::Rss);
    }
    v
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// How a legend entry is marked.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Line,
    Dashed,
    Dot,
}

/// One entry of a chart's legend.
struct Key {
    text: String,
    color: RGBColor,
    mark: Mark,
}

const KEY_ROW_H: u32 = 24;
/// The legend starts under the plot's left edge (margin + y label area).
const KEY_LEFT: i32 = 100;
const GREY: RGBColor = RGBColor(110, 110, 110);

fn has_data(chart: Chart, r: &Run) -> bool {
    match chart {
        Chart::Latency => !r.curve.is_empty(),
        Chart::Throughput => !points(r).is_empty(),
        Chart::Cpu => points(r).iter().any(|p| p.router_cpu_pct.is_some()),
        Chart::Rss => points(r).iter().any(|p| p.router_rss_bytes.is_some()),
    }
}

/// The legend of a chart: each run with data for it, then what the marks mean.
fn keys(chart: Chart, runs: &[Run]) -> Vec<Key> {
    let mut v: Vec<Key> = runs
        .iter()
        .filter(|r| has_data(chart, r))
        .map(|r| Key {
            text: r.label.clone(),
            color: r.color,
            mark: Mark::Line,
        })
        .collect();
    let key = |text: &str, mark| Key {
        text: text.into(),
        color: GREY,
        mark,
    };
    match chart {
        Chart::Latency => v.push(key("maximum", Mark::Dot)),
        Chart::Throughput => {
            v.push(key("received/s", Mark::Line));
            v.push(key("sent/s", Mark::Dashed));
        }
        Chart::Cpu | Chart::Rss => {}
    }
    v
}

/// Where each legend entry goes, (x, row): in rows under the plot, as many
/// per row as fit (text width estimated, as the browser lays it out); and
/// the number of rows. The legend sits outside the plot, so it never hides
/// a curve.
fn key_layout(keys: &[Key]) -> (Vec<(i32, u32)>, u32) {
    let mut out = Vec::new();
    let (mut x, mut row) = (KEY_LEFT, 0u32);
    for k in keys {
        let w = 36 + (k.text.chars().count() as f64 * 7.0).ceil() as i32 + 28;
        if x > KEY_LEFT && x + w > CHART_W as i32 - 16 {
            row += 1;
            x = KEY_LEFT;
        }
        out.push((x, row));
        x += w;
    }
    let rows = if keys.is_empty() { 0 } else { row + 1 };
    (out, rows)
}

/// Height of a chart with its legend.
fn chart_height(chart: Chart, runs: &[Run]) -> u32 {
    CHART_H + key_layout(&keys(chart, runs)).1 * KEY_ROW_H + 10
}

fn draw(area: &Area, chart: Chart, runs: &[Run]) -> Result<(), String> {
    let keys = keys(chart, runs);
    let (at, rows) = key_layout(&keys);
    let (_, h) = area.dim_in_pixel();
    let (plot, legend) = area.split_vertically(h.saturating_sub(rows * KEY_ROW_H + 10));
    match chart {
        Chart::Latency => latency_chart(&plot, runs)?,
        Chart::Throughput => throughput_chart(&plot, runs)?,
        Chart::Cpu => {
            let series: Vec<(&Run, Vec<(f64, f64)>)> = runs
                .iter()
                .map(|r| {
                    let pts = points(r)
                        .iter()
                        .filter_map(|p| Some((finite(p.t_s)?, finite(p.router_cpu_pct?)?)))
                        .collect();
                    (r, pts)
                })
                .collect();
            let top = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(100.0f64, f64::max) * 1.1;
            time_chart(&plot, "Router CPU over time", "router CPU (% of one core)", top, &series, &|v| {
                format!("{v:.0}%")
            })?
        }
        Chart::Rss => {
            let mib = 1024.0 * 1024.0;
            let series: Vec<(&Run, Vec<(f64, f64)>)> = runs
                .iter()
                .map(|r| {
                    let pts = points(r)
                        .iter()
                        .filter_map(|p| Some((finite(p.t_s)?, p.router_rss_bytes? as f64 / mib)))
                        .collect();
                    (r, pts)
                })
                .collect();
            let top = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.15;
            time_chart(&plot, "Router memory (RSS) over time", "router RSS (MiB)", top, &series, &|v| {
                format!("{v:.0}")
            })?
        }
    }
    for (k, &(x, row)) in keys.iter().zip(&at) {
        let y = (row * KEY_ROW_H + KEY_ROW_H / 2) as i32;
        match k.mark {
            Mark::Line => legend.draw(&PathElement::new(vec![(x, y), (x + 26, y)], k.color.stroke_width(2))),
            Mark::Dashed => legend
                .draw(&PathElement::new(vec![(x, y), (x + 10, y)], k.color.stroke_width(2)))
                .and_then(|_| legend.draw(&PathElement::new(vec![(x + 16, y), (x + 26, y)], k.color.stroke_width(2)))),
            Mark::Dot => legend.draw(&Circle::new((x + 13, y), 4, k.color.filled())),
        }
        .map_err(err)?;
        let style = TextStyle::from((FONT, 16).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        legend.draw(&Text::new(k.text.clone(), (x + 34, y), style)).map_err(err)?;
    }
    Ok(())
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing failed: {e}")
}

fn latency_chart(area: &Area, runs: &[Run]) -> Result<(), String> {
    let values = || runs.iter().flat_map(|r| r.curve.iter().map(|p| p.1));
    let lo = values().fold(f64::INFINITY, f64::min);
    let hi = values().fold(0.0f64, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil());
        (lo, if hi > lo { hi } else { lo * 10.0 })
    } else {
        (1.0, 1000.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile", (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(84)
        .build_cartesian_2d(NinesAxis, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of nines)")
        .y_desc("latency (log scale)")
        .y_label_formatter(&|y| duration_label(*y))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    for r in runs.iter().filter(|r| !r.curve.is_empty()) {
        let color = r.color;
        chart
            .draw_series(LineSeries::new(r.curve.iter().copied(), color.stroke_width(2)))
            .map_err(err)?;
        // the maximum, marked
        if let Some(&(x, y)) = r.curve.last().filter(|p| p.0 >= X_MAX) {
            chart
                .draw_series(std::iter::once(Circle::new((x, y), 4, color.filled())))
                .map_err(err)?;
        }
    }
    if runs.iter().all(|r| r.curve.is_empty()) {
        note(area, "no latency samples in these runs")?;
    }
    Ok(())
}

fn throughput_chart(area: &Area, runs: &[Run]) -> Result<(), String> {
    let t_max = runs
        .iter()
        .flat_map(|r| points(r).iter().map(|p| p.t_s))
        .filter(|t| t.is_finite())
        .fold(0.0f64, f64::max);
    let t_max = if t_max > 0.0 { t_max } else { 1.0 };
    let top = runs
        .iter()
        .flat_map(|r| points(r).iter().flat_map(|p| [p.sent_per_s, p.received_per_s]))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput over time", (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(84)
        .build_cartesian_2d(0f64..t_max, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time since the measurement started (s)")
        .y_desc("messages per second")
        .y_label_formatter(&|v| si(*v))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(244, 244, 244))
        .max_light_lines(4)
        .draw()
        .map_err(err)?;
    for r in runs {
        let color = r.color;
        let received: Vec<(f64, f64)> = points(r)
            .iter()
            .filter_map(|p| Some((finite(p.t_s)?, finite(p.received_per_s)?)))
            .collect();
        let sent: Vec<(f64, f64)> = points(r)
            .iter()
            .filter_map(|p| Some((finite(p.t_s)?, finite(p.sent_per_s)?)))
            .collect();
        chart.draw_series(LineSeries::new(received, color.stroke_width(2))).map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(sent, 8, 5, color.mix(0.75).stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}

type Series<'a> = [(&'a Run, Vec<(f64, f64)>)];

fn time_chart(area: &Area, title: &str, y_desc: &str, top: f64, series: &Series, fmt: &dyn Fn(&f64) -> String) -> Result<(), String> {
    let t_max = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(0.0f64, f64::max);
    let t_max = if t_max > 0.0 { t_max } else { 1.0 };
    let top = if top.is_finite() && top > 0.0 { top } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(84)
        .build_cartesian_2d(0f64..t_max, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time since the measurement started (s)")
        .y_desc(y_desc)
        .y_label_formatter(fmt)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 17))
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(244, 244, 244))
        .max_light_lines(4)
        .draw()
        .map_err(err)?;
    for (r, pts) in series.iter().filter(|(_, s)| !s.is_empty()) {
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), r.color.stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}

fn note(area: &Area, text: &str) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 18).into_font())
        .color(&RGBColor(120, 120, 120))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(text.to_owned(), (w as i32 / 2, h as i32 / 2), style))
        .map_err(err)
}

fn chart_svg(chart: Chart, runs: &[Run]) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, chart_height(chart, runs))).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root, chart, runs)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

fn chart_id(c: Chart) -> &'static str {
    match c {
        Chart::Latency => "latency",
        Chart::Throughput => "throughput",
        Chart::Cpu => "router-cpu",
        Chart::Rss => "router-rss",
    }
}

fn has_router(runs: &[Run]) -> bool {
    runs.iter().any(|r| r.data.router.is_some())
}

/// A column of the summary table: its heading, and a run's cell.
type Column = (&'static str, Box<dyn Fn(&Run) -> String>);

fn columns(runs: &[Run]) -> Vec<Column> {
    let mut c: Vec<Column> = vec![
        ("label", Box::new(|r: &Run| r.label.clone())),
        ("scenario", Box::new(|r: &Run| r.data.scenario.clone())),
        ("serializer", Box::new(|r: &Run| r.data.serializer.clone())),
        ("mode", Box::new(|r: &Run| r.data.mode.clone())),
        ("measured (s)", Box::new(|r: &Run| format!("{:.2}", r.data.duration_s))),
        ("sent/s", Box::new(|r: &Run| thousands(r.data.sent_per_s))),
        ("received/s", Box::new(|r: &Run| thousands(r.data.received_per_s))),
        ("p50 µs", Box::new(|r: &Run| format!("{:.1}", r.data.latency.p50_us))),
        ("p99 µs", Box::new(|r: &Run| format!("{:.1}", r.data.latency.p99_us))),
        ("p99.9 µs", Box::new(|r: &Run| format!("{:.1}", r.data.latency.p999_us))),
        ("max µs", Box::new(|r: &Run| format!("{:.1}", r.data.latency.max_us))),
        ("errors", Box::new(|r: &Run| r.data.errors.to_string())),
        ("lost", Box::new(|r: &Run| r.data.lost.map_or("-".into(), |l| l.to_string()))),
    ];
    if has_router(runs) {
        c.push((
            "router CPU %",
            Box::new(|r: &Run| r.data.router.as_ref().map_or("-".into(), |u| format!("{:.0}", u.cpu_pct_mean))),
        ));
        c.push((
            "router CPU % max",
            Box::new(|r: &Run| r.data.router.as_ref().map_or("-".into(), |u| format!("{:.0}", u.cpu_pct_max))),
        ));
        c.push((
            "router RSS max MiB",
            Box::new(|r: &Run| {
                r.data
                    .router
                    .as_ref()
                    .map_or("-".into(), |u| format!("{:.1}", u.rss_max_bytes as f64 / 1048576.0))
            }),
        ));
    }
    c
}

const CSS: &str = "
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px 0; }
p.sub { margin: 0 0 18px 0; color: #555; }
div.table { overflow-x: auto; margin-bottom: 22px; }
table.summary { border-collapse: collapse; font-size: 13px; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 3px 6px; }
table.summary th { background: #f2f2f2; text-align: left; vertical-align: bottom; font-weight: 600; }
table.summary td { vertical-align: top; }
table.summary td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.summary td.label { min-width: 9em; font-weight: 600; }
span.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 2px; vertical-align: middle; }
div.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure.chart { margin: 0; border: 1px solid #ddd; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
p.files { color: #777; font-size: 12px; margin-top: 18px; }
";

fn html(runs: &[Run]) -> Result<String, String> {
    let names: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>loadtest report: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&names.join(" vs "))
    );
    let _ = writeln!(h, "<h1>Load-test report</h1>\n<p class=\"sub\">{}</p>", esc(&names.join(" vs ")));
    let cols = columns(runs);
    h.push_str("<div class=\"table\">\n<table class=\"summary\">\n<thead><tr><th></th>");
    for (name, _) in &cols {
        let _ = write!(h, "<th>{}</th>", esc(name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in runs {
        let c = hex(r.color);
        let _ = write!(
            h,
            "<tr data-label=\"{}\" data-color=\"{c}\"><td><span class=\"swatch\" style=\"background:{c}\"></span></td>",
            esc(&r.label)
        );
        for (name, cell) in &cols {
            let text = cell(r);
            let class = match *name {
                "label" => " class=\"label\"",
                "scenario" | "serializer" | "mode" => "",
                _ => " class=\"num\"",
            };
            let _ = write!(h, "<td{class}>{}</td>", esc(&text));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</div>\n<div class=\"charts\">\n");
    for chart in charts(runs) {
        let _ = writeln!(h, "<figure class=\"chart\" id=\"{}\">", chart_id(chart));
        h.push_str(&chart_svg(chart, runs)?);
        h.push_str("</figure>\n");
    }
    h.push_str("</div>\n<p class=\"files\">");
    for (i, r) in runs.iter().enumerate() {
        let interval = r
            .data
            .timeline
            .as_ref()
            .map(|t| format!(", timeline every {} s", t.interval_s))
            .unwrap_or_default();
        let _ = write!(
            h,
            "{}{}: {} ({} sent, {} received, {} latency samples{})",
            if i > 0 { "<br>" } else { "" },
            esc(&r.label),
            esc(&r.file),
            r.data.sent,
            r.data.received,
            r.data.latency.samples,
            esc(&interval)
        );
    }
    h.push_str("</p>\n</body>\n</html>\n");
    Ok(h)
}

fn svg(runs: &[Run]) -> Result<String, String> {
    let charts = charts(runs);
    let line_h = 22u32;
    let header_h = 56 + line_h * runs.len() as u32;
    let height = header_h + charts.iter().map(|c| chart_height(*c, runs)).sum::<u32>();
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (header, body) = root.split_vertically(header_h);
        let title = TextStyle::from((FONT, 24).into_font()).color(&BLACK);
        header
            .draw(&Text::new("Load-test report".to_owned(), (16, 14), title))
            .map_err(err)?;
        for (i, r) in runs.iter().enumerate() {
            let y = 52 + line_h as i32 * i as i32;
            header
                .draw(&Rectangle::new([(16, y - 1), (30, y + 13)], r.color.filled()))
                .map_err(err)?;
            let l = &r.data.latency;
            let text = format!(
                "{}: {}, {}, {}; sent {}/s, received {}/s; p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} µs; errors {}",
                r.label,
                r.data.scenario,
                r.data.serializer,
                r.data.mode,
                thousands(r.data.sent_per_s),
                thousands(r.data.received_per_s),
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                r.data.errors
            );
            let style = TextStyle::from((FONT, 13).into_font()).color(&BLACK);
            header.draw(&Text::new(text, (38, y), style)).map_err(err)?;
        }
        let mut rest = body;
        for chart in charts {
            let (area, below) = rest.split_vertically(chart_height(chart, runs));
            draw(&area, chart, runs)?;
            rest = below;
        }
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// `loadtest report RUN.json ... [--out FILE] [--format html|svg]`. Exit
/// status 2 for input that is not there or not a loadtest run.
pub fn main(paths: &[PathBuf], out: Option<&Path>, format: Format) -> ExitCode {
    let runs = match load(paths) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest report: {e}");
            return ExitCode::from(2);
        }
    };
    let text = match format {
        Format::Html => html(&runs),
        Format::Svg => svg(&runs),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("loadtest report: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from(match format {
            Format::Html => "report.html",
            Format::Svg => "report.svg",
        })
    });
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("loadtest report: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("loadtest report: wrote {} ({} runs)", out.display(), runs.len());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_scale() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!((nines(99.999) - 5.0).abs() < 1e-6);
        assert_eq!(nines(100.0), X_MAX);
        let labels: Vec<String> = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, X_MAX].iter().map(|x| nines_label(*x)).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "max"]);
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(1234567.6), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(250_000.0), "250k");
        assert_eq!(si(0.0), "0");
        assert_eq!(duration_label(50.0), "50 µs");
        assert_eq!(duration_label(2000.0), "2 ms");
        assert_eq!(esc("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    fn minimal(label: &str) -> String {
        format!(
            r#"{{"label":"{label}","scenario":"rpc","target":"rs://x","serializer":"json","mode":"closed loop, window 1",
               "duration_s":1.0,"sent":10,"received":10,"lost":null,"errors":0,"sent_per_s":10.0,"received_per_s":10.0,
               "latency":{{"samples":10,"p50_us":100.0,"p90_us":150.0,"p99_us":200.0,"p999_us":250.0,"max_us":300.0}},
               "timeline":{{"interval_s":0.5,"points":[{{"t_s":0.5,"sent_per_s":9.0,"received_per_s":9.0,"router_cpu_pct":50.0,"router_rss_bytes":1048576}},
                                                        {{"t_s":1.0,"sent_per_s":11.0,"received_per_s":11.0,"router_cpu_pct":70.0,"router_rss_bytes":2097152}}]}},
               "router":{{"pid":1,"cpu_pct_mean":60.0,"cpu_pct_max":70.0,"rss_start_bytes":1,"rss_end_bytes":2,"rss_max_bytes":2097152}}}}"#
        )
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.json");
        let e = load(&[missing]).err().unwrap_or_default();
        assert!(e.contains("cannot read"), "{e}");
        for (name, text) in [
            ("garbage.json", "not json at all"),
            ("other.json", r#"{"hello": 1}"#),
            ("list.json", "[1, 2]"),
            ("empty.json", ""),
        ] {
            let p = write(&dir, name, text);
            let e = load(&[p]).err().unwrap_or_default();
            assert!(e.contains("is not a loadtest run"), "{name}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn report_of_two_runs() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-test2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let a = write(&dir, "a.json", &minimal("run <A>"));
        let b = write(&dir, "b.json", &minimal("run <A>"));
        let runs = load(&[a, b]).expect("two runs");
        assert_eq!(runs[1].label, "run <A> (2)");
        let page = html(&runs).expect("html");
        assert!(page.contains("run &lt;A&gt; (2)"));
        for id in ["latency", "throughput", "router-cpu", "router-rss"] {
            assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(!page.contains("<script") && !page.contains("href=") && !page.contains("src="));
        assert!(page.contains(&hex(PALETTE[0])) && page.contains(&hex(PALETTE[1])));
        let one = svg(&runs).expect("svg");
        assert!(one.starts_with("<svg") && one.contains("polyline"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
