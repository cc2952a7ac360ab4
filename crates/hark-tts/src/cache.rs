//! Audio of phrases heard before, kept in memory up to a bound in bytes: short acknowledgements
//! synthesised at start-up, and any chunk a reply repeats.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A least-recently-used map from phrase to audio whose samples never exceed `max_bytes`.
#[derive(Debug)]
pub struct PhraseCache {
    max_bytes: usize,
    bytes: usize,
    audio: HashMap<String, Arc<Vec<f32>>>,
    /// Keys, least recently used first.
    order: VecDeque<String>,
}

/// How a phrase is looked up: case, spacing and the final punctuation do not matter.
pub fn phrase_key(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches(['.', '!', ','])
        .to_string()
}

impl PhraseCache {
    pub fn new(max_bytes: usize) -> Self {
        PhraseCache {
            max_bytes,
            bytes: 0,
            audio: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Bytes of audio held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.audio.len()
    }

    pub fn is_empty(&self) -> bool {
        self.audio.is_empty()
    }

    pub fn get(&mut self, text: &str) -> Option<Arc<Vec<f32>>> {
        let key = phrase_key(text);
        let found = self.audio.get(&key).cloned()?;
        self.touch(&key);
        Some(found)
    }

    /// Keeps `audio` for `text`, evicting the least recently used phrases to stay in bounds. A
    /// phrase larger than the whole bound is not kept.
    pub fn insert(&mut self, text: &str, audio: Arc<Vec<f32>>) {
        let size = audio.len() * std::mem::size_of::<f32>();
        if size > self.max_bytes {
            return;
        }
        let key = phrase_key(text);
        if let Some(old) = self.audio.remove(&key) {
            self.bytes -= old.len() * std::mem::size_of::<f32>();
            self.order.retain(|k| k != &key);
        }
        while self.bytes + size > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.audio.remove(&oldest) {
                self.bytes -= old.len() * std::mem::size_of::<f32>();
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.audio.insert(key, audio);
    }

    fn touch(&mut self, key: &str) {
        if let Some(i) = self.order.iter().position(|k| k == key) {
            if let Some(k) = self.order.remove(i) {
                self.order.push_back(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_exceeds_its_bound_and_keeps_what_is_used() {
        let mut cache = PhraseCache::new(4 * 1000);
        for i in 0..50 {
            cache.insert(&format!("phrase {i}"), Arc::new(vec![0.1; 100 + i * 7]));
            assert!(cache.bytes() <= 4000, "{} bytes", cache.bytes());
            // The first phrase is used all the time, so it stays.
            if i > 0 {
                assert!(cache.get("Phrase 0.").is_some(), "evicted at {i}");
            }
        }
        assert!(cache.get("phrase 1").is_none());
        assert!(cache.get("phrase 49").is_some());
        // Larger than the bound: not kept, nothing evicted for it.
        let before = cache.len();
        cache.insert("huge", Arc::new(vec![0.0; 2000]));
        assert!(cache.get("huge").is_none());
        assert_eq!(cache.len(), before);
        assert_eq!(phrase_key("  Sure,  I CAN. "), "sure, i can");
    }
}
