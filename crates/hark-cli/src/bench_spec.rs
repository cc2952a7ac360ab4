//! `hark bench llm --speculative`: plain decoding against each drafter on the assistant-style
//! prompt set, interleaved prompt by prompt so a noisy machine treats every variant alike.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use hark_llm::chat::chatml_prompt;
use hark_llm::speculative::ASSISTANT_PROMPTS;
use hark_llm::{
    ChatMessage, Engine, GenerationParams, HeadTokens, Role, SamplerConfig, SpeculationStats,
    Speculator,
};
use hark_models::ModelStore;
use serde_json::json;

use crate::bench_cmd::{call_peer, llm_path, peer_python, LlmBenchArgs, LLAMA_CPP_PEER};

/// One way of decoding, measured over the whole set.
struct Variant {
    name: String,
    speculator: Option<Speculator>,
    tokens: usize,
    decode_ms: f64,
    stats: SpeculationStats,
    /// Per prompt: this variant's decode time over plain decoding's (same tokens).
    ratios: Vec<f64>,
    identical: bool,
}

impl Variant {
    fn new(name: impl Into<String>, speculator: Option<Speculator>) -> Self {
        Self {
            name: name.into(),
            speculator,
            tokens: 0,
            decode_ms: 0.0,
            stats: SpeculationStats::default(),
            ratios: Vec::new(),
            identical: true,
        }
    }

    fn tok_s(&self) -> f64 {
        if self.decode_ms <= 0.0 {
            0.0
        } else {
            self.tokens as f64 * 1000.0 / self.decode_ms
        }
    }
}

pub fn bench_speculative(args: &LlmBenchArgs, store: &ModelStore) -> Result<()> {
    if args.max_draft == 0 || args.threads == 0 {
        bail!("--max-draft and --threads must be at least 1");
    }
    let path = llm_path(store, &args.model)?;
    let target = Engine::load(&path, 1024, args.threads)
        .with_context(|| format!("loading {}", path.display()))?;
    let draft_name = args
        .draft_model
        .clone()
        .or_else(|| (args.model == "qwen1.5b").then(|| "qwen0.5b".to_string()));
    let draft_path = match &draft_name {
        Some(name) => Some(llm_path(store, name)?),
        None => None,
    };
    // The draft model with its whole head and, unless --draft-head 0, with a head of the first
    // N tokens.
    let mut drafts = Vec::new();
    if let (Some(name), Some(p)) = (&draft_name, &draft_path) {
        let mut heads = vec![HeadTokens::All];
        if args.draft_head > 0 {
            heads.push(HeadTokens::FirstAndSpecial(args.draft_head));
        }
        for head in heads {
            let engine = Engine::load_with(p, 1024, args.threads, head)
                .with_context(|| format!("loading the draft model {}", p.display()))?;
            let label = match engine.model().head_subset() {
                Some(n) => format!("{name}, head of {n}"),
                None => name.clone(),
            };
            drafts.push((label, engine));
        }
    }
    let sampler = SamplerConfig {
        temperature: 0.0,
        repetition_penalty: 1.1,
        ..Default::default()
    };
    let params = GenerationParams {
        max_tokens: args.decode_tokens,
        sampler,
        stop_strings: Vec::new(),
    };
    let k = args.max_draft;
    // What a pass over n tokens costs here, measured once (after a typical prompt) and given to
    // every controller as its starting point.
    let mut probe = target.new_session()?;
    probe.append(
        &target.tokenizer().encode(&chatml_prompt(&[
            ChatMessage::new(Role::System, "You are a helpful voice assistant."),
            ChatMessage::new(Role::User, ASSISTANT_PROMPTS[0]),
        ]))?,
        false,
    )?;
    let pass_ms = probe.measure_passes(k + 1, 5)?;
    drop(probe);
    let calibrated = |mut s: Speculator| {
        s.controller.calibrate(&pass_ms);
        s
    };
    let mut prompts = Vec::new();
    // Every token plain decoding generated (how many of them a draft head scores).
    let mut plain_generated: Vec<u32> = Vec::new();
    let mut variants = vec![Variant::new("plain", None)];
    variants.push(Variant::new(
        format!("prompt lookup (controller, k ≤ {k})"),
        Some(calibrated(Speculator::prompt_lookup(k))),
    ));
    let mut lookup = Speculator::prompt_lookup(k);
    lookup.adaptive = false;
    variants.push(Variant::new(
        format!("prompt lookup (always k = {k})"),
        Some(lookup),
    ));
    for (name, draft) in &drafts {
        variants.push(Variant::new(
            format!("draft model {name} (controller, k ≤ {k})"),
            Some(calibrated(Speculator::draft_model(draft, sampler, k)?)),
        ));
        let mut always = Speculator::draft_model(draft, sampler, k)?;
        always.adaptive = false;
        variants.push(Variant::new(
            format!("draft model {name} (always k = {k})"),
            Some(always),
        ));
    }
    eprintln!(
        "hark bench llm --speculative: {} target, {} threads, {} prompts, up to {} tokens each, greedy",
        path.file_name().unwrap_or_default().to_string_lossy(),
        args.threads,
        ASSISTANT_PROMPTS.len(),
        args.decode_tokens
    );
    let step = pass_ms[0];
    eprintln!(
        "  a forward pass here: {}",
        pass_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| format!(
                "{} token{} {ms:.1} ms ({:.2}x)",
                i + 1,
                if i == 0 { "" } else { "s" },
                ms / step
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    for (n, question) in ASSISTANT_PROMPTS.iter().enumerate() {
        let prompt = target.tokenizer().encode(&chatml_prompt(&[
            ChatMessage::new(Role::System, "You are a helpful voice assistant."),
            ChatMessage::new(Role::User, *question),
        ]))?;
        prompts.push(prompt.clone());
        let mut plain_tokens = Vec::new();
        let mut plain_ms = 0.0;
        for v in variants.iter_mut() {
            let mut session = target.new_session()?;
            let g = session.generate_with(&prompt, &params, v.speculator.as_mut(), |_| true)?;
            // Decoding only: from the first token on (the prompt's prefill is the same for all).
            let decoded = g.tokens.len().saturating_sub(1);
            if v.speculator.is_none() {
                plain_tokens = g.tokens.clone();
                plain_generated.extend_from_slice(&g.tokens);
                plain_ms = g.decode_ms;
            } else {
                v.identical &= g.tokens == plain_tokens;
                if plain_ms > 0.0 {
                    v.ratios.push(g.decode_ms / plain_ms);
                }
            }
            v.tokens += decoded;
            v.decode_ms += g.decode_ms;
            v.stats.add(&g.speculation);
        }
        if progress {
            eprint!("\r  {}/{} prompts", n + 1, ASSISTANT_PROMPTS.len());
        }
    }
    eprintln!(
        "{}  {} prompts in {:.0} s",
        if progress { "\r" } else { "" },
        ASSISTANT_PROMPTS.len(),
        started.elapsed().as_secs_f64()
    );

    let plain_tok_s = variants[0].tok_s();
    // llama.cpp on the same pair and prompts, in the same run.
    let peer = match (&draft_path, args.no_peer) {
        (Some(draft), false) => {
            eprintln!("  llama.cpp: the same pair, the same prompts…");
            let python = peer_python(args.peer_python.as_deref())?;
            let answer = call_peer(
                &python,
                LLAMA_CPP_PEER,
                &json!({
                    "mode": "speculative",
                    "model": path.display().to_string(),
                    "draft": draft.display().to_string(),
                    "threads": args.threads,
                    "ctx": 1024,
                    "prompts": prompts,
                    "max_tokens": args.decode_tokens,
                    "k": k,
                    "stop": target.tokenizer().stop_tokens.iter().collect::<Vec<_>>(),
                }),
            )?;
            Some(answer)
        }
        _ => None,
    };
    let best_spec = variants
        .iter()
        .filter(|v| v.speculator.is_some())
        .map(Variant::tok_s)
        .fold(0.0, f64::max);
    // How much of plain decoding's output each draft head could propose at all.
    let head_coverage: Vec<(String, usize, f64)> = drafts
        .iter()
        .filter_map(|(name, engine)| {
            let n = engine.model().head_subset()?;
            let scored = plain_generated
                .iter()
                .filter(|&&id| engine.model().head_scores(id))
                .count();
            Some((
                name.clone(),
                n,
                scored as f64 / plain_generated.len().max(1) as f64,
            ))
        })
        .collect();
    if args.json {
        let rows: Vec<_> = variants
            .iter()
            .map(|v| {
                json!({
                    "variant": v.name,
                    "tok_s": v.tok_s(),
                    "speed_up": v.tok_s() / plain_tok_s,
                    "acceptance": v.stats.acceptance(),
                    "mean_accepted_length": v.stats.mean_accepted_length(),
                    "drafted_steps": v.stats.verify_steps,
                    "plain_steps": v.stats.plain_steps,
                    "worst_prompt_time_ratio": worst(&v.ratios),
                    "identical_to_plain": v.identical,
                    "controller_choices": v.speculator.as_ref().map(|s| s.controller.choices.clone()),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "variants": rows,
                "llama_cpp": peer,
                "best_speculative_tok_s": best_spec,
                "draft_head_coverage": head_coverage
                    .iter()
                    .map(|(name, n, share)| json!({"draft": name, "head_tokens": n, "share_of_plain_output": share}))
                    .collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!(
            "{:<56} {:>8} {:>8} {:>10} {:>8} {:>11} {:>10}  controller's k (0..)",
            "decoding", "tok/s", "speed-up", "accepted", "mean len", "worst/plain", "identical"
        );
        for v in &variants {
            let spec = v.speculator.is_some();
            println!(
                "{:<56} {:>8.1} {:>7.2}x {:>9.0}% {:>8.2} {:>11} {:>10}  {}",
                v.name,
                v.tok_s(),
                v.tok_s() / plain_tok_s,
                v.stats.acceptance() * 100.0,
                v.stats.mean_accepted_length(),
                if spec {
                    format!("{:.2}x", worst(&v.ratios))
                } else {
                    "-".into()
                },
                if spec {
                    if v.identical {
                        "yes"
                    } else {
                        "NO"
                    }
                } else {
                    "-"
                },
                v.speculator
                    .as_ref()
                    .filter(|s| s.adaptive)
                    .map(|s| format!("{:?}", s.controller.choices))
                    .unwrap_or_default()
            );
        }
        // What verification costs on this machine: the pass over k + 1 tokens against a step.
        for v in variants
            .iter()
            .filter(|v| v.speculator.as_ref().is_some_and(|s| !s.adaptive))
        {
            let c = &v.speculator.as_ref().expect("filtered").controller;
            let costs = c.pass_costs();
            if let Some(step) = costs.first().copied().flatten() {
                let passes: Vec<String> = costs
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter_map(|(i, ms)| {
                        ms.map(|ms| format!("{} tokens {:.2}x", i + 1, ms / step))
                    })
                    .collect();
                let draft = c
                    .draft_token_cost()
                    .map(|d| format!("; drafting a token {:.2}x", d / step))
                    .unwrap_or_default();
                println!(
                    "{}: a step {step:.1} ms; a pass over {}{draft}",
                    v.name,
                    passes.join(", ")
                );
            }
        }
        for (name, n, share) in &head_coverage {
            println!(
                "draft model {name}: its head scores {n} tokens, {:.1} % of the tokens plain decoding generated",
                share * 100.0
            );
        }
        if let Some(p) = &peer {
            let plain = p["plain_tok_s"].as_f64().unwrap_or(f64::NAN);
            let spec = p["speculative_tok_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{} on the same pair and prompts (greedy argmax, no penalty, always k = {k}): \
                 plain {plain:.1} tok/s, speculative {spec:.1} tok/s ({:.2}x), {:.0}% accepted",
                p["engine"].as_str().unwrap_or("llama.cpp"),
                spec / plain,
                p["acceptance"].as_f64().unwrap_or(f64::NAN) * 100.0
            );
            println!(
                "Hark's best speculative decoding against llama.cpp's: {best_spec:.1} / {spec:.1} tok/s = {:.2}x",
                best_spec / spec
            );
        }
        println!(
            "(tok/s: decoded tokens after the first over decode time, summed over the {} prompts; \
             worst/plain: the slowest prompt's decode time against plain decoding's; identical: \
             the same tokens as plain decoding on every prompt)",
            ASSISTANT_PROMPTS.len()
        );
    }
    if variants.iter().any(|v| !v.identical) {
        bail!("speculative decoding changed the greedy output (see above)");
    }
    Ok(())
}

fn worst(ratios: &[f64]) -> f64 {
    ratios.iter().copied().fold(f64::NAN, f64::max)
}
