//! Text as it should be spoken: what an LLM writes (markdown, symbols) made readable, and split
//! into sentences and clauses.

/// Removes markdown and symbols that should not be read out. Numbers, dates and units are left
/// to espeak-ng, which reads them.
pub fn speakable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for line in text.lines() {
        let line = line.trim();
        // Code blocks are for reading, not listening.
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // List markers and headings begin a new sentence.
        let line = line
            .trim_start_matches(['#', '>', '-', '*', '+'])
            .trim_start();
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            let ends_sentence = out.ends_with(['.', '!', '?', ':', ';', ',']);
            out.push_str(if ends_sentence { " " } else { ". " });
        }
        for c in line.chars() {
            match c {
                '*' | '_' | '`' | '#' | '~' | '|' | '<' | '>' | '[' | ']' | '{' | '}' | '\\' => {}
                '&' => out.push_str(" and "),
                c if is_emoji(c) => {}
                c => out.push(c),
            }
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0xFE0F | 0x200D)
}

/// Words whose full stop does not end a sentence.
const ABBREVIATIONS: [&str; 12] = [
    "mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "prof", "no", "approx",
];

/// Whether the full stop ending `text` belongs to an abbreviation or an initial.
fn ends_with_abbreviation(text: &str) -> bool {
    let word = text
        .trim_end_matches('.')
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .trim_start_matches(['"', '\'', '('])
        .to_lowercase();
    word.chars().count() == 1 || ABBREVIATIONS.contains(&word.as_str())
}

/// Splits streaming text (an LLM's reply as it is generated, token by token) into chunks to
/// synthesise: the first as early as is natural, then whole sentences.
///
/// The first chunk ends at the first clause break (", ; :"), or before a word that opens a
/// phrase ("of", "with", "and", ...) once [`Chunker::FIRST_MIN_WORDS`] words precede it ("The
/// moon is made | of pure silver"), or after [`Chunker::FIRST_MAX_WORDS`] words. A break is
/// taken once the character after it is known, so "3.50", "3,000", "example.com" and "Dr.
/// Smith" never split; a comma, question or exclamation mark right after a letter needs no
/// look-ahead (nothing but a space follows one in speech), so it ends a chunk the moment its
/// token arrives, one token sooner.
#[derive(Debug, Default)]
pub struct Chunker {
    pending: String,
    first_done: bool,
}

/// Words that open a phrase: prepositions, conjunctions, relative words. The first chunk may end
/// before one, where a speaker would pause.
const OPENS_PHRASE: [&str; 34] = [
    "of", "in", "on", "at", "for", "with", "from", "by", "about", "into", "to", "through", "over",
    "under", "after", "before", "during", "without", "between", "and", "but", "or", "so",
    "because", "if", "when", "while", "that", "which", "who", "where", "since", "although", "than",
];

impl Chunker {
    /// Words after which the first chunk goes even without punctuation.
    pub const FIRST_MAX_WORDS: usize = 6;
    /// Words the first chunk has at least when it ends before a word that opens a phrase.
    pub const FIRST_MIN_WORDS: usize = 3;

    pub fn new() -> Self {
        Chunker::default()
    }

    /// Adds generated text; returns the chunks now complete.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        self.pending.push_str(piece);
        let mut out = Vec::new();
        while let Some(end) = self.next_break() {
            let chunk: String = self.pending.drain(..end).collect();
            let chunk = chunk.trim().to_string();
            if !chunk.is_empty() {
                out.push(chunk);
                self.first_done = true;
            }
        }
        out
    }

    /// The text left when generation ends.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending).trim().to_string();
        self.first_done = false;
        (!rest.is_empty()).then_some(rest)
    }

    /// Where the next chunk ends (a byte index into `pending`), if it is complete.
    fn next_break(&self) -> Option<usize> {
        let text = &self.pending;
        let mut words = 0;
        // Where the word being read began, while in one.
        let mut word_start = None;
        let mut prev = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let next = chars.peek().map(|&(_, n)| n);
            let before = prev.replace(c);
            if c.is_whitespace() {
                if let Some(start) = word_start.take() {
                    words += 1;
                    if !self.first_done {
                        // A word that opens a phrase, with enough words before it: the
                        // chunk ends before it.
                        if words > Self::FIRST_MIN_WORDS && opens_phrase(&text[start..i]) {
                            return Some(start);
                        }
                        // No punctuation yet: the first chunk goes after a few words.
                        if words >= Self::FIRST_MAX_WORDS {
                            return Some(i);
                        }
                    }
                }
                continue;
            }
            word_start.get_or_insert(i);
            let end = i + c.len_utf8();
            let sentence_end =
                matches!(c, '.' | '!' | '?') && !(c == '.' && ends_with_abbreviation(&text[..end]));
            let clause_end = !self.first_done && matches!(c, ',' | ';' | ':');
            if !(sentence_end || clause_end) {
                continue;
            }
            // A break needs the character after it, and that must be a space; after a letter, a
            // comma, semicolon, question or exclamation mark is one as it stands (a full stop
            // may be a dot in an address, "example" "." "com", and a colon a URL's).
            let settled = match next {
                Some(n) => n.is_whitespace(),
                None => {
                    matches!(c, ',' | ';' | '?' | '!') && before.is_some_and(char::is_alphabetic)
                }
            };
            if settled {
                return Some(end);
            }
        }
        None
    }
}

/// Whether `word` (as written, with any punctuation) opens a phrase. (Asked of each word the
/// chunker reads, token by token: no allocation.)
fn opens_phrase(word: &str) -> bool {
    OPENS_PHRASE.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Splits at sentence ends (. ! ?) followed by a space, keeping the punctuation. A full stop
/// after a single letter or a common abbreviation does not end a sentence.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        current.push(c);
        let at_boundary =
            matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if !at_boundary {
            continue;
        }
        if c == '.' && ends_with_abbreviation(&current) {
            continue;
        }
        let s = current.trim().to_string();
        if !s.is_empty() {
            out.push(s);
        }
        current.clear();
    }
    let s = current.trim().to_string();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

/// Splits a sentence into clauses at , ; : . ! ? and returns each with its punctuation, which
/// Piper voices use for phrasing.
pub fn clauses(sentence: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = sentence.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let is_break = matches!(c, ',' | ';' | ':' | '.' | '!' | '?')
            // "3,000" and "3.5" stay whole.
            && !(matches!(c, ',' | '.') && i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()));
        if is_break {
            if !current.trim().is_empty() {
                out.push((current.trim().to_string(), Some(c)));
            }
            current.clear();
        } else {
            current.push(c);
        }
    }
    if !current.trim().is_empty() {
        out.push((current.trim().to_string(), None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_not_read_out() {
        assert_eq!(
            speakable("**Paris** is the *capital*."),
            "Paris is the capital."
        );
        assert_eq!(
            speakable("Steps:\n- one\n- two\n```\ncode\n```"),
            "Steps: one. two"
        );
        assert_eq!(speakable("Salt & pepper 😀"), "Salt and pepper");
    }

    #[test]
    fn sentences_respect_abbreviations_and_decimals() {
        assert_eq!(
            sentences("Dr. Smith is here. He paid 3.50 dollars! Ok?"),
            ["Dr. Smith is here.", "He paid 3.50 dollars!", "Ok?"]
        );
        assert_eq!(sentences("no end"), ["no end"]);
    }

    /// Feeds `text` in pieces of `n` characters, as an LLM streams it.
    fn chunks_of(text: &str, n: usize) -> Vec<String> {
        let mut c = Chunker::new();
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(n) {
            out.extend(c.push(&piece.iter().collect::<String>()));
        }
        out.extend(c.finish());
        out
    }

    #[test]
    fn the_first_chunk_is_a_short_clause_then_whole_sentences() {
        let text = "Sure, the capital of France is Paris. It has 2.1 million people, \
                    give or take. Dr. Smith lives at example.com and paid $3,000.50!";
        for n in [1, 3, 7, 100] {
            assert_eq!(
                chunks_of(text, n),
                [
                    "Sure,",
                    "the capital of France is Paris.",
                    "It has 2.1 million people, give or take.",
                    "Dr. Smith lives at example.com and paid $3,000.50!",
                ],
                "pieces of {n}"
            );
        }
    }

    #[test]
    fn without_punctuation_the_first_chunk_goes_after_a_few_words() {
        assert_eq!(
            chunks_of("I think that we should probably go now", 2),
            ["I think that we should probably", "go now"]
        );
        assert_eq!(chunks_of("", 1), Vec::<String>::new());
        // Nothing is lost or reordered, however the text arrives.
        let text = "One, two. Three four five six seven eight nine ten? Eleven.";
        for n in 1..12 {
            assert_eq!(chunks_of(text, n).join(" "), text, "pieces of {n}");
        }
    }

    #[test]
    fn the_first_chunk_ends_before_a_word_that_opens_a_phrase() {
        for n in [1, 2, 5] {
            assert_eq!(
                chunks_of("The moon is made of pure silver and rock. It shines.", n),
                ["The moon is made", "of pure silver and rock.", "It shines."],
                "pieces of {n}"
            );
        }
        // Not with fewer than three words before it, nor after the first chunk.
        assert_eq!(
            chunks_of(
                "I think that we should probably go now. It is late and dark.",
                3
            ),
            [
                "I think that we should probably",
                "go now.",
                "It is late and dark."
            ]
        );
    }

    #[test]
    fn a_comma_or_mark_after_a_word_ends_the_chunk_as_its_token_arrives() {
        let mut c = Chunker::new();
        assert!(c.push("Paris").is_empty());
        assert_eq!(c.push(","), ["Paris,"], "no wait for the next token");
        let mut c = Chunker::new();
        assert!(c.push("You're welcome").is_empty());
        assert_eq!(c.push("!"), ["You're welcome!"]);
        // Where the next character decides, it is waited for.
        let mut c = Chunker::new();
        for piece in ["It", " costs", " 3", ",", "0", "0", "0", " dollars", "."] {
            assert!(c.push(piece).is_empty(), "split at {piece:?}");
        }
        let mut c = Chunker::new();
        for piece in ["Visit", " example", ".", "com", " or", " http", ":"] {
            assert!(c.push(piece).is_empty(), "split at {piece:?}");
        }
        assert_eq!(c.push("//"), Vec::<String>::new());
        assert_eq!(c.finish().as_deref(), Some("Visit example.com or http://"));
    }

    #[test]
    fn clauses_keep_their_punctuation() {
        assert_eq!(
            clauses("Well, it costs 3,000 dollars."),
            [
                ("Well".to_string(), Some(',')),
                ("it costs 3,000 dollars".to_string(), Some('.'))
            ]
        );
    }
}
