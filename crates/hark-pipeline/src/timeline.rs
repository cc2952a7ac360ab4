//! The reply track: each reply placed on the input's clock where it starts playing.

use hark_core::audio::samples_to_ms;
use hark_core::AudioBuffer;

/// Replies at the voice's rate, each at the sample where it leaves the pipeline. A reply never
/// overlaps the one before it: a speaker plays one thing at a time.
#[derive(Debug, Clone)]
pub struct Timeline {
    sample_rate: u32,
    /// The track from sample `origin` on (what came before was forgotten, see
    /// [`Timeline::forget_before`]).
    track: Vec<f32>,
    origin: usize,
    /// (start sample, length) of each reply.
    replies: Vec<(usize, usize)>,
}

impl Timeline {
    pub fn new(sample_rate: u32) -> Self {
        Timeline {
            sample_rate,
            track: Vec::new(),
            origin: 0,
            replies: Vec::new(),
        }
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Places `audio` at `at_ms` or, if the previous reply is still playing then, right after it.
    /// Returns where it starts, ms.
    pub fn place(&mut self, at_ms: f64, audio: &[f32]) -> f64 {
        let busy_until = self.replies.last().map_or(0, |(s, n)| s + n);
        // Rounded up: a reply never starts before it is ready.
        let start = ((at_ms.max(0.0) * self.sample_rate as f64 / 1000.0).ceil() as usize)
            .max(busy_until)
            .max(self.origin);
        let at = start - self.origin;
        if self.track.len() < at + audio.len() {
            self.track.resize(at + audio.len(), 0.0);
        }
        self.track[at..at + audio.len()].copy_from_slice(audio);
        self.replies.push((start, audio.len()));
        samples_to_ms(start, self.sample_rate)
    }

    /// Continues the last reply with `audio` at `at_ms` or, if the last reply is still playing
    /// then, right after it (a piece of a reply that streams; a late piece leaves a gap). Starts
    /// a reply when there is none. Returns where the piece starts, ms.
    pub fn extend_last(&mut self, at_ms: f64, audio: &[f32]) -> f64 {
        let Some(&(start, _)) = self.replies.last() else {
            return self.place(at_ms, audio);
        };
        let begin_ms = self.place(at_ms, audio);
        self.replies.pop();
        let end = self.end();
        if let Some(last) = self.replies.last_mut() {
            last.1 = end - start;
        }
        begin_ms
    }

    /// Stops the last reply at `at_ms` if it is playing then (a barge-in), with a 10 ms fade so
    /// the cut does not click. Returns how much of it had played, ms.
    pub fn cut_last_at(&mut self, at_ms: f64) -> Option<f64> {
        let (start, len) = *self.replies.last()?;
        let at = (at_ms.max(0.0) * self.sample_rate as f64 / 1000.0).ceil() as usize;
        if at <= start || at >= start + len || at < self.origin {
            return None;
        }
        let fade = (self.sample_rate as usize / 100).min(start + len - at);
        for i in 0..fade {
            self.track[at - self.origin + i] *= 1.0 - (i + 1) as f32 / fade as f32;
        }
        let end = at + fade;
        self.track.truncate(end - self.origin);
        if let Some(last) = self.replies.last_mut() {
            last.1 = end - start;
        }
        Some(samples_to_ms(at - start, self.sample_rate))
    }

    /// Where each reply starts on the track and how long it plays, in samples.
    pub fn replies(&self) -> &[(usize, usize)] {
        &self.replies
    }

    /// The whole track from time 0 (from [`Timeline::origin`] once something was forgotten).
    pub fn track(&self) -> &[f32] {
        &self.track
    }

    /// Where the track starts: 0 unless something was forgotten.
    pub fn origin(&self) -> usize {
        self.origin
    }

    /// Where the track ends, in samples from time 0.
    pub fn end(&self) -> usize {
        self.origin + self.track.len()
    }

    /// Samples `from..to` of the track (from time 0), as far as they are kept.
    pub fn range(&self, from: usize, to: usize) -> &[f32] {
        let to = to.clamp(self.origin, self.end()) - self.origin;
        &self.track[(from.max(self.origin) - self.origin).min(to)..to]
    }

    /// Forgets the track before sample `at` (a live conversation that has been played need not
    /// be kept); replies are still listed where they were.
    pub fn forget_before(&mut self, at: usize) {
        let at = at.min(self.end());
        if at > self.origin {
            self.track.drain(..at - self.origin);
            self.origin = at;
        }
    }

    /// The replies one after the other with `pause_s` between them (as far as they are kept).
    pub fn replies_back_to_back(&self, pause_s: f32) -> AudioBuffer {
        let gap = (pause_s * self.sample_rate as f32) as usize;
        let mut out = Vec::new();
        for (i, &(start, len)) in self.replies.iter().enumerate() {
            if i > 0 {
                out.extend(std::iter::repeat_n(0.0, gap));
            }
            out.extend_from_slice(self.range(start, start + len));
        }
        AudioBuffer::new(out, self.sample_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_queue_behind_each_other() {
        let mut t = Timeline::new(1000);
        assert_eq!(t.place(100.0, &[1.0; 50]), 100.0);
        // Ready at 120 ms, but the first reply plays until 150 ms.
        assert_eq!(t.place(120.0, &[2.0; 10]), 150.0);
        assert_eq!(t.track().len(), 160);
        assert_eq!(t.track()[149], 1.0);
        assert_eq!(t.track()[150], 2.0);
        assert_eq!(t.replies_back_to_back(0.01).samples.len(), 70);
    }

    #[test]
    fn pieces_extend_the_reply_they_belong_to() {
        let mut t = Timeline::new(1000);
        t.place(100.0, &[1.0; 50]);
        assert_eq!(t.extend_last(120.0, &[2.0; 10]), 150.0, "queued behind");
        assert_eq!(t.extend_last(200.0, &[3.0; 10]), 200.0, "late: a gap");
        assert_eq!(t.replies(), &[(100, 110)]);
        assert_eq!(t.track()[170], 0.0);
    }

    #[test]
    fn a_barge_in_cuts_the_playing_reply_with_a_fade() {
        let mut t = Timeline::new(1000);
        t.place(100.0, &[1.0; 500]);
        assert_eq!(t.cut_last_at(50.0), None, "not playing yet");
        assert_eq!(t.cut_last_at(300.0), Some(200.0));
        assert_eq!(t.track().len(), 310, "stops 10 ms after the cut");
        assert!(t.track()[309].abs() < 0.2 && t.track()[299] == 1.0);
        assert_eq!(t.cut_last_at(900.0), None, "already over");
    }

    #[test]
    fn what_was_forgotten_keeps_every_position() {
        let mut t = Timeline::new(1000);
        t.place(100.0, &[1.0; 50]);
        t.forget_before(140);
        assert_eq!((t.origin(), t.end(), t.track().len()), (140, 150, 10));
        // Positions are still counted from time 0.
        assert_eq!(t.place(120.0, &[2.0; 10]), 150.0);
        assert_eq!(
            t.range(145, 155),
            &[1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(t.range(0, 141), &[1.0]);
        assert_eq!(t.extend_last(200.0, &[3.0; 10]), 200.0);
        assert_eq!(t.replies(), &[(100, 50), (150, 60)]);
        assert_eq!(t.cut_last_at(205.0), Some(55.0));
        assert_eq!(t.end(), 210);
        t.forget_before(1_000);
        assert_eq!((t.origin(), t.track().len()), (210, 0));
        assert_eq!(t.place(300.0, &[4.0; 5]), 300.0);
        assert_eq!(t.range(299, 302), &[0.0, 4.0, 4.0]);
    }
}
