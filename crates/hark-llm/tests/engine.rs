//! The engine on the real SmolLM2-135M model (fetched by `hark models fetch`).

use std::path::PathBuf;

use hark_llm::chat::chatml_prompt;
use hark_llm::{ChatMessage, Engine, GenerationParams, Role, StopReason};

fn model_path() -> PathBuf {
    let root = std::env::var_os("HARK_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `hark models fetch` (scripts/test does)",
        path.display()
    );
    path
}

fn engine() -> Engine {
    Engine::load(&model_path(), 1024, 2).expect("load SmolLM2")
}

fn prompt(engine: &Engine, question: &str) -> Vec<u32> {
    let text = chatml_prompt(&[
        ChatMessage::new(
            Role::System,
            "You are a helpful assistant. Answer in one short sentence.",
        ),
        ChatMessage::new(Role::User, question),
    ]);
    engine.tokenizer().encode(&text).unwrap()
}

#[test]
fn tokenizer_round_trips_and_knows_chatml() {
    let e = engine();
    let t = e.tokenizer();
    let im_start = t.token_id("<|im_start|>").expect("ChatML tokens");
    let ids = t
        .encode("<|im_start|>user\nHello there, 2024 friends!<|im_end|>")
        .unwrap();
    assert_eq!(ids[0], im_start, "special tokens are matched whole");
    assert!(t.stop_tokens.contains(&t.token_id("<|im_end|>").unwrap()));
    assert_eq!(t.decode(&ids).unwrap(), "user\nHello there, 2024 friends!");
    // SmolLM splits digits one by one.
    let digits = t.encode("2024").unwrap();
    assert_eq!(digits.len(), 4, "{digits:?}");
}

#[test]
fn answers_a_simple_question() {
    let e = engine();
    let mut s = e.new_session().unwrap();
    let p = prompt(&e, "What is the capital of France?");
    let mut streamed = String::new();
    let g = s
        .generate(
            &p,
            &GenerationParams {
                max_tokens: 40,
                ..Default::default()
            },
            |piece| {
                streamed.push_str(piece);
                true
            },
        )
        .unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
    assert_eq!(streamed, g.text, "streamed pieces add up to the text");
    assert_eq!(g.stop, StopReason::EndOfTurn);
    assert!(g.decode_tok_s() > 0.0 && g.ttft_ms > 0.0);
}

#[test]
fn all_position_logits_equal_sequential_decoding() {
    let e = engine();
    let vocab = e.model().vocab_size();
    let p = prompt(&e, "Name a color.");
    let mut batch = e.new_session().unwrap();
    let all = batch.append(&p, true).unwrap().to_vec();
    assert_eq!(all.len(), p.len() * vocab);
    let mut seq = e.new_session().unwrap();
    for (i, &tok) in p.iter().enumerate() {
        let one = seq.append(&[tok], false).unwrap();
        // Each token's activations are quantized on their own and every dot product and
        // attention row is computed the same way whatever the batch, so the verify pass of
        // speculative decoding sees exactly the logits that decoding one by one would.
        assert!(
            one == &all[i * vocab..(i + 1) * vocab],
            "position {i}: batch and sequential logits differ"
        );
    }
}

#[test]
fn prefill_in_pieces_equals_prefill_at_once() {
    // Incremental prefill while the user speaks: the prompt arrives a few tokens at a time.
    let e = engine();
    let p = prompt(&e, "What is the capital of France and why is it famous?");
    let mut whole = e.new_session().unwrap();
    let expected = whole.append(&p, false).unwrap().to_vec();
    let mut pieces = e.new_session().unwrap();
    let mut last = Vec::new();
    for piece in p.chunks(3) {
        last = pieces.append(piece, false).unwrap().to_vec();
    }
    assert_eq!(pieces.tokens(), &p[..]);
    assert!(last == expected, "piecewise prefill gave different logits");
}

#[test]
fn a_forked_session_continues_like_a_fresh_one() {
    // The system prompt computed once, shared by new sessions through `fork`.
    let e = engine();
    let p = prompt(&e, "Name a fruit.");
    let split = p.len() / 2;
    let mut prefix = e.new_session().unwrap();
    prefix.append(&p[..split], false).unwrap();
    let mut forked = prefix.fork();
    let via_fork = forked.append(&p[split..], false).unwrap().to_vec();
    let mut fresh = e.new_session().unwrap();
    let direct = fresh.append(&p, false).unwrap().to_vec();
    assert!(via_fork == direct);
    // The original is untouched by what the fork appended.
    assert_eq!(prefix.tokens(), &p[..split]);
}

#[test]
fn rollback_then_reprefill_equals_fresh_prefill() {
    let e = engine();
    let a = prompt(&e, "Tell me about the moon.");
    let b = prompt(&e, "Tell me about the sea.");
    let mut s = e.new_session().unwrap();
    s.sync(&a).unwrap();
    // Revising the end of the prompt recomputes only the part after the common prefix.
    let (revised, computed) = s.sync(&b).unwrap();
    assert!(
        computed < b.len(),
        "prefix was reused ({computed} of {})",
        b.len()
    );
    let mut fresh = e.new_session().unwrap();
    let (expected, _) = fresh.sync(&b).unwrap();
    // Exactly equal: nothing of the rolled-back tokens survives in the cache.
    assert!(
        revised == expected,
        "rolled-back session differs from a fresh one"
    );
    assert_eq!(s.tokens(), fresh.tokens());
}

#[test]
fn cancellation_stops_at_once() {
    let e = engine();
    let mut s = e.new_session().unwrap();
    let p = prompt(&e, "Count from one to fifty.");
    let mut calls = 0;
    let g = s
        .generate(
            &p,
            &GenerationParams {
                max_tokens: 100,
                ..Default::default()
            },
            |_| {
                calls += 1;
                calls < 3
            },
        )
        .unwrap();
    assert_eq!(g.stop, StopReason::Cancelled);
    assert_eq!(calls, 3);
    assert!(g.tokens.len() <= 4, "{} tokens", g.tokens.len());
}

#[test]
fn a_prompt_longer_than_the_context_is_a_clear_error() {
    let e = Engine::load(&model_path(), 64, 2).unwrap();
    let mut s = e.new_session().unwrap();
    let long = prompt(&e, &"word ".repeat(100));
    let err = s
        .generate(&long, &GenerationParams::default(), |_| true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("context holds 64"), "{err}");
}

#[test]
fn damaged_or_missing_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00 truncated nonsense").unwrap();
    let err = Engine::load(&bad, 64, 1).err().unwrap().to_string();
    assert!(err.contains("not a usable GGUF model"), "{err}");
    let err = Engine::load(&dir.path().join("none.gguf"), 64, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("hark models fetch"), "{err}");
}

#[test]
#[ignore = "needs the quality set (`hark models fetch --set quality`, 1.8 GB)"]
fn qwen2_answers_a_simple_question() {
    let path = model_path()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("qwen2.5-coder/qwen2.5-coder-0.5b-instruct.gguf");
    let e = Engine::load(&path, 512, 2).unwrap();
    let t = e.tokenizer();
    assert_eq!(
        t.encode("<|im_start|>").unwrap(),
        [t.token_id("<|im_start|>").unwrap()]
    );
    let mut s = e.new_session().unwrap();
    let g = s
        .generate(
            &prompt(&e, "What is the capital of France?"),
            &GenerationParams {
                max_tokens: 30,
                ..Default::default()
            },
            |_| true,
        )
        .unwrap();
    assert!(g.text.contains("Paris"), "{:?}", g.text);
}
