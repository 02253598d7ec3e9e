//! SVG plots of a set of runs, one series per configuration (plotters, SVG backend).
//!
//! Plots are rendered into a string and written with one `std::fs::write`, so a failure leaves
//! no half-written file behind and is reported with its path. Long series are decimated to what
//! a plot can show (per pixel column: first, lowest, highest and last point), which keeps every
//! spike and every gap while a 10,000-probe run stays a few hundred kilobytes.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::table::fmt_ms;
use super::PaperError;
use crate::report::{Report, Strategy};

/// RTT of every answered probe over its send time; lost probes are shaded gaps.
pub const PROBE_PLOT: &str = "probe_received_vs_sent.svg";
/// CDF of HTTP request latency (log x axis).
pub const HTTP_PLOT: &str = "http_latency_cdf.svg";
/// TCP throughput per bin over time.
pub const TCP_PLOT: &str = "tcp_throughput.svg";

/// Plot width in pixels.
const WIDTH: u32 = 1200;
/// Height of the single-chart plots and of one panel of the probe plot.
const HEIGHT: u32 = 600;
const PANEL_HEIGHT: u32 = 240;
/// Pixel columns a series is decimated to.
const COLUMNS: usize = 1500;
/// Points kept of a latency CDF (plus the whole top 1 %).
const CDF_POINTS: usize = 2000;
/// The HTTP "slow request" threshold (the 1 s SYN-retransmission mode).
const SLOW_MS: f64 = 900.0;

/// Writes the plots of `runs` (configuration name and report, in legend order) into `dir`
/// (created if missing), each SVG with a PNG of it beside it (same name, `.png`), and returns
/// the files written (each SVG, then its PNG). A plot is written only if at least
/// one run has data for it: the probe plot needs the raw probe series (`raw.probe`), the CDF
/// the raw HTTP series (`raw.http`), the throughput plot a TCP summary with bins.
pub fn write_plots<S: AsRef<str>>(
    dir: &Path,
    runs: &[(S, &Report)],
) -> Result<Vec<PathBuf>, PaperError> {
    std::fs::create_dir_all(dir).map_err(|source| PaperError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let series: Vec<Series<'_>> = runs
        .iter()
        .zip(colors(runs))
        .map(|((name, report), color)| Series {
            name: name.as_ref(),
            report,
            color,
        })
        .collect();
    let mut written = Vec::new();
    let fonts = PngRenderer::new().map_err(|message| PaperError::Plot {
        path: dir.to_owned(),
        message,
    })?;
    let plots: [(&str, PlotFn); 3] = [
        (PROBE_PLOT, probe_plot),
        (HTTP_PLOT, http_cdf_plot),
        (TCP_PLOT, tcp_plot),
    ];
    for (file, draw) in plots {
        let path = dir.join(file);
        let svg = draw(&series).map_err(|message| PaperError::Plot {
            path: path.clone(),
            message,
        })?;
        if let Some(svg) = svg {
            std::fs::write(&path, &svg).map_err(|source| PaperError::Io {
                path: path.clone(),
                source,
            })?;
            let png = path.with_extension("png");
            let bytes = fonts.render_png(&svg).map_err(|message| PaperError::Plot {
                path: png.clone(),
                message,
            })?;
            std::fs::write(&png, bytes).map_err(|source| PaperError::Io {
                path: png.clone(),
                source,
            })?;
            written.push(path);
            written.push(png);
        }
    }
    Ok(written)
}

/// Renders the SVG plots into PNGs beside them (resvg: the SVG's own renderer, pure Rust, no
/// second drawing code to keep in step with the SVG one). Text needs a system font: plotters
/// writes `sans-serif`, mapped here to the first installed of a few common families.
struct PngRenderer {
    options: resvg::usvg::Options<'static>,
}

impl PngRenderer {
    /// Loads the system's fonts (Debian: `fonts-dejavu-core`); fails if there is none, since
    /// a PNG without its labels and legend would mislead.
    fn new() -> Result<PngRenderer, String> {
        let mut options = resvg::usvg::Options::default();
        let db = options.fontdb_mut();
        db.load_system_fonts();
        let families = [
            "DejaVu Sans",
            "Liberation Sans",
            "Noto Sans",
            "FreeSans",
            "Arial",
        ];
        let family = families
            .iter()
            .find(|f| {
                db.faces()
                    .any(|face| face.families.iter().any(|(name, _)| name == *f))
            })
            .map(|f| (*f).to_owned())
            .or_else(|| {
                db.faces()
                    .next()
                    .and_then(|face| face.families.first().map(|(name, _)| name.clone()))
            })
            .ok_or_else(|| {
                "no system font to draw the PNG plots' text (install fonts-dejavu-core)".to_owned()
            })?;
        db.set_sans_serif_family(family);
        Ok(PngRenderer { options })
    }

    /// The PNG of `svg`.
    fn render_png(&self, svg: &str) -> Result<Vec<u8>, String> {
        let tree = resvg::usvg::Tree::from_str(svg, &self.options)
            .map_err(|e| format!("the SVG does not parse for its PNG: {e}"))?;
        let size = tree.size().to_int_size();
        let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
            .ok_or_else(|| format!("no {}x{} image", size.width(), size.height()))?;
        resvg::render(
            &tree,
            resvg::tiny_skia::Transform::default(),
            &mut pixmap.as_mut(),
        );
        pixmap
            .encode_png()
            .map_err(|e| format!("encoding the PNG: {e}"))
    }
}

/// Draws one plot into an SVG string; `Ok(None)` if no run has data for it.
type PlotFn = fn(&[Series<'_>]) -> Result<Option<String>, String>;

/// One configuration to draw.
struct Series<'a> {
    name: &'a str,
    report: &'a Report,
    color: RGBColor,
}

/// Colors by strategy, so a configuration has the same color in every plot; a strategy seen
/// again takes the next spare color.
fn colors<S>(runs: &[(S, &Report)]) -> Vec<RGBColor> {
    const SPARE: [RGBColor; 4] = [
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    let mut used = Vec::new();
    let mut spare = SPARE.iter().cycle();
    runs.iter()
        .map(|(_, report)| {
            let preferred = match report.strategy {
                Strategy::None => RGBColor(90, 90, 90),
                Strategy::Traditional => RGBColor(214, 39, 40),
                Strategy::SrDrop => RGBColor(255, 127, 14),
                Strategy::SrBuffer => RGBColor(31, 119, 180),
            };
            let color = if used.contains(&preferred) {
                spare.next().copied().unwrap_or(BLACK)
            } else {
                preferred
            };
            used.push(color);
            color
        })
        .collect()
}

/// `?` for plotters' errors, whose types depend on the backend.
trait OrMessage<T> {
    fn or_msg(self) -> Result<T, String>;
}

impl<T, E: Display> OrMessage<T> for Result<T, E> {
    fn or_msg(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Keeps, per pixel column of `x0..x1`, the first, lowest, highest and last point (in x
/// order). `points` must be sorted by x. Short series are returned unchanged.
fn decimate(points: &[(f64, f64)], x0: f64, x1: f64, columns: usize) -> Vec<(f64, f64)> {
    if points.len() <= 4 * columns || x1 <= x0 {
        return points.to_vec();
    }
    let scale = columns as f64 / (x1 - x0);
    let column = |x: f64| ((x - x0) * scale).floor() as i64;
    let mut out = Vec::with_capacity(4 * columns);
    let mut i = 0;
    while let Some(first) = points.get(i) {
        let c = column(first.0);
        let len = points[i..]
            .iter()
            .position(|p| column(p.0) != c)
            .unwrap_or(points.len() - i);
        let bucket = &points[i..i + len];
        let (mut lo, mut hi) = (0, 0);
        for (k, p) in bucket.iter().enumerate() {
            if p.1 < bucket[lo].1 {
                lo = k;
            }
            if p.1 > bucket[hi].1 {
                hi = k;
            }
        }
        let mut keep = [0, lo, hi, len - 1];
        keep.sort_unstable();
        let mut last = None;
        for k in keep {
            if last != Some(k) {
                out.push(bucket[k]);
                last = Some(k);
            }
        }
        i += len;
    }
    out
}

/// The runs of consecutive answered probes as (send s, RTT ms) points, and the loss gaps as
/// send-time spans in seconds (first lost probe to the next answered one).
#[allow(clippy::type_complexity)]
fn probe_runs(
    samples: &[crate::workload::probe::ProbeSample],
) -> (Vec<Vec<(f64, f64)>>, Vec<(f64, f64)>) {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut gaps = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut gap_start: Option<f64> = None;
    for s in samples {
        match s.received_ms {
            Some(at) => {
                if let Some(start) = gap_start.take() {
                    gaps.push((start / 1e3, s.sent_ms / 1e3));
                }
                current.push((s.sent_ms / 1e3, at - s.sent_ms));
            }
            None => {
                if gap_start.is_none() {
                    gap_start = Some(s.sent_ms);
                    if !current.is_empty() {
                        runs.push(std::mem::take(&mut current));
                    }
                }
            }
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    if let (Some(start), Some(last)) = (gap_start, samples.last()) {
        // Lost up to the end: one interval past the last probe.
        let interval = samples
            .windows(2)
            .last()
            .map_or(1.0, |w| w[1].sent_ms - w[0].sent_ms);
        gaps.push((start / 1e3, (last.sent_ms + interval) / 1e3));
    }
    (runs, gaps)
}

fn probe_plot(series: &[Series<'_>]) -> Result<Option<String>, String> {
    let with_data: Vec<(&Series<'_>, &[_])> = series
        .iter()
        .filter_map(|s| {
            let raw = s.report.raw.as_ref()?;
            (!raw.probe.is_empty()).then_some((s, raw.probe.as_slice()))
        })
        .collect();
    if with_data.is_empty() {
        return Ok(None);
    }
    let x_max = with_data
        .iter()
        .filter_map(|(_, samples)| samples.last())
        .map(|s| s.sent_ms / 1e3)
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.01;
    let panels = with_data.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT * panels + 20))
            .into_drawing_area();
        root.fill(&WHITE).or_msg()?;
        let areas = root.margin(10, 10, 0, 0).split_evenly((with_data.len(), 1));
        for (i, ((s, samples), area)) in with_data.iter().zip(areas).enumerate() {
            let (runs, gaps) = probe_runs(samples);
            let y_max = runs
                .iter()
                .flatten()
                .map(|p| p.1)
                .fold(0.0, f64::max)
                .max(0.5)
                * 1.1;
            let lost = samples.iter().filter(|p| p.received_ms.is_none()).count();
            let extra = s
                .report
                .probe
                .as_ref()
                .map(|p| format!(", max extra delay {} ms", fmt_ms(p.max_extra_delay_ms)))
                .unwrap_or_default();
            let caption = format!("{}: {lost} of {} probes lost{extra}", s.name, samples.len());
            let last = i + 1 == with_data.len();
            let mut chart = ChartBuilder::on(&area)
                .caption(caption, ("sans-serif", 16))
                .margin(5)
                .x_label_area_size(if last { 40 } else { 20 })
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)
                .or_msg()?;
            let mut mesh = chart.configure_mesh();
            mesh.y_desc("RTT (ms)").light_line_style(WHITE);
            if last {
                mesh.x_desc("probe send time (s); shaded: lost probes");
            }
            mesh.draw().or_msg()?;
            let shade = s.color.mix(0.25).filled();
            chart
                .draw_series(
                    gaps.iter()
                        .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, y_max)], shade)),
                )
                .or_msg()?;
            for run in &runs {
                if let [only] = run.as_slice() {
                    chart
                        .draw_series(std::iter::once(Circle::new(*only, 1, s.color.filled())))
                        .or_msg()?;
                } else {
                    let points = decimate(run, 0.0, x_max, COLUMNS);
                    chart
                        .draw_series(LineSeries::new(points, s.color.stroke_width(1)))
                        .or_msg()?;
                }
            }
        }
        root.present().or_msg()?;
    }
    Ok(Some(svg))
}

/// (latency ms, cumulative fraction of all requests) points of a CDF, at most about
/// `max_points` spread evenly in rank plus every point of the top 1 %. Failed requests count
/// in `total` but have no latency, so the CDF ends below 1 when some failed.
fn cdf_points(sorted: &[f64], total: usize, max_points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 || total == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max_points.max(1)).max(1);
    let tail_from = n - n.div_ceil(100);
    sorted
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i >= tail_from)
        .map(|(i, &lat)| (lat, (i + 1) as f64 / total as f64))
        .collect()
}

fn http_cdf_plot(series: &[Series<'_>]) -> Result<Option<String>, String> {
    let with_data: Vec<(&Series<'_>, Vec<f64>, usize)> = series
        .iter()
        .filter_map(|s| {
            let raw = s.report.raw.as_ref()?;
            let mut ok: Vec<f64> = raw
                .http
                .iter()
                .filter_map(|h| h.latency_ms)
                .filter(|l| l.is_finite())
                .collect();
            ok.sort_by(f64::total_cmp);
            (!ok.is_empty()).then_some((s, ok, raw.http.len()))
        })
        .collect();
    if with_data.is_empty() {
        return Ok(None);
    }
    let lo = with_data
        .iter()
        .filter_map(|(_, v, _)| v.first())
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(0.01)
        * 0.8;
    let hi = with_data
        .iter()
        .filter_map(|(_, v, _)| v.last())
        .copied()
        .fold(0.0, f64::max)
        .max(SLOW_MS)
        * 1.25;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).or_msg()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "HTTP session opening: latency CDF (connect + request + response)",
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
            .or_msg()?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of requests")
            .draw()
            .or_msg()?;
        chart
            .draw_series(LineSeries::new(
                [(SLOW_MS, 0.0), (SLOW_MS, 1.0)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .or_msg()?
            .label(">= 0.9 s: the 1 s SYN-retry mode")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (s, sorted, total) in &with_data {
            let color = s.color;
            let p99 = s
                .report
                .http
                .as_ref()
                .map(|h| format!(" (p99 {} ms)", fmt_ms(h.p99_ms)))
                .unwrap_or_default();
            chart
                .draw_series(LineSeries::new(
                    cdf_points(sorted, *total, CDF_POINTS),
                    color.stroke_width(2),
                ))
                .or_msg()?
                .label(format!("{}{p99}", s.name))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .or_msg()?;
        root.present().or_msg()?;
    }
    Ok(Some(svg))
}

fn tcp_plot(series: &[Series<'_>]) -> Result<Option<String>, String> {
    let with_data: Vec<(&Series<'_>, &crate::report::TcpReport)> = series
        .iter()
        .filter_map(|s| {
            let tcp = s.report.tcp.as_ref()?;
            (!tcp.bins_mbps.is_empty() && tcp.bin_ms > 0.0).then_some((s, tcp))
        })
        .collect();
    if with_data.is_empty() {
        return Ok(None);
    }
    let x_max = with_data
        .iter()
        .map(|(_, t)| t.bins_mbps.len() as f64 * t.bin_ms / 1e3)
        .fold(0.0, f64::max);
    let y_max = with_data
        .iter()
        .flat_map(|(_, t)| t.bins_mbps.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let bin_label = with_data
        .first()
        .map(|(_, t)| format!("{:.0} ms bins", t.bin_ms))
        .unwrap_or_default();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).or_msg()?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("TCP bulk throughput towards the VM ({bin_label})"),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .or_msg()?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("throughput (Mb/s)")
            .draw()
            .or_msg()?;
        for (s, tcp) in &with_data {
            let color = s.color;
            let bin_s = tcp.bin_ms / 1e3;
            // A step line: each bin is flat over its own interval.
            let points = tcp.bins_mbps.iter().enumerate().flat_map(|(i, &v)| {
                let t = i as f64 * bin_s;
                [(t, v), (t + bin_s, v)]
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .or_msg()?
                .label(format!(
                    "{} (worst {:.0}, median {:.0} Mb/s)",
                    s.name, tcp.worst_bin_mbps, tcp.median_mbps
                ))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .or_msg()?;
        root.present().or_msg()?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paper::tests::{baseline, sr_buffer, sr_drop, traditional};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "srmig-paper-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_three_plots_naming_every_configuration() {
        let dir = temp_dir("all");
        let (a, b, c, d) = (baseline(), traditional(), sr_drop(), sr_buffer());
        let runs = [
            ("no migration", &a),
            ("traditional", &b),
            ("SR, drop", &c),
            ("SR, buffer", &d),
        ];
        let files = write_plots(&dir, &runs).expect("plots");
        let svgs = [
            dir.join(PROBE_PLOT),
            dir.join(HTTP_PLOT),
            dir.join(TCP_PLOT),
        ];
        let expected: Vec<PathBuf> = svgs
            .iter()
            .flat_map(|s| [s.clone(), s.with_extension("png")])
            .collect();
        assert_eq!(files, expected);
        for png in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "png"))
        {
            let bytes = std::fs::read(png).expect("read png");
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", png.display());
            // The IHDR's width: the SVG's.
            let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
            assert_eq!(width, WIDTH, "{}", png.display());
        }
        let files = svgs.to_vec();
        for file in &files {
            let svg = std::fs::read_to_string(file).expect("read plot");
            assert!(svg.starts_with("<svg"), "{}", file.display());
            assert!(svg.trim_end().ends_with("</svg>"), "{}", file.display());
            for (name, _) in &runs {
                assert!(svg.contains(name), "{} lacks {name}", file.display());
            }
            // Every series is drawn in its own color.
            for color in ["#D62728", "#1F77B4", "#FF7F0E", "#5A5A5A"] {
                assert!(svg.contains(color), "{} lacks {color}", file.display());
            }
            assert!(
                svg.len() < 1_500_000,
                "{} is {} bytes",
                file.display(),
                svg.len()
            );
        }
        let probe = std::fs::read_to_string(&files[0]).expect("read");
        assert!(probe.contains("722 of 10000 probes lost"), "caption");
        assert!(probe.contains("<rect"), "loss gaps are shaded");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plots_without_data_are_not_written() {
        let dir = temp_dir("none");
        let mut r = baseline();
        r.raw = None;
        let files = write_plots(&dir, &[("no migration", &r)]).expect("plots");
        let tcp = dir.join(TCP_PLOT);
        assert_eq!(files, vec![tcp.clone(), tcp.with_extension("png")]);
        assert!(!dir.join(PROBE_PLOT).exists());
        let files = write_plots::<&str>(&dir, &[]).expect("plots");
        assert!(files.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_directory_is_an_io_error_naming_it() {
        let file = temp_dir("file");
        std::fs::write(&file, b"x").expect("write");
        let r = baseline();
        let err = write_plots(&file.join("sub"), &[("x", &r)]).expect_err("not a directory");
        assert!(matches!(err, PaperError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("sub"), "{err}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn decimation_keeps_extremes_and_ends() {
        let points: Vec<(f64, f64)> = (0..10_000)
            .map(|i| (f64::from(i), if i == 5_001 { 175.0 } else { 0.1 }))
            .collect();
        let out = decimate(&points, 0.0, 10_000.0, 100);
        assert!(out.len() <= 400, "{}", out.len());
        assert!(out.contains(&(5_001.0, 175.0)), "the spike survives");
        assert_eq!(out.first(), points.first());
        assert_eq!(out.last(), points.last());
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "x order");
        let short = &points[..10];
        assert_eq!(decimate(short, 0.0, 10.0, 100), short.to_vec());
    }

    #[test]
    fn probe_runs_split_at_losses() {
        let r = traditional();
        let samples = &r.raw.as_ref().expect("raw").probe;
        let (runs, gaps) = probe_runs(samples);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].len() + runs[1].len(), 10_000 - 722);
        assert_eq!(gaps, vec![(3.0, 3.722)]);
        assert!((runs[0][0].1 - 0.1).abs() < 1e-9, "RTT in ms");
    }

    #[test]
    fn cdf_counts_failures_and_keeps_the_tail() {
        let sorted: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let points = cdf_points(&sorted, 10_100, 1000);
        assert!(points.len() <= 1000 + 100 + 1, "{}", points.len());
        let last = points.last().copied().expect("points");
        assert_eq!(last.0, 10_000.0);
        assert!(
            (last.1 - 10_000.0 / 10_100.0).abs() < 1e-12,
            "failures keep it below 1"
        );
        assert!(points.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(points.iter().filter(|p| p.0 > 9_900.0).count(), 100);
        assert!(cdf_points(&[], 5, 10).is_empty());
    }
}
