//! `loss.png`: the losses against the step, in two panels: cross-entropy and total on top,
//! the alignment loss (a much smaller number) below; training steps as thin lines (averaged
//! into at most [`MAX_POINTS`] points), evaluations as thick ones.
//!
//! Text goes through plotters' `ab_glyph` (pure Rust) with a TrueType font read at run time
//! from the first of [`FONT_CANDIDATES`] that exists (`LAVENDER_PLOT_FONT` first); Debian's
//! `fonts-dejavu-core` provides the first. Without any font the plot is drawn without text.

use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::{
    coord::Shift,
    prelude::*,
    style::{FontStyle, register_font},
};

use super::run_dir::{MetricsRecord, Split};

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 800;
/// Training series longer than this are averaged in equal buckets.
pub const MAX_POINTS: usize = 2000;

/// Fonts tried in order (after `LAVENDER_PLOT_FONT`): Debian/Ubuntu, Fedora/Arch, macOS.
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a font for plotters once per process; whether one was found.
pub(crate) fn font_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let from_env = std::env::var("LAVENDER_PLOT_FONT").ok();
        from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied())
            .filter_map(|path| std::fs::read(path).ok())
            // plotters keeps `&'static` font data; one font per process.
            .any(|bytes| {
                register_font(
                    "sans-serif",
                    FontStyle::Normal,
                    Box::leak(bytes.into_boxed_slice()),
                )
                .is_ok()
            })
    })
}

/// The plot as PNG bytes, and whether it has text.
pub fn loss_png(records: &[MetricsRecord]) -> anyhow::Result<(Vec<u8>, bool)> {
    let with_text = font_available();
    let pixels = render(records, with_text)?;
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).expect("WIDTH x HEIGHT x 3");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("cannot encode loss.png")?;
    Ok((png, with_text))
}

/// One named line.
struct Series {
    label: String,
    color: RGBColor,
    thick: bool,
    points: Vec<(f64, f64)>,
}

/// Averages `points` into at most `MAX_POINTS` buckets of consecutive points.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let per_bucket = points.len().div_ceil(MAX_POINTS);
    points
        .chunks(per_bucket)
        .map(|chunk| {
            let n = chunk.len() as f64;
            let (x, y) = chunk
                .iter()
                .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
            (x / n, y / n)
        })
        .collect()
}

fn series(
    records: &[MetricsRecord],
    split: Split,
    name: &str,
    color: RGBColor,
    value: fn(&MetricsRecord) -> f64,
) -> Series {
    let points: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.split == split)
        .map(|r| (r.step as f64, value(r)))
        .filter(|(_, y)| y.is_finite())
        .collect();
    let thick = split == Split::Eval;
    Series {
        label: format!("{name} ({})", if thick { "eval" } else { "train" }),
        color,
        thick,
        points: if thick { points } else { thin(points) },
    }
}

/// RGB pixels of the plot.
pub fn render(records: &[MetricsRecord], with_text: bool) -> anyhow::Result<Vec<u8>> {
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
        let (top, bottom) = root.split_vertically(HEIGHT * 3 / 5);
        let ce_total = [
            series(records, Split::Train, "total", RGBColor(40, 40, 40), |r| {
                r.total
            }),
            series(
                records,
                Split::Train,
                "cross-entropy",
                RGBColor(31, 119, 180),
                |r| r.ce,
            ),
            series(
                records,
                Split::Eval,
                "total",
                RGBColor(120, 120, 120),
                |r| r.total,
            ),
            series(
                records,
                Split::Eval,
                "cross-entropy",
                RGBColor(23, 190, 207),
                |r| r.ce,
            ),
        ];
        let align = [
            series(
                records,
                Split::Train,
                "alignment",
                RGBColor(214, 39, 40),
                |r| r.align,
            ),
            series(
                records,
                Split::Eval,
                "alignment",
                RGBColor(255, 127, 14),
                |r| r.align,
            ),
        ];
        panel(&top, "loss", &ce_total, with_text)?;
        panel(&bottom, "alignment loss", &align, with_text)?;
        root.present()
            .map_err(|e| anyhow!("cannot draw the plot: {e}"))?;
    }
    Ok(pixels)
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    lines: &[Series],
    with_text: bool,
) -> anyhow::Result<()> {
    let error = |e: &dyn std::fmt::Display| anyhow!("cannot draw the plot ({title}): {e}");
    let all = || lines.iter().flat_map(|s| s.points.iter());
    let x_max = all().map(|p| p.0).fold(1.0, f64::max);
    let x_min = all().map(|p| p.0).fold(x_max, f64::min).min(0.0);
    let y_max = all().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = all().map(|p| p.1).fold(f64::MAX, f64::min).min(0.0);
    let y_max = if y_max > y_min { y_max * 1.05 } else { 1.0 };
    let y_min = if y_min < y_max { y_min } else { 0.0 };

    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if with_text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(36)
            .y_label_area_size(64);
    }
    let mut chart = builder
        .build_cartesian_2d(x_min..x_max, y_min..y_max)
        .map_err(|e| error(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if with_text {
        mesh.x_desc("step")
            .label_style(("sans-serif", 14))
            .y_label_formatter(&|y| format!("{y:.3}"));
    }
    mesh.draw().map_err(|e| error(&e))?;

    for line in lines.iter().filter(|s| !s.points.is_empty()) {
        let style = line.color.stroke_width(if line.thick { 3 } else { 1 });
        let drawn = chart
            .draw_series(LineSeries::new(line.points.iter().copied(), style))
            .map_err(|e| error(&e))?;
        if with_text {
            let color = line.color;
            drawn.label(line.label.as_str()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    if with_text && lines.iter().any(|s| !s.points.is_empty()) {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| error(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64, split: Split) -> MetricsRecord {
        MetricsRecord {
            step,
            epoch: 0,
            split,
            ce: 2.0 - step as f64 * 0.01,
            align: 0.05,
            total: 2.5 - step as f64 * 0.01,
            matched_words: 3.0,
            lr: 1e-4,
            samples_per_s: 1.0,
        }
    }

    fn drawn_pixels(pixels: &[u8]) -> usize {
        pixels.chunks(3).filter(|p| *p != [255, 255, 255]).count()
    }

    /// No text API may be reached without a font: with none registered in this process (run
    /// alone, `cargo test -p lavender without_a_font`) plotters would fail on the first text.
    #[test]
    fn without_a_font_the_lines_are_still_drawn() {
        let records: Vec<MetricsRecord> = (0..100)
            .map(|s| record(s, Split::Train))
            .chain((1..5).map(|s| record(s * 20, Split::Eval)))
            .collect();
        let pixels = render(&records, false).unwrap();
        assert!(drawn_pixels(&pixels) > 2000);
        // An empty log and a single point draw too.
        render(&[], false).unwrap();
        render(&records[..1], false).unwrap();
    }

    #[test]
    fn long_series_are_averaged_into_buckets() {
        let points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        let thinned = thin(points);
        assert!(thinned.len() <= MAX_POINTS);
        assert_eq!(thinned[0], (2.0, 1.0));
    }

    #[test]
    fn with_a_font_there_is_text_and_it_renders() {
        if !font_available() {
            eprintln!("no font on this machine: text rendering not checked");
            return;
        }
        let records: Vec<MetricsRecord> = (0..10).map(|s| record(s, Split::Train)).collect();
        let with = render(&records, true).unwrap();
        let without = render(&records, false).unwrap();
        // The top panel's title ("loss", centred) is the only dark ink in that band.
        let title_ink = |pixels: &[u8]| {
            (5..30)
                .flat_map(|y| (560..640).map(move |x| (y * WIDTH + x) as usize * 3))
                .filter(|&i| pixels[i..i + 3].iter().all(|&c| c < 100))
                .count()
        };
        assert!(title_ink(&with) > 20, "no title drawn");
        assert_eq!(title_ink(&without), 0);
    }
}
