//! `--plot FILE.svg|png`: latency percentiles, goodput and failures per second, one panel
//! each, on a shared time axis. People read pictures faster than columns.
//!
//! Text needs a TrueType font; rather than link a font library (fontconfig, freetype), the
//! DejaVu Sans file Debian ships (`fonts-dejavu-core`) is read once at run time.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::report::{HttpReport, SecondPoint};
use crate::stats::Percentiles;

/// A series to draw: its name, its colour, and how to read its value off a point.
type Line<P, V> = (&'static str, RGBColor, fn(&P) -> V);

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const SIZE: (u32, u32) = (1100, 900);

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|path| std::fs::read(path).ok())
                .ok_or_else(|| "no DejaVu Sans font found; install fonts-dejavu-core".to_owned())?;
            // Registered once per process; plotters needs the bytes for the program's lifetime.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "DejaVu Sans could not be parsed".to_owned())
        })
        .clone()
        .map_err(|problem| anyhow!(problem))
}

/// Draws `report` to `path`; the extension picks SVG or PNG.
pub fn draw(report: &HttpReport, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    match path
        .extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => panels(&SVGBackend::new(path, SIZE).into_drawing_area(), report),
        Some("png") => panels(&BitMapBackend::new(path, SIZE).into_drawing_area(), report),
        _ => Err(anyhow!(
            "--plot must end in .svg or .png: {}",
            path.display()
        )),
    }
    .with_context(|| format!("drawing {}", path.display()))
}

fn panels<DB>(root: &DrawingArea<DB, Shift>, report: &HttpReport) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let fail = |err: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{err}");
    root.fill(&WHITE).map_err(fail)?;
    let title = format!(
        "{} {} ({}, {} connections)",
        report.method, report.url, report.mode, report.connections
    );
    let titled = root.titled(&title, ("sans-serif", 22)).map_err(fail)?;
    let areas = titled.split_evenly((3, 1));
    let seconds = report.series.len().max(1) as f64;

    let latency_max = report
        .series
        .iter()
        .map(|p| p.latency_ms.p999)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = panel(&areas[0], "latency per second (ms)", seconds, latency_max)?;
    let lines: [Line<Percentiles, f64>; 3] = [
        ("p50", BLUE, |p| p.p50),
        ("p99", RGBColor(230, 120, 0), |p| p.p99),
        ("p99.9", RED, |p| p.p999),
    ];
    for (name, color, pick) in lines {
        chart
            .draw_series(LineSeries::new(
                report
                    .series
                    .iter()
                    .map(|p| (p.second as f64 + 0.5, pick(&p.latency_ms))),
                color.stroke_width(2),
            ))
            .map_err(fail)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(fail)?;

    let counts: [Line<SecondPoint, u64>; 2] = [
        ("2xx answers per second", RGBColor(0, 140, 60), |p| p.ok),
        ("failures per second", RED, |p| p.failed),
    ];
    for (area, (caption, color, pick)) in counts
        .into_iter()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
    {
        let top = report.series.iter().map(pick).max().unwrap_or(0).max(1) as f64 * 1.1;
        let mut chart = panel(&areas[area], caption, seconds, top)?;
        chart
            .draw_series(LineSeries::new(
                report
                    .series
                    .iter()
                    .map(|p| (p.second as f64 + 0.5, pick(p) as f64)),
                color.stroke_width(2),
            ))
            .map_err(fail)?;
    }
    root.present().map_err(fail)?;
    Ok(())
}

/// One panel on `area`: `caption` above, seconds along (0 to `seconds`), 0 to `top` up.
fn panel<'a, DB>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    seconds: f64,
    top: f64,
) -> anyhow::Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let fail = |err: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{err}");
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..seconds, 0.0..top)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(fail)?;
    Ok(chart)
}
