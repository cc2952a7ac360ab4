//! The CTranslate2 → ggml conversion of Whisper tiny.en, checked against the model's known
//! dimensions, the manifest's hash, and by transcribing real speech with the result.

mod common;

use common::*;
use hark_models::whisper_ggml::{convert, WhisperDims};
use hark_models::{ids, ModelStore};

#[test]
fn converted_tiny_en_has_its_dimensions_and_transcribes() {
    let store = ModelStore::open(models_dir()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ggml-tiny.en.bin");
    let dims = convert(
        &store.require("whisper-tiny.en-ct2").unwrap(),
        &store.require("whisper-mel-filters").unwrap(),
        &store.require("whisper-gpt2-vocab").unwrap(),
        &out,
    )
    .unwrap();
    // Whisper tiny.en as published by OpenAI.
    let tiny_en = WhisperDims {
        n_vocab: 51864,
        n_audio_ctx: 1500,
        n_audio_state: 384,
        n_audio_head: 6,
        n_audio_layer: 4,
        n_text_ctx: 448,
        n_text_state: 384,
        n_text_head: 6,
        n_text_layer: 4,
        n_mels: 80,
    };
    assert_eq!(dims, tiny_en);
    // The conversion is deterministic: the manifest pins its output.
    let item = store.manifest().item(ids::WHISPER_TINY_EN).unwrap();
    assert_eq!(
        hark_models::verify::file_sha256(&out, None).unwrap(),
        item.sha256
    );

    let mut asr = hark_asr::Transcriber::load(&out, hark_asr::AsrConfig::default()).unwrap();
    let t = asr
        .transcribe(&read_raw(&testdata().join("goforward.raw")))
        .unwrap();
    assert_eq!(
        hark_core::wer::wer("go forward ten meters", &t.text),
        0.0,
        "{:?}",
        t.text
    );
}

#[test]
fn a_damaged_whisper_file_is_an_error_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("ggml.bin");
    std::fs::write(&bad, b"lmgg\x00\x00 this is not a model").unwrap();
    let err = hark_asr::Transcriber::load(&bad, hark_asr::AsrConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("could not be loaded"), "{err}");
    let err =
        hark_asr::Transcriber::load(&tmp.path().join("none.bin"), hark_asr::AsrConfig::default())
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("hark models fetch"), "{err}");
}

#[test]
#[ignore = "needs the quality set (`hark models fetch --set quality`, 1.8 GB)"]
fn converted_base_transcribes() {
    let store = ModelStore::open(models_dir()).unwrap();
    let mut asr = hark_asr::Transcriber::load(
        &store.require(ids::WHISPER_BASE).unwrap(),
        hark_asr::AsrConfig::default(),
    )
    .unwrap();
    let t = asr
        .transcribe(&read_raw(&testdata().join("something.raw")))
        .unwrap();
    assert_eq!(
        hark_core::wer::wer("go somewhere and do something", &t.text),
        0.0,
        "{:?}",
        t.text
    );
}
