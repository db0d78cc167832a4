//! # bench — Microboxes benchmarks
//!
//! Each benchmark is a binary that measures our code and a baseline **in the same process**,
//! alternating repetitions, and prints the ratio. Absolute numbers on these shared 2-core
//! machines are noisy; the ratios are what to compare across changes.
//!
//! * `cargo run -p bench --release --bin ring` — SPSC ring throughput (16-byte descriptors,
//!   bursts of 32, two pinned threads) against the `ringbuf` crate.
//! * `cargo run -p bench --release --bin pipeline` — packets/second of pcap → L2/3 µStack →
//!   pcap through the full runtime (shared memory, rings, executor threads) against a bare
//!   read-parse-write loop over the same file.
//! * `cargo run -p bench --release --bin chain` — packets/second of chains of 1..=5
//!   `stream_hash` NFs with per-NF stacks (mode a) against one shared stack (modes c, d);
//!   writes an SVG plot ([`line_plot_svg`]).
//! * `cargo run -p bench --release --bin idle_memory` — peak resident memory of `mbox run`
//!   over 10k/100k/1M idle TCP connections and the bytes per connection (slope).
//! * `cargo run -p bench --release --bin fig7c` / `fig8` — the paper's Figures 7c and 8
//!   (docs/benchmarks.md); categorical results are drawn as grouped bars, measured beside
//!   the paper's values ([`bar_chart_svg`], y ticks from [`nice_ticks`]).

/// Best (largest) value of a list of rates.
pub fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(0.0, f64::max)
}

/// Median of a list of rates.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// One line of a [`line_plot_svg`]: a legend label and its `(x, y)` points.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Writes an SVG line plot (one line with point markers per series, axis labels, legend) to
/// `path`, creating its parent directory. The y axis starts at 0.
pub fn line_plot_svg(
    path: &std::path::Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = pts.clone().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = pts.fold(0.0f64, |m, p| m.max(p.1)) * 1.1;
    let (x0, x1) = if x0 < x1 { (x0, x1) } else { (x0 - 1.0, x0 + 1.0) };
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting to {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((x0 - 0.2)..(x1 + 0.2), 0.0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc(x_label)
        .y_desc(y_label)
        .x_labels(((x1 - x0) as usize + 1).min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| match y1 {
            m if m >= 2e6 => format!("{:.1}M", y / 1e6),
            m if m >= 2e4 => format!("{:.0}k", y / 1e3),
            _ => format!("{y:.0}"),
        })
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        const COLORS: [RGBColor; 6] = [
            RGBColor(214, 39, 40),
            RGBColor(44, 160, 44),
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
        ];
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `--flows N --reps R` from the command line, with defaults.
pub fn flows_and_reps(default_flows: usize) -> anyhow::Result<(usize, usize)> {
    use anyhow::Context as _;
    let (mut flows, mut reps) = (default_flows, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--flows" => flows = args.next().context("--flows N")?.parse()?,
            "--reps" => reps = args.next().context("--reps R")?.parse()?,
            other => anyhow::bail!("unknown argument `{other}` (use --flows N, --reps R)"),
        }
    }
    Ok((flows, reps))
}

/// Loads an example app of the repository, with `rules = "apps/..."` made absolute, other
/// relative input paths taken relative to the app file (as `mbox run` does), and every
/// `output = "NAME"` moved into `dir` (a benchmark's temporary directory).
pub fn load_app(rel: &str, dir: &std::path::Path) -> anyhow::Result<microboxes::App> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(rel))?;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("rules = \"apps/") {
            out += &format!("rules = {:?}\n", root.join("apps").join(rest.trim_end_matches('"')).display().to_string());
        } else if let Some(rest) = t.strip_prefix("output = \"") {
            let name = rest.split('"').next().unwrap_or("out");
            out += &format!("output = {:?}\n", dir.join(name).display().to_string());
        } else {
            out += line;
            out.push('\n');
        }
    }
    // Other relative input paths (`rules = "../ids.rules"`) are relative to the app file.
    let app_dir = root.join(rel).parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| root.clone());
    microboxes::App::parse_in(&out, rel, &app_dir).map_err(|e| anyhow::anyhow!("{e}"))
}

/// One bar of a [`BarChart`] group: its value (`None`: no bar) and the text written above
/// it (e.g. `"2.6x"`; `None`: the value with two decimals).
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Height, in the y axis' unit.
    pub value: Option<f64>,
    /// Text above the bar.
    pub label: Option<String>,
}

impl Bar {
    /// A bar with the value written above it as `format`'s result.
    pub fn new(value: f64, label: impl Into<String>) -> Bar {
        Bar { value: Some(value), label: Some(label.into()) }
    }
}

/// One category of a [`BarChart`]: a label under the axis, one [`Bar`] per series (in the
/// chart's series order), and an optional second line under the label (e.g. the paper's
/// number).
#[derive(Clone, Debug, PartialEq)]
pub struct BarGroup {
    /// Category label, under the axis.
    pub label: String,
    /// A second, smaller line under the label.
    pub note: Option<String>,
    /// One bar per series.
    pub bars: Vec<Bar>,
}

/// A grouped bar chart: categories along x, one coloured bar per series in each, a y axis
/// from 0 with ticks at a step chosen from the range ([`nice_ticks`]), a legend.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    /// Title above the panel.
    pub title: String,
    /// Y axis label.
    pub y_label: String,
    /// Series names, in bar order (the legend).
    pub series: Vec<String>,
    /// The categories.
    pub groups: Vec<BarGroup>,
    /// A line of text under the panel (what differs from the paper, and why).
    pub footnote: Option<String>,
    /// Fill colours of the series (SVG colours, e.g. `"#9e9e9e"` for the paper's values);
    /// series beyond the list take the default palette.
    pub colors: Vec<String>,
}

/// Ticks `0, step, 2·step, …, top` for an axis from 0 covering `max` with about five steps:
/// the step is 1, 2, 2.5 or 5 times a power of ten, so labels printed with
/// [`tick_decimals`] decimals are all distinct. A `max` that is not positive or not finite
/// gives `[0, 1]`.
pub fn nice_ticks(max: f64) -> Vec<f64> {
    if !(max.is_finite() && max > 0.0) {
        return vec![0.0, 1.0];
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw * (1.0 - 1e-12)).unwrap_or(10.0 * mag);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// Decimals that print every multiple of `step` exactly (0 for 1, 2, 5, 10; 1 for 0.5,
/// 2.5; 2 for 0.25 ...), at most 9.
pub fn tick_decimals(step: f64) -> usize {
    (0..=9)
        .find(|d| {
            let x = step * 10f64.powi(*d as i32);
            (x - x.round()).abs() < 1e-6 * x.abs().max(1.0)
        })
        .unwrap_or(9)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Default colours of the series, in order.
const BAR_COLORS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

/// The SVG text of `charts`, one panel under the other. Every bar is a
/// `<rect class="bar" data-series=… data-group=… data-value=…>`, every y tick a
/// `<text class="tick">`, category labels `<text class="group">`, notes
/// `<text class="note">`, bar labels `<text class="value">`, legend entries
/// `<text class="legend">`.
pub fn bar_chart_svg_text(charts: &[BarChart]) -> String {
    use std::fmt::Write as _;
    const W: f64 = 900.0;
    const H: f64 = 400.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 60.0;
    const BOTTOM: f64 = 80.0;
    let mut s = String::new();
    let total_h = H * charts.len().max(1) as f64;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" viewBox="0 0 {W} {total_h}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect x="0" y="0" width="{W}" height="{total_h}" fill="white"/>"#);
    for (c, chart) in charts.iter().enumerate() {
        let y0 = c as f64 * H;
        let (px, py, pw, ph) = (LEFT, y0 + TOP, W - LEFT - RIGHT, H - TOP - BOTTOM);
        let _ = writeln!(
            s,
            r#"<text class="title" x="{}" y="{}" font-size="17" text-anchor="middle">{}</text>"#,
            W / 2.0,
            y0 + 24.0,
            xml_escape(&chart.title)
        );
        let max = chart.groups.iter().flat_map(|g| g.bars.iter().filter_map(|b| b.value)).fold(0.0f64, f64::max);
        // Room above the tallest bar for its label.
        let ticks = nice_ticks(max * 1.08);
        let top = *ticks.last().unwrap_or(&1.0);
        let step = ticks.get(1).copied().unwrap_or(1.0);
        let decimals = tick_decimals(step);
        let y_of = |v: f64| py + ph - (v.max(0.0) / top) * ph;
        for t in &ticks {
            let y = y_of(*t);
            let _ = writeln!(s, r##"<line x1="{px}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##, px + pw);
            let _ = writeln!(
                s,
                r#"<text class="tick" x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{t:.decimals$}</text>"#,
                px - 6.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            s,
            r##"<line x1="{px}" y1="{py}" x2="{px}" y2="{:.1}" stroke="black"/><line x1="{px}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"##,
            py + ph,
            py + ph,
            px + pw,
            py + ph
        );
        let _ = writeln!(
            s,
            r#"<text class="ylabel" x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
            px - 55.0,
            py + ph / 2.0,
            px - 55.0,
            py + ph / 2.0,
            xml_escape(&chart.y_label)
        );
        let n = chart.groups.len().max(1) as f64;
        let gw = pw / n;
        let ns = chart.series.len().max(1) as f64;
        let color = |k: usize| chart.colors.get(k).map_or(BAR_COLORS[k % BAR_COLORS.len()], String::as_str);
        let bw = gw * 0.8 / ns;
        for (g, group) in chart.groups.iter().enumerate() {
            let gx = px + g as f64 * gw + gw * 0.1;
            for (k, bar) in group.bars.iter().enumerate() {
                let Some(v) = bar.value.filter(|v| v.is_finite()) else { continue };
                let x = gx + k as f64 * bw;
                let (y, h) = (y_of(v), (v.max(0.0) / top) * ph);
                let name = chart.series.get(k).map(String::as_str).unwrap_or("");
                let _ = writeln!(
                    s,
                    r#"<rect class="bar" data-series="{}" data-group="{}" data-value="{v}" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"/>"#,
                    xml_escape(name),
                    xml_escape(&group.label),
                    bw * 0.92,
                    xml_escape(color(k))
                );
                let label = bar.label.clone().unwrap_or_else(|| format!("{v:.2}"));
                let _ = writeln!(
                    s,
                    r#"<text class="value" x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                    x + bw * 0.46,
                    y - 4.0,
                    xml_escape(&label)
                );
            }
            let cx = px + (g as f64 + 0.5) * gw;
            let _ = writeln!(
                s,
                r#"<text class="group" x="{cx:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
                py + ph + 18.0,
                xml_escape(&group.label)
            );
            if let Some(note) = &group.note {
                let _ = writeln!(
                    s,
                    r##"<text class="note" x="{cx:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
                    py + ph + 33.0,
                    xml_escape(note)
                );
            }
        }
        // Legend, top right.
        let mut lx = px + pw - 170.0 * ns;
        for (k, name) in chart.series.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text class="legend" x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
                y0 + 34.0,
                xml_escape(color(k)),
                lx + 16.0,
                y0 + 44.0,
                xml_escape(name)
            );
            lx += 170.0;
        }
        if let Some(f) = &chart.footnote {
            let _ = writeln!(
                s,
                r##"<text class="footnote" x="{px}" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
                y0 + H - 14.0,
                xml_escape(f)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Writes [`bar_chart_svg_text`] of `charts` to `path`, creating its parent directory,
/// atomically (a temporary file renamed into place).
pub fn bar_chart_svg(path: &std::path::Path, charts: &[BarChart]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, bar_chart_svg_text(charts)).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of attribute `name` in the tag `tag`.
    fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        tag[start..].split('"').next()
    }

    /// Every `<text class="CLASS" …>content</text>` content, in order.
    fn texts(svg: &str, class: &str) -> Vec<String> {
        let open = format!("<text class=\"{class}\"");
        svg.match_indices(&open)
            .filter_map(|(i, _)| {
                let rest = &svg[i..];
                let body = &rest[rest.find('>')? + 1..];
                Some(body[..body.find("</text>")?].to_string())
            })
            .collect()
    }

    fn bars(svg: &str) -> Vec<(String, String, f64, f64)> {
        svg.match_indices("<rect class=\"bar\"")
            .map(|(i, _)| {
                let tag = &svg[i..i + svg[i..].find("/>").unwrap()];
                let f = |n| attr(tag, n).unwrap().to_string();
                (f("data-series"), f("data-group"), f("data-value").parse().unwrap(), f("height").parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn ticks_are_distinct_and_cover_the_range() {
        for max in [0.3, 1.0, 1.39, 2.2, 2.6, 4.9, 7.0, 13.0, 99.0, 148.0, 2500.0, 0.004] {
            let t = nice_ticks(max);
            assert_eq!(t[0], 0.0);
            assert!(*t.last().unwrap() >= max, "{max}: {t:?}");
            assert!((3..=8).contains(&t.len()), "{max}: {t:?}");
            let d = tick_decimals(t[1]);
            let labels: Vec<String> = t.iter().map(|v| format!("{v:.d$}")).collect();
            let mut uniq = labels.clone();
            uniq.dedup();
            assert_eq!(uniq, labels, "{max}: repeated labels");
        }
        assert_eq!(nice_ticks(2.6), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(tick_decimals(2.5), 1);
        assert_eq!(nice_ticks(f64::NAN), vec![0.0, 1.0]);
    }

    #[test]
    fn grouped_bars_labels_and_ticks_are_in_the_svg() {
        let chart = BarChart {
            title: "Figure 7c <mix A>".into(),
            y_label: "throughput vs setup 1".into(),
            series: vec!["measured".into(), "paper".into()],
            groups: vec![
                BarGroup {
                    label: "1 both".into(),
                    note: None,
                    bars: vec![Bar::new(1.0, "1.00x"), Bar::new(1.0, "1.0x")],
                },
                BarGroup {
                    label: "4 dynamic".into(),
                    note: Some("paper ~5x".into()),
                    bars: vec![Bar::new(2.2, "2.20x"), Bar::new(5.0, "~5x")],
                },
                BarGroup {
                    label: "5 stream".into(),
                    note: None,
                    bars: vec![Bar { value: Some(1.7), label: None }, Bar { value: None, label: None }],
                },
            ],
            footnote: Some("2 cores".into()),
            colors: vec!["#111111".into()],
        };
        let svg = bar_chart_svg_text(&[chart.clone(), chart]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let b = bars(&svg);
        assert_eq!(b.len(), 10, "5 bars per panel, the missing one not drawn");
        assert_eq!((b[2].0.as_str(), b[2].1.as_str(), b[2].2), ("measured", "4 dynamic", 2.2));
        assert_eq!((b[3].0.as_str(), b[3].2), ("paper", 5.0));
        // The first series takes the given colour, the second the palette's second.
        let fills: Vec<&str> =
            svg.match_indices("<rect class=\"bar\"").map(|(i, _)| attr(&svg[i..], "fill").unwrap()).collect();
        assert_eq!(fills[..2], ["#111111", BAR_COLORS[1]]);
        // Heights are proportional to values.
        let ratio = b[3].3 / b[1].3;
        assert!((ratio - 5.0).abs() < 0.05, "{ratio}");
        assert_eq!(texts(&svg, "group")[..3], ["1 both", "4 dynamic", "5 stream"]);
        assert_eq!(texts(&svg, "value")[..5], ["1.00x", "1.0x", "2.20x", "~5x", "1.70"]);
        assert_eq!(texts(&svg, "note"), ["paper ~5x", "paper ~5x"]);
        assert_eq!(texts(&svg, "legend")[..2], ["measured", "paper"]);
        assert_eq!(texts(&svg, "title")[0], "Figure 7c &lt;mix A&gt;");
        let ticks = texts(&svg, "tick");
        assert_eq!(ticks[..ticks.len() / 2], ["0", "2", "4", "6"]);
    }
}
