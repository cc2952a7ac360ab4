//! Charts as SVG text: per-turn waterfalls and per-span distributions. The HTML page inlines
//! them; `--svg` writes them; `--png` rasterises them.

use std::fmt::Write;

use hark_core::trace::span;
use hark_core::TurnRecord;

use crate::stats::quantile;

pub const COLORS: [(&str, &str); 6] = [
    (span::ENDPOINT, "#8c8c8c"),
    (span::ASR_FINAL, "#4e79a7"),
    (span::LLM_TTFT, "#f28e2b"),
    (span::FIRST_CLAUSE, "#e15759"),
    (span::TTS_FIRST_AUDIO, "#59a14f"),
    (span::OUTPUT, "#b07aa1"),
];
const USER: &str = "#9ecae9";
const HARK: &str = "#a0d6a0";
const FONT: &str = "font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\"";

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn color(name: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("#333", |(_, c)| c)
}

/// A tick step giving 4-10 ticks over `range` ms.
fn tick_step(range: f64) -> f64 {
    for step in [
        50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 30_000.0, 60_000.0,
    ] {
        if range / step <= 10.0 {
            return step;
        }
    }
    120_000.0
}

const LABEL_W: f64 = 130.0;
const ROW_H: f64 = 22.0;

/// One turn: your speech, each span as a bar on one time axis starting at the end of your speech,
/// and the start of Hark's reply. Times are ms on the input's clock.
pub fn waterfall(t: &TurnRecord, width: f64) -> String {
    let reply_shown = t.reply_duration_ms.clamp(0.0, 1000.0);
    let start = t.speech_start_ms;
    let end = (t.reply_start_ms + reply_shown)
        .max(t.speech_end_ms + t.spans.total())
        .max(start + 1.0);
    let plot_w = width - LABEL_W - 20.0;
    let x = |ms: f64| LABEL_W + (ms - start) / (end - start) * plot_w;
    let rows = 2 + span::ALL.len();
    let height = 40.0 + rows as f64 * ROW_H + 24.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" data-turn="{}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT}>"#,
        t.turn
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} #{}: V2V {:.0} ms: “{}”",
        t.input,
        t.turn,
        t.v2v_ms,
        crate::table::ellipsize(&t.transcript, 60)
    );
    let _ = write!(
        s,
        r#"<text x="8" y="18" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    let top = 30.0;
    // Grid and axis.
    let step = tick_step(end - start);
    let mut tick = (start / step).ceil() * step;
    let axis_y = top + rows as f64 * ROW_H + 4.0;
    while tick <= end {
        let tx = x(tick);
        let _ = write!(
            s,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{axis_y}" stroke="#e6e6e6"/>"##
        );
        let _ = write!(
            s,
            r##"<text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.1} s</text>"##,
            axis_y + 14.0,
            tick / 1000.0
        );
        tick += step;
    }
    let mut row = 0usize;
    let mut bar = |s: &mut String,
                   label: &str,
                   class: &str,
                   fill: &str,
                   from: f64,
                   to: f64,
                   note: &str| {
        let y = top + row as f64 * ROW_H;
        let (x0, x1) = (x(from), x(to.max(from)));
        let _ = write!(
            s,
            r##"<text x="8" y="{:.1}" fill="#222">{}</text>"##,
            y + 15.0,
            escape(label)
        );
        let _ = write!(
            s,
            r#"<rect class="{class}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"><title>{}</title></rect>"#,
            y + 3.0,
            (x1 - x0).max(1.0),
            ROW_H - 6.0,
            escape(note)
        );
        // Notes go after the bar, or before it when the bar reaches the right edge.
        let (note_x, anchor) = if x1 + 8.0 * note.len() as f64 > width {
            (x0 - 4.0, "end")
        } else {
            (x1 + 4.0, "start")
        };
        let _ = write!(
            s,
            r##"<text x="{note_x:.1}" y="{:.1}" text-anchor="{anchor}" fill="#222">{}</text>"##,
            y + 15.0,
            escape(note)
        );
        row += 1;
    };
    bar(
        &mut s,
        "you speak",
        "band band-user",
        USER,
        t.speech_start_ms,
        t.speech_end_ms,
        &format!(
            "{:.2}–{:.2} s",
            t.speech_start_ms / 1000.0,
            t.speech_end_ms / 1000.0
        ),
    );
    let mut at = t.speech_end_ms;
    for (name, ms) in t.spans.named() {
        bar(
            &mut s,
            name,
            &format!("span span-{name}"),
            color(name),
            at,
            at + ms,
            &format!("{ms:.0} ms"),
        );
        at += ms;
    }
    let reply_note = if t.reply_duration_ms > reply_shown {
        format!(
            "reply starts at {:.2} s (plays {:.1} s)",
            t.reply_start_ms / 1000.0,
            t.reply_duration_ms / 1000.0
        )
    } else {
        format!("reply starts at {:.2} s", t.reply_start_ms / 1000.0)
    };
    bar(
        &mut s,
        "hark speaks",
        "band band-reply",
        HARK,
        t.reply_start_ms,
        t.reply_start_ms + reply_shown,
        &reply_note,
    );
    s.push_str("</svg>");
    s
}

/// Every turn's value of V2V and of each span as a dot on one ms axis, with p50 and p90 marks.
pub fn distributions(turns: &[TurnRecord], width: f64) -> String {
    let rows: Vec<(&str, Vec<f64>)> = std::iter::once((
        "v2v",
        turns
            .iter()
            .filter(|t| t.error.is_none())
            .map(|t| t.v2v_ms)
            .collect(),
    ))
    .chain(span::ALL.iter().enumerate().map(|(i, name)| {
        (
            *name,
            turns
                .iter()
                .filter(|t| t.error.is_none())
                .map(|t| t.spans.named()[i].1)
                .collect::<Vec<f64>>(),
        )
    }))
    .collect();
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0f64, f64::max);
    let plot_w = width - LABEL_W - 90.0;
    let x = |ms: f64| LABEL_W + ms / max * plot_w;
    let top = 30.0;
    let height = top + rows.len() as f64 * ROW_H * 1.4 + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="distribution" width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT}>"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="8" y="18" font-weight="bold">Distributions over {} turn(s): each dot a turn; | p50, ¦ p90</text>"#,
        turns.len()
    );
    let axis_y = top + rows.len() as f64 * ROW_H * 1.4;
    let step = tick_step(max);
    let mut tick = 0.0;
    while tick <= max {
        let tx = x(tick);
        let _ = write!(
            s,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{axis_y}" stroke="#e6e6e6"/>"##
        );
        let _ = write!(
            s,
            r##"<text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{tick:.0} ms</text>"##,
            axis_y + 14.0
        );
        tick += step;
    }
    for (i, (name, values)) in rows.iter().enumerate() {
        let y = top + i as f64 * ROW_H * 1.4 + ROW_H * 0.7;
        let fill = if *name == "v2v" { "#222" } else { color(name) };
        let _ = write!(
            s,
            r##"<text x="8" y="{:.1}" fill="#222">{name}</text>"##,
            y + 4.0
        );
        let _ = write!(s, r#"<g class="dist dist-{name}">"#);
        for v in values {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="4" fill="{fill}" fill-opacity="0.55"><title>{v:.0} ms</title></circle>"#,
                x(*v)
            );
        }
        s.push_str("</g>");
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        if !sorted.is_empty() {
            let (p50, p90) = (quantile(&sorted, 0.5), quantile(&sorted, 0.9));
            let _ = write!(
                s,
                r#"<line class="p50" x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="black" stroke-width="2"/>"#,
                x(p50),
                y - 9.0,
                y + 9.0
            );
            let _ = write!(
                s,
                r#"<line class="p90" x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="black" stroke-dasharray="3,2"/>"#,
                x(p90),
                y - 9.0,
                y + 9.0
            );
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#444">p50 {p50:.0}</text>"##,
                width - 85.0,
                y + 4.0
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// All charts of a run stacked into one SVG: the distributions, then each turn's waterfall,
/// slowest first.
pub fn combined(turns: &[TurnRecord], width: f64) -> String {
    let mut parts = vec![distributions(turns, width)];
    for t in slowest_first(turns) {
        parts.push(waterfall(t, width));
    }
    let mut y = 0.0;
    let mut body = String::new();
    for p in &parts {
        let h = svg_height(p);
        let _ = write!(body, r#"<g transform="translate(0,{y})">{p}</g>"#);
        y += h + 10.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}"><rect width="100%" height="100%" fill="white"/>{body}</svg>"#
    )
}

/// Answered turns by V2V, slowest first, then failed turns.
pub fn slowest_first(turns: &[TurnRecord]) -> Vec<&TurnRecord> {
    let mut v: Vec<&TurnRecord> = turns.iter().collect();
    v.sort_by(|a, b| {
        a.error
            .is_some()
            .cmp(&b.error.is_some())
            .then(b.v2v_ms.total_cmp(&a.v2v_ms))
    });
    v
}

fn svg_height(svg: &str) -> f64 {
    svg.split("height=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or(0.0)
}

/// Rasterises an SVG to PNG bytes (fonts from the system).
pub fn to_png(svg: &str) -> Result<Vec<u8>, crate::ReportError> {
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(svg, &options)
        .map_err(|e| crate::ReportError::Render(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| {
            crate::ReportError::Render(format!("bad image size {}×{}", size.width(), size.height()))
        })?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| crate::ReportError::Render(e.to_string()))
}
