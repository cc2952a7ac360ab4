//! Terminal tables: one run's percentiles, and two runs side by side.

use std::fmt::Write;

use crate::load::Run;
use crate::stats::{summaries, summarize, Summary};

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Per-metric p50/p90/p99/max/count, then the slowest turns.
pub fn summary_table(run: &Run, slowest: usize) -> String {
    let mut out = String::new();
    let answered = run.turns.iter().filter(|t| t.error.is_none()).count();
    let _ = writeln!(
        out,
        "{}: {} turn(s), {} answered, {} failed",
        run.label,
        run.turns.len(),
        answered,
        run.turns.len() - answered
    );
    let _ = writeln!(
        out,
        "{:<17} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "metric", "unit", "p50", "p90", "p99", "max", "count"
    );
    for (m, s) in summaries(&run.turns) {
        let _ = writeln!(
            out,
            "{:<17} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}",
            m.name,
            m.unit,
            fmt(s.p50),
            fmt(s.p90),
            fmt(s.p99),
            fmt(s.max),
            s.count
        );
    }
    let mut turns: Vec<_> = run
        .turns
        .iter()
        .filter(|t| t.error.is_none() && t.v2v_ms > 0.0)
        .collect();
    turns.sort_by(|a, b| b.v2v_ms.total_cmp(&a.v2v_ms));
    if !turns.is_empty() {
        let _ = writeln!(out, "\nslowest turns:");
        for t in turns.iter().take(slowest) {
            let s = &t.spans;
            let _ = writeln!(
                out,
                "  {:>6} ms  {} #{}  (endpoint {} · asr {} · ttft {} · clause {} · tts {} · out {})  \"{}\"",
                fmt(t.v2v_ms),
                t.input,
                t.turn,
                fmt(s.endpoint),
                fmt(s.asr_final),
                fmt(s.llm_ttft),
                fmt(s.first_clause),
                fmt(s.tts_first_audio),
                fmt(s.output),
                ellipsize(&t.transcript, 40)
            );
        }
    }
    let failed: Vec<_> = run.turns.iter().filter(|t| t.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nfailed turns:");
        for t in failed {
            let _ = writeln!(
                out,
                "  {} #{}: {}",
                t.input,
                t.turn,
                t.error.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

pub fn ellipsize(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Two runs side by side: p50 and p90 of each, and B's ratio to A (below 1 is faster/smaller
/// for latencies; for throughputs the ratio is inverted so that below 1 still means B is better).
pub fn compare_table(a: &Run, b: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A = {} ({} turns)\nB = {} ({} turns)",
        a.label,
        a.turns.len(),
        b.label,
        b.turns.len()
    );
    let _ = writeln!(
        out,
        "{:<17} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "metric", "unit", "A p50", "B p50", "A p90", "B p90", "p50 B/A", "p90 B/A"
    );
    for m in crate::stats::metrics() {
        let sa = summarize(a.turns.iter().filter_map(m.get));
        let sb = summarize(b.turns.iter().filter_map(m.get));
        let (Some(sa), Some(sb)) = (sa, sb) else {
            continue;
        };
        let ratio = |x: f64, y: f64| if m.higher_is_better { x / y } else { y / x };
        let _ = writeln!(
            out,
            "{:<17} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            m.name,
            m.unit,
            fmt(sa.p50),
            fmt(sb.p50),
            fmt(sa.p90),
            fmt(sb.p90),
            ratio_fmt(ratio(sa.p50, sb.p50)),
            ratio_fmt(ratio(sa.p90, sb.p90))
        );
    }
    let _ = writeln!(
        out,
        "(ratios below 1.00 mean B is better: faster, or higher throughput)"
    );
    out
}

fn ratio_fmt(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "-".into()
    }
}

/// The p50 of V2V, for headlines.
pub fn v2v_summary(run: &Run) -> Option<Summary> {
    summaries(&run.turns)
        .into_iter()
        .find(|(m, _)| m.name == "v2v")
        .map(|(_, s)| s)
}
