//! Speculative decoding on the real models: greedy, it is token for token plain decoding for
//! every prompt of the set and every drafter; rejected drafts leave both caches exactly as a
//! fresh prefill of what was accepted would.

use std::path::PathBuf;

use hark_llm::chat::chatml_prompt;
use hark_llm::speculative::ASSISTANT_PROMPTS;
use hark_llm::{
    ChatMessage, DraftModel, Drafter, Engine, GenerationParams, HeadTokens, Role, SamplerConfig,
    Speculator,
};

fn models() -> PathBuf {
    std::env::var_os("HARK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"))
}

fn smollm2() -> Engine {
    smollm2_with(HeadTokens::All)
}

fn smollm2_with(head: HeadTokens) -> Engine {
    let path = models().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `hark models fetch`",
        path.display()
    );
    Engine::load_with(&path, 1024, 2, head).expect("load SmolLM2")
}

fn prompt(engine: &Engine, question: &str) -> Vec<u32> {
    let text = chatml_prompt(&[
        ChatMessage::new(Role::System, "You are a helpful voice assistant."),
        ChatMessage::new(Role::User, question),
    ]);
    engine.tokenizer().encode(&text).unwrap()
}

/// The pipeline's sampling, greedy: a repetition penalty makes verification use the history.
fn params() -> GenerationParams {
    GenerationParams {
        max_tokens: 40,
        sampler: SamplerConfig {
            temperature: 0.0,
            repetition_penalty: 1.1,
            ..Default::default()
        },
        stop_strings: Vec::new(),
    }
}

/// Every prompt of the set, plainly and with `speculator`: the same tokens, the same text.
fn assert_identical(engine: &Engine, mut speculator: Speculator, label: &str) -> (usize, usize) {
    let params = params();
    let (mut drafted, mut accepted) = (0, 0);
    for question in ASSISTANT_PROMPTS {
        let ids = prompt(engine, question);
        let plain = engine
            .new_session()
            .unwrap()
            .generate(&ids, &params, |_| true)
            .unwrap();
        let mut streamed = String::new();
        let fast = engine
            .new_session()
            .unwrap()
            .generate_with(&ids, &params, Some(&mut speculator), |t| {
                streamed.push_str(t);
                true
            })
            .unwrap();
        assert_eq!(fast.tokens, plain.tokens, "{label}: {question:?}");
        assert_eq!(fast.text, plain.text);
        assert_eq!(streamed, plain.text, "{label}: streamed text");
        assert_eq!(fast.stop, plain.stop);
        drafted += fast.speculation.drafted;
        accepted += fast.speculation.accepted;
    }
    eprintln!("{label}: {accepted} of {drafted} drafted tokens accepted");
    (drafted, accepted)
}

#[test]
fn greedy_speculation_is_plain_decoding_for_every_prompt_and_drafter() {
    let engine = smollm2();
    // Prompt lookup, always drafting four (every verification path runs), then adaptive.
    let mut lookup = Speculator::prompt_lookup(4);
    lookup.adaptive = false;
    let (drafted, accepted) = assert_identical(&engine, lookup, "prompt lookup, k = 4");
    assert!(drafted > 40 && accepted > 0 && accepted < drafted);
    assert_identical(
        &engine,
        Speculator::prompt_lookup(4),
        "prompt lookup, adaptive",
    );

    // A draft model that often disagrees (the same model under a strong repetition penalty):
    // accepted and rejected drafts, and the draft's cache rolled back, every step.
    let draft_engine = smollm2();
    let disagreeing = SamplerConfig {
        repetition_penalty: 3.0,
        ..params().sampler
    };
    let mut draft = Speculator::draft_model(&draft_engine, disagreeing, 3).unwrap();
    draft.adaptive = false;
    let (drafted, accepted) = assert_identical(&engine, draft, "draft model, k = 3");
    assert!(drafted > 100 && accepted > 0 && accepted < drafted);

    // A draft model whose head scores only the first 2,000 tokens: it cannot propose the rest,
    // and what it does propose is checked as any draft is.
    let small_head = smollm2_with(HeadTokens::FirstAndSpecial(2000));
    let mut draft = Speculator::draft_model(&small_head, params().sampler, 3).unwrap();
    draft.adaptive = false;
    let (drafted, accepted) = assert_identical(&engine, draft, "draft model, head of 2000");
    assert!(drafted > 100 && accepted > 0 && accepted < drafted);
}

#[test]
fn a_draft_head_of_the_first_tokens_scores_them_as_the_whole_head_does_and_no_other() {
    let whole = smollm2();
    let part = smollm2_with(HeadTokens::FirstAndSpecial(5000));
    let vocab = whole.model().vocab_size();
    assert_eq!(part.model().vocab_size(), vocab);
    assert_eq!(whole.model().head_subset(), None);
    let scored = part.model().head_subset().expect("a subset head");
    assert!((5000..5100).contains(&scored), "{scored}");
    assert!(part.model().decode_read_bytes < whole.model().decode_read_bytes);
    // Every stop token is scored: the draft can propose the end of the reply.
    for &t in &part.tokenizer().stop_tokens {
        assert!(part.model().head_scores(t), "stop token {t}");
    }
    let ids = prompt(&whole, ASSISTANT_PROMPTS[1]);
    let logits = |e: &Engine| {
        e.new_session()
            .unwrap()
            .append(&ids, true)
            .unwrap()
            .to_vec()
    };
    let (a, b) = (logits(&whole), logits(&part));
    assert_eq!(a.len(), b.len());
    let mut kept = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let id = (i % vocab) as u32;
        if part.model().head_scores(id) {
            assert_eq!(x, y, "position {} token {id}", i / vocab);
            kept += 1;
        } else {
            assert_eq!(*y, f32::NEG_INFINITY, "position {} token {id}", i / vocab);
        }
    }
    assert_eq!(kept, scored * ids.len());

    // A head of no first tokens still scores one, and decodes (only what it scores: here the
    // end of the turn at once).
    let tiny = smollm2_with(HeadTokens::FirstAndSpecial(0));
    assert!(tiny.model().head_subset().is_some_and(|n| n >= 1));
    let g = tiny
        .new_session()
        .unwrap()
        .generate(&ids, &params(), |_| true)
        .unwrap();
    assert!(g.tokens.iter().all(|&t| tiny.model().head_scores(t)));
}

#[test]
fn rollback_leaves_both_caches_as_a_fresh_prefill_of_what_was_accepted() {
    let engine = smollm2();
    let draft_engine = smollm2();
    let ids = prompt(&engine, ASSISTANT_PROMPTS[2]);

    // The target, after a speculative generation with many rejections.
    let mut speculator = Speculator::draft_model(
        &draft_engine,
        SamplerConfig {
            repetition_penalty: 3.0,
            ..params().sampler
        },
        4,
    )
    .unwrap();
    speculator.adaptive = false;
    let mut session = engine.new_session().unwrap();
    let g = session
        .generate_with(&ids, &params(), Some(&mut speculator), |_| true)
        .unwrap();
    assert!(
        g.speculation.drafted > g.speculation.accepted,
        "some drafts were rejected"
    );
    let mut accepted = ids.clone();
    accepted.extend_from_slice(&g.tokens[..g.tokens.len() - 1]);
    assert_eq!(session.tokens(), accepted.as_slice());
    let probe = *g.tokens.last().unwrap();
    let after_rollback = session.append(&[probe], false).unwrap().to_vec();
    let mut fresh = engine.new_session().unwrap();
    fresh.append(&accepted, false).unwrap();
    assert_eq!(after_rollback, fresh.append(&[probe], false).unwrap());

    // The draft model: draft, take two of its tokens and a different third, draft again.
    let mut drafter = DraftModel::new(&draft_engine, params().sampler).unwrap();
    let first = drafter.draft(&ids, 4).unwrap();
    assert_eq!(first.len(), 4);
    assert!(drafter.caught_up(), "the first draft prefilled the prompt");
    let mut context = ids.clone();
    context.extend_from_slice(&first[..2]);
    context.push(if first[2] == 13 { 14 } else { 13 });
    let second = drafter.draft(&context, 3).unwrap();
    assert!(!drafter.caught_up(), "one new token is a draft's own cost");
    // Its cache: the context and the drafts it fed back (all but the last).
    let mut expected = context.clone();
    expected.extend_from_slice(&second[..2]);
    assert_eq!(drafter.session().tokens(), expected.as_slice());
    let mut continued = drafter.session().fork();
    let mut fresh = draft_engine.new_session().unwrap();
    fresh.append(&expected, false).unwrap();
    assert_eq!(
        continued.append(&[probe], false).unwrap(),
        fresh.append(&[probe], false).unwrap()
    );
}

#[test]
#[ignore = "needs the quality set (`hark models fetch --set quality`, 1.8 GB)"]
fn qwen_0_5b_drafting_for_1_5b_is_plain_decoding() {
    let dir = models().join("qwen2.5-coder");
    let target = Engine::load(
        &dir.join("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        1024,
        2,
    )
    .unwrap();
    let params = GenerationParams {
        max_tokens: 24,
        ..params()
    };
    // The draft with its whole head, and with a head of the first 32,768 tokens (`hark bench llm
    // --speculative`'s second draft).
    for head in [HeadTokens::All, HeadTokens::FirstAndSpecial(32768)] {
        let draft = Engine::load_with(&dir.join("qwen2.5-coder-0.5b-instruct.gguf"), 1024, 2, head)
            .unwrap();
        let mut speculator = Speculator::draft_model(&draft, params.sampler, 4).unwrap();
        speculator.adaptive = false;
        let mut stats = hark_llm::SpeculationStats::default();
        for question in &ASSISTANT_PROMPTS[..6] {
            let ids = prompt(&target, question);
            let plain = target
                .new_session()
                .unwrap()
                .generate(&ids, &params, |_| true)
                .unwrap();
            let fast = target
                .new_session()
                .unwrap()
                .generate_with(&ids, &params, Some(&mut speculator), |_| true)
                .unwrap();
            assert_eq!(fast.tokens, plain.tokens, "{head:?}: {question:?}");
            stats.add(&fast.speculation);
        }
        assert!(stats.acceptance() > 0.3, "{head:?}: {stats:?}");
    }
}
