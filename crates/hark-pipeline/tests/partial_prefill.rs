//! Incremental prefill with the real default LLM: what the user has said so far goes into the
//! KV cache while they speak, a revised partial rolls it back, and the reply is exactly the
//! reply to the final transcript alone.

mod common;

use hark_pipeline::{Pipeline, PipelineConfig};

fn pipeline() -> Pipeline {
    let paths = common::default_models();
    let mut config = PipelineConfig::new(paths);
    config.threads = 2;
    // Greedy (the default sampler, with its repetition penalty): the reply is reproducible.
    assert_eq!(config.sampler.temperature, 0.0);
    Pipeline::load(config).unwrap()
}

#[test]
fn a_revised_partial_leaves_nothing_stale_in_the_cache() {
    let mut p = pipeline();
    let question = "What is the capital of France?";
    let (plain, _) = p.respond(question).unwrap();
    let plain_computed = plain.engine.prefill_tokens;
    p.reset().expect("a new conversation");

    // What streaming recognition committed as the user spoke: a mishearing, then its revision.
    assert!(p.prefill_partial("What is the capital of Spain").unwrap() > 0);
    assert!(p.prefill_partial("What is the capital of").unwrap() > 0);
    let (streamed, _) = p.respond(question).unwrap();

    assert!(!plain.reply.is_empty());
    assert_eq!(
        streamed.reply, plain.reply,
        "the reply after partial prefills equals the reply to the final transcript alone"
    );
    assert_eq!(streamed.engine.reply_tokens, plain.engine.reply_tokens);
    // Only the rest of the message ("France?", its end and the assistant header) was left.
    assert!(
        streamed.engine.prefill_tokens < plain_computed,
        "{} tokens computed at the turn's end, {} without partials",
        streamed.engine.prefill_tokens,
        plain_computed
    );
    assert_eq!(
        streamed.engine.prompt_tokens, plain.engine.prompt_tokens,
        "the same prompt either way"
    );
}

#[test]
fn a_partial_in_a_later_turn_keeps_the_conversation() {
    let mut p = pipeline();
    p.respond("My name is Ada.").unwrap();
    let history = p.history().to_vec();
    assert_eq!(history.len(), 2);
    p.prefill_partial("What is my").unwrap();
    assert_eq!(p.history(), history, "a partial is not a message yet");
    let (rec, audio) = p.respond("What is my name?").unwrap();
    assert!(!rec.reply.is_empty() && !audio.samples.is_empty());
    assert_eq!(p.history().len(), 4);
}

#[test]
fn the_first_turn_leaves_only_its_words_for_the_pause() {
    // Start-up and a new conversation cache the system prompt and the user message's header,
    // so the first turn computes the same tokens at the pause as any later first turn, and the
    // same reply.
    let mut p = pipeline();
    let question = "How many legs does a spider have?";
    let (first, _) = p.respond(question).unwrap();
    p.reset().expect("a new conversation");
    let (again, _) = p.respond(question).unwrap();
    assert_eq!(first.reply, again.reply);
    assert_eq!(first.engine.prompt_tokens, again.engine.prompt_tokens);
    assert_eq!(
        first.engine.prefill_tokens, again.engine.prefill_tokens,
        "tokens computed for the first turn after start-up and after a reset"
    );
    // The words, the message's end and the assistant's header: well short of the prompt.
    assert!(first.engine.prefill_tokens * 3 < first.engine.prompt_tokens);
}
