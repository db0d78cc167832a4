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

/// Loads an example app of the repository, with `rules = "apps/..."` made absolute and every
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
    microboxes::App::parse(&out, rel).map_err(|e| anyhow::anyhow!("{e}"))
}
