//! Drawing a trace as a timeline: one row per core, one rectangle per span, as in the
//! paper's Figure 4.
//!
//! Both outputs are self-contained (no network, no external fonts or scripts):
//!
//! * [`render_svg`]: a static SVG of the full time range;
//! * [`render_html`]: the same SVG inside an HTML page with a little inline script: hover
//!   details, zoom by dragging over the timeline or by typing a range, and a reset button.
//!
//! Slices are coloured by packet (a fixed palette indexed by the packet number, so packet 1
//! always has the same colour) and labelled `actor #packet` when wide enough. Every slice
//! carries an SVG `<title>` with its details.
//!
//! **Selection and large traces**: [`RenderOptions::selection`] keeps only the slices of a
//! time window and/or a packet range (`mbox trace render --window/--packets`). When more
//! slices remain than [`RenderOptions::max_slices`], the page draws no single slices but
//! each actor's **utilisation**: one row per actor, the time range cut into buckets, each
//! bucket a bar as high as the fraction of it the actor was busy (hover for the numbers);
//! the header says so and how to see single slices. Either way the header says how many
//! slices were drawn (or aggregated) of how many recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

pub use crate::trace::export::{RenderSpan, Selection};

/// The colours of packets 1, 2, 3, ... (ColorBrewer Set3: light enough for black text).
pub const PALETTE: [&str; 12] = [
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd",
    "#ccebc5", "#ffed6f",
];

/// The default cap on drawn slices.
pub const MAX_SLICES: usize = 20_000;
/// Time buckets of the utilisation view.
pub const UTIL_BUCKETS: usize = 300;

/// Layout choices.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Total width in pixels.
    pub width: u32,
    /// Draw at most this many slices; with more selected, draw per-actor utilisation.
    pub max_slices: usize,
    /// Which slices to draw.
    pub selection: Selection,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { width: 1400, max_slices: MAX_SLICES, selection: Selection::default() }
    }
}

/// What a render drew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drawn {
    /// Single slices drawn (0 in the utilisation view).
    pub slices: usize,
    /// Slices the selection kept.
    pub selected: usize,
    /// Slices in the input.
    pub total: usize,
    /// True when the selected slices were drawn as per-actor utilisation.
    pub aggregated: bool,
}

/// The utilisation view: per actor, the busy fraction of each time bucket.
struct Util {
    /// (actor, core) per row, sorted by core then actor.
    rows: Vec<(String, u64)>,
    /// `busy[row][bucket]`, in [0, 1].
    busy: Vec<Vec<f64>>,
    /// Slices starting in each row and bucket (for the hover text).
    count: Vec<Vec<u64>>,
}

impl Util {
    fn new(slices: &[&RenderSpan], t0: f64, t1: f64) -> Util {
        let rows: Vec<(String, u64)> = slices
            .iter()
            .map(|s| (s.core, s.actor.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(c, a)| (a.to_string(), c))
            .collect();
        let index: BTreeMap<(&str, u64), usize> =
            rows.iter().enumerate().map(|(i, (a, c))| ((a.as_str(), *c), i)).collect();
        let bw = (t1 - t0) / UTIL_BUCKETS as f64;
        let mut busy = vec![vec![0.0; UTIL_BUCKETS]; rows.len()];
        let mut count = vec![vec![0u64; UTIL_BUCKETS]; rows.len()];
        let bucket = |t: f64| (((t - t0) / bw).floor().max(0.0) as usize).min(UTIL_BUCKETS - 1);
        for s in slices {
            let r = index[&(s.actor.as_str(), s.core)];
            let (a, b) = (s.start_us, s.start_us + s.dur_us);
            count[r][bucket(a)] += 1;
            let (first, last) = (bucket(a), bucket(b));
            for (k, v) in busy[r].iter_mut().enumerate().take(last + 1).skip(first) {
                let (ka, kb) = (t0 + k as f64 * bw, t0 + (k + 1) as f64 * bw);
                *v += (b.min(kb) - a.max(ka)).max(0.0);
            }
        }
        for row in &mut busy {
            for v in row.iter_mut() {
                *v = (*v / bw).clamp(0.0, 1.0);
            }
        }
        Util { rows, busy, count }
    }
}

/// The colour of a packet's slices.
pub fn packet_colour(seq: Option<u64>) -> &'static str {
    match seq {
        Some(s) if s > 0 => PALETTE[((s - 1) % PALETTE.len() as u64) as usize],
        _ => "#e0e0e0",
    }
}

// Layout, px.
const LEFT: f64 = 90.0;
const RIGHT: f64 = 40.0;
const AXIS_Y: f64 = 64.0;
const TOP: f64 = 72.0;
const ROW_H: f64 = 30.0;
const ROW_GAP: f64 = 4.0;
/// Approximate width of one label character at 11 px.
const CHAR_W: f64 = 6.5;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks.
pub fn tick_step(range: f64, target: f64) -> f64 {
    if !range.is_finite() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / target.max(1.0);
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let f = if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    f * p
}

fn fmt_us(t: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize }.min(6);
    format!("{t:.decimals$} µs")
}

/// What is drawn: the rows, the kept slices (or their utilisation) and the time range.
struct Layout<'a> {
    cores: Vec<u64>,
    slices: Vec<&'a RenderSpan>,
    /// Set instead of `slices` when too many were selected.
    util: Option<Util>,
    selection: Selection,
    selected: usize,
    max_slices: usize,
    total: usize,
    t0: f64,
    t1: f64,
    width: f64,
}

impl<'a> Layout<'a> {
    fn new(spans: &'a [RenderSpan], opts: &RenderOptions) -> Layout<'a> {
        let sel = opts.selection;
        let mut slices: Vec<&RenderSpan> = spans
            .iter()
            .filter(|s| s.start_us.is_finite() && s.dur_us.is_finite() && sel.keeps(s.start_us, s.seq))
            .collect();
        slices.sort_by(|a, b| a.start_us.total_cmp(&b.start_us));
        let selected = slices.len();
        // Every core of the trace gets a row, unless a selection narrows it.
        let all: &[RenderSpan] = if sel.is_all() { spans } else { &[] };
        let cores: Vec<u64> =
            all.iter().chain(slices.iter().copied()).map(|s| s.core).collect::<BTreeSet<_>>().into_iter().collect();
        let t0 = slices.iter().map(|s| s.start_us).fold(f64::INFINITY, f64::min);
        let t1 = slices.iter().map(|s| s.start_us + s.dur_us).fold(f64::NEG_INFINITY, f64::max);
        let (t0, t1) = if t0.is_finite() && t1 > t0 {
            (t0, t1)
        } else if t0.is_finite() {
            (t0, t0 + 1.0)
        } else {
            (0.0, 1.0)
        };
        let util = (selected > opts.max_slices).then(|| Util::new(&slices, t0, t1));
        if util.is_some() {
            slices.clear();
        }
        Layout {
            cores,
            slices,
            util,
            selection: sel,
            selected,
            max_slices: opts.max_slices,
            total: spans.len(),
            t0,
            t1,
            width: f64::from(opts.width.max(300)),
        }
    }

    fn drawn(&self) -> Drawn {
        Drawn { slices: self.slices.len(), selected: self.selected, total: self.total, aggregated: self.util.is_some() }
    }

    /// Rows: cores, or (utilisation) actors.
    fn row_count(&self) -> usize {
        self.util.as_ref().map_or(self.cores.len(), |u| u.rows.len())
    }

    fn row_top(&self, i: usize) -> f64 {
        TOP + i as f64 * (ROW_H + ROW_GAP)
    }

    fn plot_w(&self) -> f64 {
        self.width - LEFT - RIGHT
    }

    fn height(&self) -> f64 {
        TOP + self.row_count().max(1) as f64 * (ROW_H + ROW_GAP) + 24.0
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t - self.t0) / (self.t1 - self.t0) * self.plot_w()
    }

    fn row_y(&self, core: u64) -> f64 {
        self.row_top(self.cores.iter().position(|&c| c == core).unwrap_or(0))
    }

    fn summary(&self) -> String {
        let sel = if self.selection.is_all() {
            String::new()
        } else {
            format!(" ({} selected: {})", self.selected, self.selection.describe())
        };
        let range = format!("{:.3} µs to {:.3} µs", self.t0, self.t1);
        match &self.util {
            None => format!(
                "{} cores · drew {} of {} slices{sel} · {range}",
                self.cores.len(),
                self.slices.len(),
                self.total
            ),
            Some(u) => format!(
                "{} actors · utilisation view: {} slices selected of {}{sel}, more than the {} drawn one by one, \
                 so each row shows an actor's busy fraction in {} buckets of {:.3} µs · choose a window \
                 (--window FROM..TO, ms) or packets (--packets FROM..TO) to see single slices · {range}",
                u.rows.len(),
                self.selected,
                self.total,
                self.max_slices,
                UTIL_BUCKETS,
                (self.t1 - self.t0) / UTIL_BUCKETS as f64
            ),
        }
    }

    /// The SVG. `interactive` adds the data attributes the HTML page's script uses.
    fn svg(&self, title: &str, interactive: bool) -> String {
        let (w, h, pw) = (self.width, self.height(), self.plot_w());
        let rows_h = self.row_count().max(1) as f64 * (ROW_H + ROW_GAP);
        let mut o = String::with_capacity(256 + self.slices.len() * 220);
        let _ = write!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11" data-t0="{t0}" data-t1="{t1}" data-left="{LEFT}" data-plotw="{pw}" data-top="{TOP}" data-rowsh="{rows_h}">"#,
            t0 = self.t0,
            t1 = self.t1
        );
        let _ = write!(
            o,
            r##"<defs><clipPath id="plot"><rect x="{LEFT}" y="{y}" width="{pw}" height="{hh}"/></clipPath></defs><rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##,
            y = AXIS_Y - 20.0,
            hh = rows_h + 40.0
        );
        if !interactive {
            let _ = write!(o, r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#, esc(title));
            let _ = write!(o, r##"<text x="10" y="38" fill="#555">{}</text>"##, esc(&self.summary()));
        }
        self.rows(&mut o);
        // Axis (the HTML page's script redraws it on zoom).
        o.push_str(r#"<g id="axis">"#);
        self.axis(&mut o, rows_h);
        o.push_str("</g>");
        // Slices.
        o.push_str(r#"<g id="slices" clip-path="url(#plot)">"#);
        self.util_bars(&mut o, interactive);
        let scale = pw / (self.t1 - self.t0);
        for s in &self.slices {
            let x = self.x(s.start_us);
            let sw = (s.dur_us * scale).max(0.5);
            let y = self.row_y(s.core) + 3.0;
            let label = s.label();
            let _ = write!(
                o,
                r#"<rect class="s {k}" x="{x:.2}" y="{y}" width="{sw:.2}" height="{hh}" fill="{fill}""#,
                k = esc(&s.kind),
                hh = ROW_H - 6.0,
                fill = packet_colour(s.seq)
            );
            if interactive {
                let _ = write!(o, r#" data-s="{:.3}" data-d="{:.3}" data-l="{}""#, s.start_us, s.dur_us, esc(&label));
            }
            let _ = write!(o, "><title>{}</title></rect>", esc(&details(s)));
        }
        o.push_str("</g>");
        // Labels inside slices wide enough for them.
        o.push_str(r#"<g id="labels" clip-path="url(#plot)" pointer-events="none">"#);
        for s in &self.slices {
            let label = s.label();
            let sw = s.dur_us * scale;
            if sw >= label.chars().count() as f64 * CHAR_W + 4.0 {
                let _ = write!(
                    o,
                    r#"<text x="{:.2}" y="{:.1}">{}</text>"#,
                    self.x(s.start_us) + 2.0,
                    self.row_y(s.core) + ROW_H / 2.0 + 4.0,
                    esc(&label)
                );
            }
        }
        o.push_str("</g>");
        if self.slices.is_empty() && self.util.is_none() {
            let _ = write!(
                o,
                r##"<text x="{}" y="{}" fill="#888">no spans recorded</text>"##,
                LEFT + 10.0,
                TOP + ROW_H / 2.0 + 4.0
            );
        }
        o.push_str("</svg>");
        o
    }

    /// The row backgrounds and names: `core N`, or (utilisation) `actor · core N`.
    fn rows(&self, o: &mut String) {
        let pw = self.plot_w();
        o.push_str(r#"<g id="rows">"#);
        let names: Vec<(String, String)> = match &self.util {
            None => self.cores.iter().map(|c| (format!("core {c}"), format!(r#"data-core="{c}""#))).collect(),
            Some(u) => u
                .rows
                .iter()
                .map(|(a, c)| (format!("{a} · core {c}"), format!(r#"data-core="{c}" data-actor="{}""#, esc(a))))
                .collect(),
        };
        for (i, (name, data)) in names.iter().enumerate() {
            let y = self.row_top(i);
            let fill = if i % 2 == 0 { "#f4f4f4" } else { "#ebebeb" };
            let _ = write!(
                o,
                r#"<g class="row" {data}><rect x="{LEFT}" y="{y}" width="{pw}" height="{ROW_H}" fill="{fill}"/><text x="10" y="{ty}" font-size="12" font-weight="bold">{}</text></g>"#,
                esc(name),
                ty = y + ROW_H / 2.0 + 4.0
            );
        }
        o.push_str("</g>");
    }

    /// The utilisation view's bars (class `s util`), one per actor and busy bucket.
    fn util_bars(&self, o: &mut String, interactive: bool) {
        let Some(u) = &self.util else { return };
        let bw = (self.t1 - self.t0) / UTIL_BUCKETS as f64;
        let scale = self.plot_w() / (self.t1 - self.t0);
        for (r, (actor, core)) in u.rows.iter().enumerate() {
            for (k, &f) in u.busy[r].iter().enumerate() {
                if f <= 0.0 && u.count[r][k] == 0 {
                    continue;
                }
                let t = self.t0 + k as f64 * bw;
                let h = ((ROW_H - 6.0) * f).max(1.0);
                let y = self.row_top(r) + ROW_H - 3.0 - h;
                let _ = write!(
                    o,
                    r##"<rect class="s util" x="{:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="#4a78c2""##,
                    self.x(t),
                    bw * scale
                );
                if interactive {
                    let _ = write!(o, r#" data-s="{t:.3}" data-d="{bw:.3}" data-l="""#);
                }
                let _ = write!(
                    o,
                    "><title>{} · core {core}\n{:.3} µs to {:.3} µs\nbusy {:.1} % · {} slices start here</title></rect>",
                    esc(actor),
                    t,
                    t + bw,
                    f * 100.0,
                    u.count[r][k]
                );
            }
        }
    }

    fn axis(&self, o: &mut String, rows_h: f64) {
        let step = tick_step(self.t1 - self.t0, 10.0);
        let first = (self.t0 / step).ceil() as i64;
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{AXIS_Y}" x2="{}" y2="{AXIS_Y}" stroke="#333"/>"##,
            LEFT + self.plot_w()
        );
        for k in 0..=200 {
            let t = (first + k) as f64 * step;
            if t > self.t1 + step * 1e-9 {
                break;
            }
            let x = self.x(t);
            let _ = write!(
                o,
                r##"<line x1="{x:.2}" y1="{y0}" x2="{x:.2}" y2="{y1}" stroke="#ccc"/><line x1="{x:.2}" y1="{y2}" x2="{x:.2}" y2="{AXIS_Y}" stroke="#333"/><text class="tick" x="{x:.2}" y="{ty}" text-anchor="middle">{}</text>"##,
                esc(&fmt_us(t, step)),
                y0 = TOP,
                y1 = TOP + rows_h,
                y2 = AXIS_Y - 5.0,
                ty = AXIS_Y - 8.0,
            );
        }
    }
}

/// A slice's hover text.
fn details(s: &RenderSpan) -> String {
    let mut t = format!("{} · {} · core {}", s.label(), s.kind, s.core);
    if !s.actor_kind.is_empty() {
        let _ = write!(t, "\nactor {} ({})", s.actor, s.actor_kind);
    }
    if !s.event.is_empty() {
        let _ = write!(t, "\nevent {}", s.event);
        if !s.publisher.is_empty() {
            let _ = write!(t, " from {}", s.publisher);
        }
    }
    if let Some(f) = s.flow {
        let _ = write!(t, "\nflow {f:#x}");
    }
    let _ = write!(t, "\nstart {:.3} µs, duration {:.3} µs", s.start_us, s.dur_us);
    t
}

/// A static SVG timeline of the full range.
pub fn render_svg(spans: &[RenderSpan], title: &str) -> String {
    render_svg_with(spans, title, &RenderOptions::default())
}

/// [`render_svg`] with layout options.
pub fn render_svg_with(spans: &[RenderSpan], title: &str, opts: &RenderOptions) -> String {
    svg_doc(&Layout::new(spans, opts), title)
}

fn svg_doc(layout: &Layout, title: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n", layout.svg(title, false))
}

/// A self-contained HTML page: the timeline with hover details and zoom.
pub fn render_html(spans: &[RenderSpan], title: &str) -> String {
    render_html_with(spans, title, &RenderOptions::default())
}

/// [`render_html`] with layout options.
pub fn render_html_with(spans: &[RenderSpan], title: &str, opts: &RenderOptions) -> String {
    html_page(&Layout::new(spans, opts), title)
}

fn html_page(layout: &Layout, title: &str) -> String {
    let svg = layout.svg(title, true);
    let mut o = String::with_capacity(svg.len() + 8192);
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 12px; color: #222; }}
h1 {{ font-size: 18px; margin: 0 0 4px 0; }}
#info {{ color: #555; font-size: 13px; margin-bottom: 8px; }}
#controls {{ font-size: 13px; margin-bottom: 6px; }}
#controls input {{ width: 110px; }}
#wrap {{ position: relative; user-select: none; }}
#timeline {{ width: 100%; height: auto; }}
#tip {{ position: fixed; display: none; background: #fffff0; border: 1px solid #999; padding: 4px 6px;
        font-size: 12px; white-space: pre; pointer-events: none; box-shadow: 2px 2px 4px rgba(0,0,0,.2); }}
rect.s:hover {{ stroke: #000; stroke-width: 1; }}
</style></head>
<body>
<h1>{t}</h1>
<div id="info">{info} · {legend}</div>
<div id="controls">from <input id="t0" type="number" step="any"> to <input id="t1" type="number" step="any"> µs
<button id="zoom">Zoom</button> <button id="reset">Reset</button> <span style="color:#777">or drag across the timeline to zoom (or open page.html#FROM-TO)</span></div>
<div id="wrap">{svg}</div>
<div id="tip"></div>
<script>
{js}
</script>
</body></html>
"#,
        t = esc(title),
        info = esc(&layout.summary()),
        legend = if layout.util.is_some() {
            "bar height = busy fraction · hover a bar for details"
        } else {
            "colour = packet · hover a slice for details"
        },
        js = SCRIPT,
    );
    o
}

/// The page's script: rescales slices, labels and axis to a time range.
const SCRIPT: &str = r###"(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("timeline");
  if (!svg) { return; }
  var L = +svg.dataset.left, PW = +svg.dataset.plotw, TOP = +svg.dataset.top, RH = +svg.dataset.rowsh;
  var FULL0 = +svg.dataset.t0, FULL1 = +svg.dataset.t1;
  var AXIS_Y = TOP - 8, CHAR_W = 6.5, MAX_LABELS = 4000;
  var rects = Array.prototype.slice.call(svg.querySelectorAll("#slices rect"));
  var S = rects.map(function (r) { return +r.dataset.s; });
  var D = rects.map(function (r) { return +r.dataset.d; });
  var Y = rects.map(function (r) { return +r.getAttribute("y"); });
  var LBL = rects.map(function (r) { return r.dataset.l || ""; });
  var labels = document.getElementById("labels"), axis = document.getElementById("axis");
  var in0 = document.getElementById("t0"), in1 = document.getElementById("t1");
  var cur0 = FULL0, cur1 = FULL1;

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function step(range) {
    if (!(range > 0)) { return 1; }
    var raw = range / 10, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
  }
  function fmt(t, st) {
    var d = st >= 1 ? 0 : Math.min(6, -Math.floor(Math.log10(st)));
    return t.toFixed(d) + " \u00b5s";
  }
  function rescale(t0, t1) {
    if (!(t1 > t0)) { return; }
    cur0 = t0; cur1 = t1;
    in0.value = +t0.toFixed(3); in1.value = +t1.toFixed(3);
    var k = PW / (t1 - t0), n = 0;
    while (labels.firstChild) { labels.removeChild(labels.firstChild); }
    for (var i = 0; i < rects.length; i++) {
      var x = L + (S[i] - t0) * k, w = Math.max(D[i] * k, 0.5);
      rects[i].setAttribute("x", x.toFixed(2));
      rects[i].setAttribute("width", w.toFixed(2));
      var vx = Math.max(x, L), vw = Math.min(x + w, L + PW) - vx;
      if (n < MAX_LABELS && vw >= LBL[i].length * CHAR_W + 4) {
        labels.appendChild(el("text", { x: (vx + 2).toFixed(2), y: (Y[i] + 12 + 4).toFixed(1) }, LBL[i]));
        n++;
      }
    }
    while (axis.firstChild) { axis.removeChild(axis.firstChild); }
    var st = step(t1 - t0);
    axis.appendChild(el("line", { x1: L, y1: AXIS_Y, x2: L + PW, y2: AXIS_Y, stroke: "#333" }));
    for (var j = 0, t = Math.ceil(t0 / st) * st; j <= 200 && t <= t1 + st * 1e-9; j++, t = (Math.ceil(t0 / st) + j) * st) {
      var tx = L + (t - t0) * k;
      axis.appendChild(el("line", { x1: tx, y1: TOP, x2: tx, y2: TOP + RH, stroke: "#ccc" }));
      axis.appendChild(el("line", { x1: tx, y1: AXIS_Y - 5, x2: tx, y2: AXIS_Y, stroke: "#333" }));
      axis.appendChild(el("text", { "class": "tick", x: tx, y: AXIS_Y - 8, "text-anchor": "middle" }, fmt(t, st)));
    }
  }
  function toT(clientX) {
    var r = svg.getBoundingClientRect();
    var x = (clientX - r.left) * (svg.viewBox.baseVal.width / r.width);
    return cur0 + (Math.min(Math.max(x, L), L + PW) - L) / PW * (cur1 - cur0);
  }
  function toX(t) { return L + (t - cur0) / (cur1 - cur0) * PW; }

  // Drag to select a range.
  var sel = el("rect", { y: TOP - 30, height: RH + 30, fill: "rgba(30,100,220,0.15)", stroke: "#1e64dc", visibility: "hidden" });
  svg.appendChild(sel);
  var dragFrom = null;
  svg.addEventListener("mousedown", function (e) { dragFrom = toT(e.clientX); e.preventDefault(); });
  window.addEventListener("mousemove", function (e) {
    if (dragFrom === null) { return; }
    var a = toX(dragFrom), b = toX(toT(e.clientX));
    sel.setAttribute("x", Math.min(a, b)); sel.setAttribute("width", Math.abs(b - a));
    sel.setAttribute("visibility", "visible");
  });
  window.addEventListener("mouseup", function (e) {
    if (dragFrom === null) { return; }
    var a = dragFrom, b = toT(e.clientX);
    dragFrom = null; sel.setAttribute("visibility", "hidden");
    if (Math.abs(toX(b) - toX(a)) > 3) { rescale(Math.min(a, b), Math.max(a, b)); }
  });
  document.getElementById("zoom").addEventListener("click", function () { rescale(+in0.value, +in1.value); });
  document.getElementById("reset").addEventListener("click", function () { rescale(FULL0, FULL1); });

  // Tooltip.
  var tip = document.getElementById("tip");
  svg.addEventListener("mousemove", function (e) {
    var t = e.target;
    if (dragFrom === null && t.tagName === "rect" && t.classList.contains("s")) {
      var title = t.querySelector("title");
      tip.textContent = title ? title.textContent : "";
      tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
      tip.style.display = "block";
    } else {
      tip.style.display = "none";
    }
  });
  svg.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  // `page.html#FROM-TO` opens zoomed on FROM..TO µs.
  var m = /^#([0-9.eE+]+)-([0-9.eE+]+)$/.exec(window.location.hash);
  if (m && +m[2] > +m[1]) { rescale(+m[1], +m[2]); } else { rescale(FULL0, FULL1); }
  svg.setAttribute("data-ready", "1");
})();"###;

/// The output formats of [`render_to_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A page with zoom and hover.
    Html,
    /// A static image.
    Svg,
}

impl Format {
    /// The format named by a path's extension (`.html`/`.htm` or `.svg`).
    pub fn from_path(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("html" | "htm") => Ok(Format::Html),
            Some("svg") => Ok(Format::Svg),
            _ => Err(format!("cannot tell the output format of `{}`: name it *.html or *.svg", path.display())),
        }
    }
}

/// Renders `spans` to `out` in the format its extension names.
pub fn render_to_file(spans: &[RenderSpan], title: &str, out: &Path, opts: &RenderOptions) -> Result<Drawn, String> {
    let format = Format::from_path(out)?;
    let layout = Layout::new(spans, opts);
    let text = match format {
        Format::Html => html_page(&layout, title),
        Format::Svg => svg_doc(&layout, title),
    };
    std::fs::write(out, text).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(layout.drawn())
}
