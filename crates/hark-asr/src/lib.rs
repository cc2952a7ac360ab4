//! Speech recognition with Whisper (whisper.cpp through whisper-rs).
//!
//! This is whole-utterance recognition: one decode per turn. The model and its decoder state
//! are loaded once and reused for every turn.

mod ggml_check;

use std::path::Path;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("Whisper model not found at {0}; run `hark models fetch`")]
    ModelMissing(String),
    #[error("Whisper model {path} could not be loaded ({detail}); it may be damaged: run `hark models verify`")]
    Load { path: String, detail: String },
    #[error("recognition failed: {0}")]
    Decode(String),
}

/// Recognition settings.
#[derive(Debug, Clone)]
pub struct AsrConfig {
    pub threads: usize,
    /// Language code for multilingual models; English-only models ignore it.
    pub language: String,
    /// Segments whose no-speech probability is above this are dropped.
    pub no_speech_threshold: f32,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            threads: default_threads(),
            language: "en".into(),
            no_speech_threshold: 0.6,
        }
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4)
}

/// A final transcript.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Highest no-speech probability among the segments kept.
    pub no_speech_prob: f32,
}

pub struct Transcriber {
    // Kept alive for `state`, which borrows the model through whisper.cpp.
    _ctx: WhisperContext,
    state: WhisperState,
    config: AsrConfig,
    multilingual: bool,
}

/// Whisper pads everything to at least this much audio; we pad short turns ourselves with
/// silence so very short words are still recognised (samples at 16 kHz).
const MIN_SAMPLES: usize = 16_000;

impl Transcriber {
    pub fn load(model: &Path, config: AsrConfig) -> Result<Self, AsrError> {
        if !model.is_file() {
            return Err(AsrError::ModelMissing(model.display().to_string()));
        }
        ggml_check::check(model).map_err(|detail| AsrError::Load {
            path: model.display().to_string(),
            detail,
        })?;
        // Route whisper.cpp's own logging away from stderr.
        whisper_rs::install_logging_hooks();
        let load_err = |e: whisper_rs::WhisperError| AsrError::Load {
            path: model.display().to_string(),
            detail: e.to_string(),
        };
        let ctx = WhisperContext::new_with_params(model, WhisperContextParameters::default())
            .map_err(load_err)?;
        let state = ctx.create_state().map_err(load_err)?;
        let multilingual = ctx.is_multilingual();
        Ok(Transcriber {
            _ctx: ctx,
            state,
            config,
            multilingual,
        })
    }

    /// Transcribes 16 kHz mono speech. Silence and noise give an empty transcript.
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<Transcript, AsrError> {
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads as i32);
        params.set_language(Some(if self.multilingual {
            self.config.language.as_str()
        } else {
            "en"
        }));
        params.set_no_context(true);
        params.set_single_segment(true);
        params.set_no_timestamps(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_temperature(0.0);
        params.set_temperature_inc(0.0);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);

        let padded;
        let audio = if samples.len() < MIN_SAMPLES {
            padded = [samples, &vec![0.0; MIN_SAMPLES - samples.len()]].concat();
            &padded[..]
        } else {
            samples
        };
        self.state
            .full(params, audio)
            .map_err(|e| AsrError::Decode(e.to_string()))?;
        let mut text = String::new();
        let mut no_speech_prob = 0.0f32;
        for segment in self.state.as_iter() {
            let p = segment.no_speech_probability();
            if p > self.config.no_speech_threshold {
                continue;
            }
            no_speech_prob = no_speech_prob.max(p);
            let piece = segment
                .to_str_lossy()
                .map_err(|e| AsrError::Decode(e.to_string()))?;
            text.push_str(&piece);
        }
        let mut text = strip_annotations(&text);
        // Whisper's stock phrases on near-silence; a person who really says them is heard clearly.
        if no_speech_prob > INVENTED_MIN_NO_SPEECH && is_invented(&text) {
            text.clear();
        }
        Ok(Transcript {
            text,
            no_speech_prob,
        })
    }
}

/// Above this no-speech probability, a transcript that is only a stock phrase is dropped.
const INVENTED_MIN_NO_SPEECH: f32 = 0.2;

/// Removes Whisper's non-speech annotations ("[BLANK_AUDIO]", "(music)", "*sigh*") and tidies
/// spaces; a transcript with no words left is empty.
pub fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' | '<' => depth += 1,
            ']' | ')' | '>' => depth = depth.saturating_sub(1),
            '*' | '♪' => {}
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().any(char::is_alphanumeric) {
        out
    } else {
        String::new()
    }
}

/// Whether `text` is one of the phrases Whisper is known to invent on silence or noise.
pub fn is_invented(text: &str) -> bool {
    const INVENTED: [&str; 6] = [
        "thank you",
        "thanks for watching",
        "thank you for watching",
        "you",
        "bye",
        "thank you very much",
    ];
    let bare: String = text
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    INVENTED.contains(&bare.trim())
}

#[cfg(test)]
mod tests {
    use super::{is_invented, strip_annotations};

    #[test]
    fn annotations_are_dropped_and_stock_phrases_recognised() {
        assert_eq!(strip_annotations(" [BLANK_AUDIO]"), "");
        assert_eq!(strip_annotations("(upbeat music) ♪ ..."), "");
        assert_eq!(
            strip_annotations("  Go forward ten meters. "),
            "Go forward ten meters."
        );
        assert!(is_invented(" Thank you."));
        assert!(!is_invented("Thank you for the help."));
    }
}
