//! Recognition while the user is still speaking: the growing utterance is decoded again every
//! hop, and words are committed by local agreement.
//!
//! Whisper has no streaming decoder; its hypothesis for the last word or two of a growing
//! utterance changes as more audio arrives. The local-agreement policy (Macháček et al.,
//! "Turning Whisper into Real-Time Transcription System", 2023) commits the words that two
//! consecutive hypotheses agree on: they rarely change again. What is committed is never taken
//! back, so the stable prefix only grows; the pipeline can prefill it into the LLM while the user
//! is still talking.

use crate::{AsrError, Transcriber, Transcript};

/// What the recogniser has to say about the current turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsrEvent {
    /// The latest whole hypothesis; may still change.
    Partial(String),
    /// The committed prefix so far (the whole of it, grown since the last `Stable`).
    Stable(String),
}

/// The local-agreement policy over word sequences.
#[derive(Debug, Default, Clone)]
pub struct LocalAgreement {
    /// Committed words, as first spelled.
    committed: Vec<String>,
    /// The previous hypothesis, as words.
    previous: Vec<String>,
}

/// A word as compared: lower case, letters and digits only ("Meters." = "meters").
fn key(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl LocalAgreement {
    /// Takes a new hypothesis; returns the committed text if it grew.
    pub fn update(&mut self, hypothesis: &str) -> Option<String> {
        let words: Vec<String> = hypothesis.split_whitespace().map(str::to_owned).collect();
        let agree = self
            .previous
            .iter()
            .zip(&words)
            .take_while(|(a, b)| key(a) == key(b))
            .count();
        // Commit only past what is committed, and only if this hypothesis still begins with it:
        // a hypothesis that revises a committed word leaves the commitment as it was.
        let consistent = self.committed.len() <= words.len()
            && self
                .committed
                .iter()
                .zip(&words)
                .all(|(a, b)| key(a) == key(b));
        self.previous = words;
        if consistent && agree > self.committed.len() {
            let grown = self.previous[self.committed.len()..agree].to_vec();
            self.committed.extend(grown);
            Some(self.stable())
        } else {
            None
        }
    }

    /// The committed prefix.
    pub fn stable(&self) -> String {
        self.committed.join(" ")
    }

    /// Starts a new turn.
    pub fn reset(&mut self) {
        self.committed.clear();
        self.previous.clear();
    }
}

/// Streaming settings.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    /// Audio between two decodes of the growing utterance, in samples at 16 kHz.
    pub hop_samples: usize,
    /// No decode before the utterance holds this much audio (a syllable or two is noise to
    /// Whisper).
    pub min_samples: usize,
    /// Threads for each partial decode (the rest are the LLM's while the user speaks).
    pub threads: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            hop_samples: 4_000, // 250 ms
            min_samples: 8_000, // 500 ms
            threads: 1,
        }
    }
}

/// A Whisper recogniser fed audio as it arrives, one turn at a time.
pub struct StreamingRecognizer {
    transcriber: Transcriber,
    config: StreamConfig,
    audio: Vec<f32>,
    /// `audio.len()` at the last decode.
    decoded_at: usize,
    agreement: LocalAgreement,
}

impl StreamingRecognizer {
    pub fn new(transcriber: Transcriber, config: StreamConfig) -> Self {
        StreamingRecognizer {
            transcriber,
            config,
            audio: Vec::new(),
            decoded_at: 0,
            agreement: LocalAgreement::default(),
        }
    }

    /// Adds 16 kHz mono audio of the current turn; decodes when a hop's worth has arrived.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<AsrEvent>, AsrError> {
        self.audio.extend_from_slice(samples);
        let mut events = Vec::new();
        if self.audio.len() < self.config.min_samples
            || self.audio.len() - self.decoded_at < self.config.hop_samples
        {
            return Ok(events);
        }
        self.decoded_at = self.audio.len();
        // A partial that runs away is simply skipped: the next hop or the final decode will do.
        let threads = self.config.threads;
        if let Some(text) = self.transcriber.transcribe_partial(&self.audio, threads)? {
            if let Some(stable) = self.agreement.update(&text) {
                events.push(AsrEvent::Stable(stable));
            }
            events.push(AsrEvent::Partial(text));
        }
        Ok(events)
    }

    /// The committed prefix of the current turn.
    pub fn stable(&self) -> String {
        self.agreement.stable()
    }

    /// Ends the turn: the final transcript of everything pushed since the last `finish`, decoded
    /// with the transcriber's own window setting. The recogniser is ready for the next turn.
    pub fn finish(&mut self) -> Result<Transcript, AsrError> {
        let audio = std::mem::take(&mut self.audio);
        self.decoded_at = 0;
        self.agreement.reset();
        if audio.is_empty() {
            return Ok(Transcript::default());
        }
        self.transcriber.transcribe(&audio)
    }

    /// Audio held for the current turn, in samples.
    pub fn buffered(&self) -> usize {
        self.audio.len()
    }

    pub fn into_transcriber(self) -> Transcriber {
        self.transcriber
    }
}

#[cfg(test)]
mod tests {
    use super::LocalAgreement;

    #[test]
    fn words_two_hypotheses_agree_on_are_committed_and_never_taken_back() {
        let mut a = LocalAgreement::default();
        assert_eq!(a.update("Go for"), None);
        assert_eq!(a.update("Go forward 10"), Some("Go".into()));
        assert_eq!(a.update("Go forward ten meters"), Some("Go forward".into()));
        // Punctuation and case do not break agreement; new words take the newest spelling.
        assert_eq!(
            a.update("go forward, ten meters."),
            Some("Go forward ten meters.".into())
        );
        // A revision of committed words commits nothing and keeps what was committed.
        assert_eq!(a.update("Going forward ten meters now"), None);
        assert_eq!(a.stable(), "Go forward ten meters.");
        a.reset();
        assert_eq!(a.stable(), "");
        assert_eq!(a.update("Hello"), None);
    }
}
