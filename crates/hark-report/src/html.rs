//! One self-contained HTML page: the summary table, the distributions, and a waterfall per turn,
//! slowest first. No scripts, no external files: it opens anywhere, offline.

use std::fmt::Write;

use crate::load::Run;
use crate::stats::summaries;
use crate::svg::{distributions, escape, slowest_first, waterfall, COLORS};

pub fn page(run: &Run) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Hark latency report: {label}</title>
<style>
body {{ font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px; color: #222; max-width: 1000px; }}
table {{ border-collapse: collapse; margin: 8px 0 24px; }}
th, td {{ padding: 3px 10px; text-align: right; border-bottom: 1px solid #ddd; }}
th:first-child, td:first-child {{ text-align: left; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
.legend i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }}
.turn {{ margin: 18px 0; }}
.turn p {{ margin: 2px 0; }}
.error {{ color: #b00; }}
</style></head><body>
<h1>Hark latency report</h1>
<p id="source">{label}: {n} turn(s)</p>
"#,
        label = escape(&run.label),
        n = run.turns.len()
    );
    h.push_str(r#"<h2>Summary</h2><table id="summary"><tr><th>metric</th><th>unit</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>count</th></tr>"#);
    for (m, s) in summaries(&run.turns) {
        let _ = write!(
            h,
            r#"<tr class="metric" data-metric="{}"><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>"#,
            m.name, m.name, m.unit, s.p50, s.p90, s.p99, s.max, s.count
        );
    }
    h.push_str("</table>\n<h2>Distributions</h2>\n");
    h.push_str(&distributions(&run.turns, 960.0));
    h.push_str("\n<h2>Turns, slowest first</h2>\n<p class=\"legend\">");
    let _ = write!(
        h,
        r#"<span><i style="background:#9ecae9"></i>you speak</span>"#
    );
    for (name, c) in COLORS {
        let _ = write!(h, r#"<span><i style="background:{c}"></i>{name}</span>"#);
    }
    let _ = write!(
        h,
        r#"<span><i style="background:#a0d6a0"></i>hark speaks</span></p>"#
    );
    for t in slowest_first(&run.turns) {
        let _ = write!(h, r#"<div class="turn" data-v2v="{:.1}">"#, t.v2v_ms);
        let _ = write!(h, "<p><b>heard:</b> {}</p>", escape(&t.transcript));
        match &t.error {
            Some(e) => {
                let _ = write!(h, r#"<p class="error"><b>failed:</b> {}</p>"#, escape(e));
            }
            None => {
                let _ = write!(h, "<p><b>reply:</b> {}</p>", escape(&t.reply));
            }
        }
        h.push_str(&waterfall(t, 960.0));
        h.push_str("</div>\n");
    }
    h.push_str("</body></html>\n");
    h
}
