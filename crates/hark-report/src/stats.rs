//! Percentiles of every measured quantity.

use hark_core::TurnRecord;

/// Order statistics of one quantity over a run's turns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The value at quantile `q` (0..=1) of sorted values, linearly interpolated between ranks.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

pub fn summarize(values: impl IntoIterator<Item = f64>) -> Option<Summary> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Summary {
        count: v.len(),
        p50: quantile(&v, 0.5),
        p90: quantile(&v, 0.9),
        p99: quantile(&v, 0.99),
        max: v[v.len() - 1],
    })
}

/// A quantity the report shows: its name, unit, and how to read it off a record.
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub get: fn(&TurnRecord) -> Option<f64>,
    /// Whether a larger value is better (throughputs), for comparison ratios.
    pub higher_is_better: bool,
}

fn answered(r: &TurnRecord) -> bool {
    r.error.is_none() && r.engine.reply_tokens > 0
}

/// Latencies first (V2V, then its spans in pipeline order), then the engine figures.
pub fn metrics() -> Vec<Metric> {
    fn m(
        name: &'static str,
        unit: &'static str,
        get: fn(&TurnRecord) -> Option<f64>,
        higher_is_better: bool,
    ) -> Metric {
        Metric {
            name,
            unit,
            get,
            higher_is_better,
        }
    }
    vec![
        m("v2v", "ms", |r| answered(r).then_some(r.v2v_ms), false),
        m("endpoint", "ms", |r| Some(r.spans.endpoint), false),
        m("asr_final", "ms", |r| Some(r.spans.asr_final), false),
        m(
            "llm_ttft",
            "ms",
            |r| answered(r).then_some(r.spans.llm_ttft),
            false,
        ),
        m(
            "first_clause",
            "ms",
            |r| answered(r).then_some(r.spans.first_clause),
            false,
        ),
        m(
            "tts_first_audio",
            "ms",
            |r| answered(r).then_some(r.spans.tts_first_audio),
            false,
        ),
        m(
            "output",
            "ms",
            |r| answered(r).then_some(r.spans.output),
            false,
        ),
        m(
            "tpot",
            "ms",
            |r| (r.engine.reply_tokens > 1).then_some(r.engine.tpot_ms),
            false,
        ),
        m(
            "decode",
            "tok/s",
            |r| (r.engine.reply_tokens > 1).then_some(r.engine.decode_tok_s),
            true,
        ),
        m(
            "prefill",
            "tok/s",
            |r| (r.engine.prefill_tokens > 0).then_some(r.engine.prefill_tok_s),
            true,
        ),
        m(
            "prompt_tokens",
            "tok",
            |r| answered(r).then_some(r.engine.prompt_tokens as f64),
            false,
        ),
        m(
            "reply_tokens",
            "tok",
            |r| answered(r).then_some(r.engine.reply_tokens as f64),
            false,
        ),
        m(
            "peak_memory",
            "MB",
            |r| (r.engine.peak_memory_mb > 0.0).then_some(r.engine.peak_memory_mb),
            false,
        ),
    ]
}

/// Every metric's summary over `turns` (metrics with no values are left out).
pub fn summaries(turns: &[TurnRecord]) -> Vec<(Metric, Summary)> {
    metrics()
        .into_iter()
        .filter_map(|m| summarize(turns.iter().filter_map(m.get)).map(|s| (m, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.9), 4.6);
        assert_eq!(quantile(&v, 1.0), 5.0);
        let s = summarize([5.0, f64::NAN, 1.0, 3.0]).unwrap();
        assert_eq!((s.count, s.p50, s.max), (3, 3.0, 5.0));
        assert!(summarize([]).is_none());
    }
}
