//! Streaming synthesis with the real joe voice, checked by ear: our own Whisper transcribes
//! what was spoken.

use std::time::{Duration, Instant};

use hark_asr::{AsrConfig, Transcriber};
use hark_core::wer::{corpus_wer, wer};
use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use hark_tts::normalize::normalize;
use hark_tts::text::Chunker;
use hark_tts::{Cancel, TtsError, Voice};

use hark_core::testing::models_dir as models;

fn voice() -> Voice {
    let m = hark_core::testing::init_onnx();
    Voice::load(
        &m.join("piper-joe/en_US-joe-medium.onnx"),
        &m.join("piper-joe/en_US-joe-medium.onnx.json"),
        &m.join("espeak/espeak-ng-data"),
        2,
    )
    .unwrap()
}

fn ears() -> Transcriber {
    Transcriber::load(
        &models().join("whisper-tiny.en/ggml-tiny.en.bin"),
        AsrConfig::default(),
    )
    .unwrap()
}

fn hear(asr: &mut Transcriber, audio: &[f32], rate: u32) -> String {
    let at16k =
        hark_audio::resample(&AudioBuffer::new(audio.to_vec(), rate), ASR_SAMPLE_RATE).unwrap();
    asr.transcribe(&at16k.samples).unwrap().text
}

/// What an assistant says, with numbers, money, dates, times, units and abbreviations.
const SENTENCES: [&str; 20] = [
    "The meeting is at 3:30 pm on Tuesday.",
    "It costs $4.99 at the corner shop.",
    "The train leaves from platform 9.",
    "Add 2 cups of flour and 1/2 cup of sugar.",
    "Dr. Brown will see you on 2025-03-14.",
    "The temperature will reach 25°C this afternoon.",
    "About 70% of the planet is covered by water.",
    "The marathon is 42 km long.",
    "My flight number is 815.",
    "She finished 2nd in the race.",
    "The library opens at 9:00 and closes at 18:00.",
    "It weighs about 3 kg.",
    "The population is roughly 8,000,000 people.",
    "Take the 1st left, then the 3rd right.",
    "The Eiffel Tower was finished in 1889.",
    "The recipe serves 4 people.",
    "Mr. Smith paid €120 for the tickets.",
    "Call me back in 15 minutes, please.",
    "The speed limit here is 50 mph.",
    "We arrived on the 21st of June.",
];

#[test]
fn synthesised_sentences_with_numbers_dates_and_abbreviations_are_intelligible() {
    let mut v = voice();
    let mut asr = ears();
    let cancel = Cancel::new().unwrap();
    let rate = v.sample_rate();
    let mut pairs = Vec::new();
    for sentence in SENTENCES {
        let audio = v.speak_chunk(sentence, &cancel).unwrap();
        // Both sides in spoken form: Whisper writes "$4.99" and "Dr." for what it hears.
        let heard = normalize(&hear(&mut asr, &audio, rate));
        let said = normalize(sentence);
        eprintln!("{said:?} → {heard:?} ({:.2})", wer(&said, &heard));
        pairs.push((said, heard));
    }
    let error = corpus_wer(pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    eprintln!("intelligibility WER {:.1} %", error * 100.0);
    assert!(error <= 0.10, "WER {error}");
}

#[test]
fn a_reply_spoken_chunk_by_chunk_says_what_the_whole_reply_says() {
    let mut v = voice();
    let mut asr = ears();
    let reply = "Sure, the capital of France is Paris. It has about 2 million people. \
                 Would you like to know more?";
    // As the LLM streams it: a few characters at a time.
    let mut chunker = Chunker::new();
    let mut chunks = Vec::new();
    let chars: Vec<char> = reply.chars().collect();
    for piece in chars.chunks(3) {
        chunks.extend(chunker.push(&piece.iter().collect::<String>()));
    }
    chunks.extend(chunker.finish());
    assert_eq!(chunks[0], "Sure,", "the first chunk is the first clause");
    let cancel = Cancel::new().unwrap();
    let mut streamed = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        // As the pipeline speaks a reply: the first chunk streams.
        let audio = if i == 0 {
            v.stream_chunk(c, &cancel, &mut |_| {}).unwrap()
        } else {
            v.speak_chunk(c, &cancel).unwrap()
        };
        streamed.extend_from_slice(&audio);
    }
    let whole = v.synthesize(reply).unwrap();
    let rate = v.sample_rate();
    let (a, b) = (
        hear(&mut asr, &streamed, rate),
        hear(&mut asr, &whole.samples, rate),
    );
    eprintln!("chunked: {a:?}\nwhole:   {b:?}");
    assert!(wer(&b, &a) <= 0.1, "{a:?} vs {b:?}");
    assert!(wer(&normalize(reply), &a) <= 0.15, "{a:?}");
    // About as long (chunk joins are trimmed, sentence pauses differ a little).
    let ratio = streamed.len() as f64 / whole.samples.len() as f64;
    assert!((0.8..1.2).contains(&ratio), "{ratio}");
}

#[test]
fn a_streamed_chunk_comes_in_pieces_that_make_up_the_whole() {
    let mut v = voice();
    assert!(
        v.streams_sentences(),
        "the joe voice is cut into its stages"
    );
    let mut asr = ears();
    let cancel = Cancel::new().unwrap();
    let mut pieces: Vec<Vec<f32>> = Vec::new();
    let text = "The capital of Italy is Rome. It is a very old city.";
    let audio = v
        .stream_chunk(text, &cancel, &mut |p| pieces.push(p.to_vec()))
        .unwrap();
    let lengths: Vec<usize> = pieces.iter().map(Vec::len).collect();
    assert_eq!(
        pieces.concat(),
        *audio,
        "the pieces are the audio, in order"
    );
    // The first sentence's short first piece (at most 16 frames of 256 samples) comes first.
    assert!(
        pieces.len() >= 3 && lengths[0] <= 16 * 256 && lengths[0] > 0,
        "{lengths:?}"
    );
    let heard = hear(&mut asr, &audio, v.sample_rate());
    assert!(wer(text, &heard) <= 0.2, "{heard:?}");
    // Heard before: one piece, from the cache.
    let mut again = 0;
    v.stream_chunk(text, &cancel, &mut |_| again += 1).unwrap();
    assert_eq!(again, 1);
}

#[test]
fn a_barge_in_stops_synthesis_at_once() {
    let mut v = voice();
    let long = "This is a long sentence that goes on and on, with many words in it, so that \
                synthesising it takes a good while on this machine, long enough to interrupt.";
    let cancel = Cancel::new().unwrap();
    let remote = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        let at = Instant::now();
        remote.cancel();
        at
    });
    let result = v.speak_chunk(long, &cancel);
    let returned = Instant::now();
    let cancelled_at = stopper.join().unwrap();
    assert!(
        matches!(result, Err(TtsError::Cancelled)),
        "{:?}",
        result.map(|a| a.len())
    );
    // Generous for a shared machine; `hark bench tts` measures it.
    let late = returned.saturating_duration_since(cancelled_at);
    assert!(
        late < Duration::from_millis(200),
        "stopped {late:?} after the cancel"
    );
    // A cancelled token stays cancelled; a new reply gets a new one.
    assert!(matches!(
        v.speak_chunk("Hello.", &cancel),
        Err(TtsError::Cancelled)
    ));
    assert!(v.speak_chunk("Hello.", &Cancel::new().unwrap()).is_ok());
}

#[test]
fn acknowledgements_come_from_the_phrase_cache() {
    let mut v = voice();
    v.warm_phrases(&hark_tts::ACKNOWLEDGEMENTS).unwrap();
    let cancel = Cancel::new().unwrap();
    let first = v.speak_chunk("Sure.", &cancel).unwrap();
    let again = v.speak_chunk("sure", &cancel).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "the same audio, not synthesised again"
    );
    assert!(v.cache().bytes() <= hark_tts::DEFAULT_CACHE_BYTES);
    assert!(v.cache().len() >= hark_tts::ACKNOWLEDGEMENTS.len());
}
