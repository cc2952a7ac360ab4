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

/// Splits at sentence ends (. ! ?) followed by a space, keeping the punctuation. A full stop
/// after a single letter or a common abbreviation does not end a sentence.
pub fn sentences(text: &str) -> Vec<String> {
    const ABBREVIATIONS: [&str; 12] = [
        "mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "prof", "no", "approx",
    ];
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
        if c == '.' {
            let word = current
                .trim_end_matches('.')
                .rsplit(char::is_whitespace)
                .next()
                .unwrap_or("")
                .to_lowercase();
            if word.chars().count() == 1 || ABBREVIATIONS.contains(&word.as_str()) {
                continue;
            }
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
