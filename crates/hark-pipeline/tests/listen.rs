//! The listener on real models: turns end where a person would end them, the final transcript
//! is there when the turn ends, and noise does not stop it hearing speech.

use hark_asr::{AsrConfig, Transcriber};
use hark_audio::{resample, SileroVad, TurnConfig, TurnDetector};
use hark_core::wer::wer;
use hark_core::ASR_SAMPLE_RATE;
use hark_pipeline::listen::{completion, listen, Completion, HeardTurn, ListenConfig};

use hark_core::testing::models_dir as models;

struct Ears {
    detector: TurnDetector,
    asr: Transcriber,
}

/// One test at a time: each decodes with all cores, and the listener's decisions depend on how
/// soon a transcript is ready.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ears() -> Ears {
    let m = hark_core::testing::init_onnx();
    Ears {
        detector: TurnDetector::new(
            SileroVad::load(&m.join("silero-vad/silero_vad.onnx")).unwrap(),
            TurnConfig::default(),
        ),
        asr: Transcriber::load(
            &m.join("whisper-tiny.en/ggml-tiny.en.bin"),
            AsrConfig::default(),
        )
        .unwrap(),
    }
}

impl Ears {
    fn listen(&mut self, audio: &[f32], cfg: &ListenConfig) -> Vec<HeardTurn> {
        let probs = self.detector.probabilities(audio).unwrap();
        listen(&probs, audio, &mut self.asr, &TurnConfig::default(), cfg).unwrap()
    }
}

/// "go forward ten meters", 16 kHz, from pocketsphinx-testdata.
fn goforward() -> Vec<f32> {
    let bytes = std::fs::read(models().join("testdata/pocketsphinx/goforward.raw")).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; ms * 16]
}

/// A bundled espeak-ng question (`assets/question-NAME.wav`, digital silence after its last
/// word) at 16 kHz.
fn question(name: &str) -> Vec<f32> {
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let wav = hark_audio::read_wav(&assets.join(format!("question-{name}.wav"))).unwrap();
    resample(&wav.audio, ASR_SAMPLE_RATE).unwrap().samples
}

/// Synthesised speech (Piper, the joe voice) at 16 kHz.
fn say(text: &str) -> Vec<f32> {
    let m = models();
    let mut voice = hark_tts::Voice::load(
        &m.join("piper-joe/en_US-joe-medium.onnx"),
        &m.join("piper-joe/en_US-joe-medium.onnx.json"),
        &m.join("espeak/espeak-ng-data"),
        2,
    )
    .unwrap();
    let audio = voice.synthesize(text).unwrap();
    resample(&audio, ASR_SAMPLE_RATE).unwrap().samples
}

#[test]
fn the_final_transcript_is_ready_when_the_turn_ends() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let audio = [silence(300), goforward(), silence(1500)].concat();
    let turns = ears.listen(&audio, &ListenConfig::default());
    assert_eq!(turns.len(), 1, "{turns:?}");
    let t = &turns[0];
    assert_eq!(t.transcript.text, "Go forward 10 meters.");
    // Decoded from the moment the silence began, not from the turn's end. (How soon it is
    // ready depends on the machine's load: `hark bench asr` measures that, not a test.)
    assert!(t.final_started_ms < t.turn.decided_ms(), "{t:?}");
    assert!(t.final_started_ms >= t.turn.speech_end_ms(), "{t:?}");
    assert!(
        t.asr_final_ms <= t.final_spent_ms,
        "what is left at the turn end is at most the decode itself: {t:?}"
    );
}

#[test]
fn the_silence_that_ends_a_turn_is_counted_from_the_end_of_speech() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    // The bundled espeak-ng question ends in digital silence, which Silero alone heard begin
    // about 100 ms after the last word (measured; such windows are now silence at once).
    let audio = [silence(300), question("capital"), silence(1500)].concat();
    let cfg = ListenConfig::default();
    let turns = ears.listen(&audio, &cfg);
    assert_eq!(turns.len(), 1, "{turns:?}");
    let t = &turns[0];
    assert_eq!(
        completion(&t.transcript.text),
        Completion::Finished,
        "{t:?}"
    );
    // The turn ends at the first frame (8 ms) at least the finished-sentence silence after the
    // speech's end at which the transcript is known: not that silence after Silero's onset, nor
    // at the end of the window (32 ms) that silence falls in.
    let end = t.turn.speech_end_ms();
    let due = (end + cfg.finished_end_silence_ms).max(t.final_started_ms + t.final_spent_ms);
    let frame_ms = hark_pipeline::listen::FRAME as f64 / 16.0;
    assert!(
        t.turn.decided_ms() >= end + cfg.finished_end_silence_ms,
        "{t:?}"
    );
    assert!(t.turn.decided_ms() < due + frame_ms, "{t:?}");
}

#[test]
fn a_padded_recording_ends_where_its_speech_ends_not_where_the_detector_stops_hearing_it() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    // LibriVox: "He might even have been made amiable himself.", with 0.4 s of the room after
    // the last word, in which Silero hears voice for about 150 ms more.
    let reading = hark_audio::read_wav(
        &models()
            .join("testdata/pocketsphinx/librivox/sense_and_sensibility_01_austen_64kb-0930.wav"),
    )
    .unwrap()
    .audio;
    let reading = resample(&reading, ASR_SAMPLE_RATE).unwrap().samples;
    // Alone, the recording's own noise is its floor.
    let probs = ears.detector.probabilities(&reading).unwrap();
    let alone = hark_audio::turns::segment(&probs, &reading, &TurnConfig::default());
    let spoken_end = alone.last().unwrap().speech_end_ms();
    // Padded with digital silence, as a file may be: the floor of the whole input is then
    // zeros, against which the room noise after the speech would read as speech.
    let lead_ms = 300.0;
    let padded = [silence(lead_ms as usize), reading, silence(1500)].concat();
    let turns = ears.listen(&padded, &ListenConfig::default());
    assert_eq!(turns.len(), 1, "{turns:?}");
    let heard_end = turns[0].turn.speech_end_ms() - lead_ms;
    assert!(
        (heard_end - spoken_end).abs() <= 10.0,
        "speech ends at {spoken_end} ms in the recording alone, at {heard_end} ms padded"
    );
}

#[test]
fn a_pause_after_an_unfinished_phrase_does_not_end_the_turn() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let first = say("I would like to go to the");
    let audio = [
        silence(300),
        first.clone(),
        silence(700),
        say("railway station, please."),
        silence(1500),
    ]
    .concat();
    let turns = ears.listen(&audio, &ListenConfig::default());
    assert_eq!(turns.len(), 1, "the pause cut the turn: {turns:?}");
    let text = &turns[0].transcript.text;
    assert!(
        wer("i would like to go to the railway station please", text) <= 0.2,
        "{text:?}"
    );
    // The fixed 500 ms silence alone would have cut it in two.
    let probs = ears.detector.probabilities(&audio).unwrap();
    let fixed = hark_audio::turns::segment(&probs, &audio, &TurnConfig::default());
    assert_eq!(fixed.len(), 2, "{fixed:?}");
}

#[test]
fn speech_in_white_noise_is_still_heard() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let speech = [silence(300), goforward(), silence(1500)].concat();
    let noise = hark_core::audio::white_noise(speech.len(), 0.5, 0x9e37_79b9_7f4a_7c15);
    for (snr_db, max_wer) in [(10.0, 0.25), (0.0, 0.75)] {
        let noisy = hark_core::audio::add_noise_at_snr(&speech, &goforward(), &noise, snr_db);
        let turns = ears.listen(&noisy, &ListenConfig::default());
        let text: Vec<&str> = turns.iter().map(|t| t.transcript.text.as_str()).collect();
        let error = wer("go forward ten meters", &text.join(" "));
        eprintln!("{snr_db} dB SNR: {text:?}, WER {error:.2}");
        assert!(
            error <= max_wer,
            "{snr_db} dB SNR: {text:?} (WER {error:.2})"
        );
    }
}

#[test]
fn partials_commit_words_before_the_turn_ends() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let audio = [silence(300), goforward(), silence(1500)].concat();
    let cfg = ListenConfig {
        partials: true,
        ..ListenConfig::default()
    };
    let turns = ears.listen(&audio, &cfg);
    assert_eq!(turns.len(), 1);
    let t = &turns[0];
    assert!(t.partials.len() >= 2, "{:?}", t.partials);
    // Partials are ordered in time, none arrives after the turn was decided, and the stable
    // prefix only grows.
    for pair in t.partials.windows(2) {
        assert!(pair[0].ready_ms <= pair[1].ready_ms);
        assert!(pair[1].stable.starts_with(&pair[0].stable), "{pair:?}");
    }
    assert!(t.partials.iter().all(|p| p.ready_ms <= t.turn.decided_ms()));
}

#[test]
fn a_listener_that_forgets_old_audio_hears_the_same_turns() {
    // Over a minute and a half: three questions far apart. Fed a window at a time (and the
    // frames up to a turn's end where it falls inside one), keeping only what the listener
    // still needs, as the live pipeline does: the turns and transcripts are those of the whole
    // input.
    let _one = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    use hark_audio::vad::WINDOW;
    use hark_pipeline::listen::{frames_to, Audio, Listener, SampleClock};
    let mut audio = silence(1_000);
    for pause in [40_000, 35_000, 2_000] {
        audio.extend(goforward());
        audio.extend(silence(pause));
    }
    let mut ears = ears();
    let cfg = ListenConfig::default();
    let whole = ears.listen(&audio, &cfg);
    let probs = ears.detector.probabilities(&audio).unwrap();
    let mut listener = Listener::new(&TurnConfig::default(), &cfg, None);
    let (mut kept, mut start, mut most_kept) = (Vec::new(), 0usize, 0usize);
    let mut heard = Vec::new();
    for (i, &p) in probs.iter().enumerate() {
        let to = listener
            .end_due_at()
            .and_then(|due| frames_to(i * WINDOW, due));
        if let Some(to) = to.filter(|&to| to <= audio.len()) {
            kept.extend_from_slice(&audio[start + kept.len()..to]);
            let view = Audio {
                start,
                samples: &kept,
            };
            listener.heard_to(to, view, &mut heard);
        }
        let end = ((i + 1) * WINDOW).min(audio.len());
        kept.extend_from_slice(&audio[start + kept.len()..end]);
        let view = Audio {
            start,
            samples: &kept,
        };
        listener
            .push(p, view, &mut ears.asr, &SampleClock, &mut heard)
            .unwrap();
        let needed = listener.needs_audio_from();
        if needed > start {
            kept.drain(..needed - start);
            start = needed;
        }
        most_kept = most_kept.max(kept.len());
    }
    let view = Audio {
        start,
        samples: &kept,
    };
    listener
        .finish(view, &mut ears.asr, &SampleClock, &mut heard)
        .unwrap();
    let turns: Vec<_> = heard
        .into_iter()
        .filter_map(|h| match h {
            hark_pipeline::listen::Heard::Turn(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns.len(), whole.len());
    for (a, b) in turns.iter().zip(&whole) {
        assert_eq!(a.transcript.text, b.transcript.text);
        assert_eq!(a.turn.speech_start, b.turn.speech_start);
        // When a turn is decided depends on how long its decode took (measured): a window or
        // two either way.
        assert!(a.turn.decided_at.abs_diff(b.turn.decided_at) <= 2 * WINDOW);
        // The noise floor is measured on the last 30 s instead of the whole input: the same
        // speech end within a frame here (digital silence around real speech).
        assert!(a.turn.speech_end.abs_diff(b.turn.speech_end) <= 160);
    }
    assert!(
        most_kept <= 31 * ASR_SAMPLE_RATE as usize,
        "kept {} s of audio at most",
        most_kept / ASR_SAMPLE_RATE as usize
    );
}

#[test]
fn the_final_decode_starts_as_the_voice_fades() {
    // Silero's probability falls over a window or two where speech ends: the final decode
    // starts in the window where it falls below `fading_below`, one window before the one
    // heard as silence, and hears the same words.
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let audio = [silence(300), goforward(), silence(1500)].concat();
    let probs = ears.detector.probabilities(&audio).unwrap();
    let turn_cfg = TurnConfig::default();
    let fading = ListenConfig::default();
    let at_silence = ListenConfig {
        fading_below: turn_cfg.neg_threshold,
        ..fading
    };
    let (early, late) = (
        ears.listen(&audio, &fading),
        ears.listen(&audio, &at_silence),
    );
    assert_eq!((early.len(), late.len()), (1, 1), "{early:?} {late:?}");
    let (early, late) = (&early[0], &late[0]);
    assert_eq!(early.transcript.text, late.transcript.text);
    assert_eq!(early.transcript.text, "Go forward 10 meters.");
    let window_ms = hark_audio::vad::WINDOW as f64 / 16.0;
    // This recording's last voiced window is a fading one (measured: p 0.37).
    let last_voiced = (early.turn.speech_end_ms() / window_ms).ceil() as usize - 1;
    let p = probs[last_voiced];
    assert!(
        p >= turn_cfg.neg_threshold && p < fading.fading_below,
        "{p}"
    );
    assert_eq!(early.final_started_ms, late.final_started_ms - window_ms);
    assert_eq!(early.turn.speech_end, late.turn.speech_end);

    // In white noise at 10 dB SNR the speech stands less than 25 dB above the floor: the final
    // decode waits for the silence (one window short, it heard worse there).
    let noise = hark_core::audio::white_noise(audio.len(), 0.5, 0x9e37_79b9_7f4a_7c15);
    let noisy = hark_core::audio::add_noise_at_snr(&audio, &goforward(), &noise, 10.0);
    let (early, late) = (
        ears.listen(&noisy, &fading),
        ears.listen(&noisy, &at_silence),
    );
    assert_eq!((early.len(), late.len()), (1, 1), "{early:?} {late:?}");
    assert_eq!(early[0].final_started_ms, late[0].final_started_ms);
}

#[test]
fn a_file_whose_speech_stops_inside_a_window_is_decoded_at_that_window() {
    // The bundled espeak-ng question ends in digital silence. Placed so that it stops a quarter
    // of the way into a 32 ms window, the final decode starts at the end of that window, where
    // Silero still hears full voice, not at the end of the next one, the first it hears as
    // silence.
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let mut question = question("spider");
    // Where its signal stops (the resampler's ringing after it is below -80 dBFS).
    let stops = question.iter().rposition(|x| x.abs() > 1e-4).unwrap() + 1;
    question.truncate(stops);
    let window = hark_audio::vad::WINDOW;
    let lead = 4_800 + (window / 4 + window - (4_800 + stops) % window) % window;
    let audio = [vec![0.0; lead], question, silence(1500)].concat();
    let stops = lead + stops;
    assert_eq!(stops % window, window / 4);
    let probs = ears.detector.probabilities(&audio).unwrap();
    let cfg = ListenConfig::default();
    assert!(
        probs[stops / window] >= cfg.fading_below,
        "the voice fades there ({}): the fading rule alone would start the decode",
        probs[stops / window]
    );
    let turns = ears.listen(&audio, &cfg);
    assert_eq!(turns.len(), 1, "{turns:?}");
    let t = &turns[0];
    assert_eq!(t.transcript.text, "How many legs does a spider have?");
    let window_end_ms = (stops.div_ceil(window) * window) as f64 / 16.0;
    assert_eq!(t.final_started_ms, window_end_ms, "{t:?}");
    assert!(t.turn.speech_end_ms() <= window_end_ms, "{t:?}");
}

#[test]
fn a_decode_made_as_the_voice_faded_is_dropped_when_the_voice_goes_on() {
    use hark_pipeline::listen::Heard;
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut ears = ears();
    let audio = [silence(300), goforward(), silence(1500)].concat();
    let mut probs = ears.detector.probabilities(&audio).unwrap();
    // A dip mid-word: one fading window after full voice, and full voice again after it.
    let speech: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] >= 0.8).collect();
    let mid = speech[speech.len() / 2];
    probs[mid - 1] = 0.95;
    probs[mid] = 0.6;
    probs[mid + 1] = 0.95;
    let heard = hark_pipeline::listen::hear_all(
        &probs,
        &audio,
        &mut ears.asr,
        &TurnConfig::default(),
        &ListenConfig::default(),
    )
    .unwrap();
    let kinds: Vec<String> = heard
        .iter()
        .map(|h| match h {
            Heard::SpeechStarted(_) => "started".to_string(),
            Heard::Partial(_) => "partial".to_string(),
            Heard::Paused(t) => format!("paused {:?}", t.text),
            Heard::Resumed => "resumed".to_string(),
            Heard::Turn(t) => format!("turn {:?}", t.transcript.text),
        })
        .collect();
    // The dip's transcript was made and dropped; the turn ends with the whole utterance's.
    let at = |k: &str| kinds.iter().position(|x| x.starts_with(k));
    let (Some(paused), Some(resumed)) = (at("paused"), at("resumed")) else {
        panic!("{kinds:?}");
    };
    assert!(paused < resumed, "{kinds:?}");
    assert_ne!(
        kinds[paused], "paused \"Go forward 10 meters.\"",
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("turn \"Go forward 10 meters.\""),
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| k.starts_with("turn")).count(), 1);
}
