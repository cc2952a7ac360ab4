//! Word error rate, on text normalised the way people compare transcripts: lower case, no
//! punctuation, numbers written as words ("10" and "ten" are the same word).

/// Lower-cased words with punctuation removed and digits spelt out.
pub fn normalize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '-' | '–' | '—' | '/' | '_' => ' ',
            c => c,
        })
        .collect();
    for raw in cleaned.split_whitespace() {
        let word: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .flat_map(char::to_lowercase)
            .collect();
        let word = word.trim_matches('\'').to_string();
        if word.is_empty() {
            continue;
        }
        let digits: String = word.chars().filter(|c| *c != ',').collect();
        if let Ok(n) = digits.parse::<u64>() {
            words.extend(number_words(n).split(' ').map(str::to_string));
        } else if let Some(n) = ordinal(&word) {
            words.extend(number_words(n).split(' ').map(str::to_string));
        } else {
            words.push(word);
        }
    }
    words
}

/// "1st" → 1 … (spelt as the cardinal; good enough for transcript comparison).
fn ordinal(word: &str) -> Option<u64> {
    ["st", "nd", "rd", "th"]
        .iter()
        .find_map(|suffix| word.strip_suffix(suffix)?.parse().ok())
}

/// English words for `n` ("twenty one", "one hundred five"), up to the trillions.
pub fn number_words(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const SCALES: [(u64, &str); 4] = [
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    if n < 20 {
        return ONES[n as usize].to_string();
    }
    if n < 100 {
        let (t, o) = (n / 10, n % 10);
        return if o == 0 {
            TENS[t as usize].to_string()
        } else {
            format!("{} {}", TENS[t as usize], ONES[o as usize])
        };
    }
    if n < 1000 {
        let (h, rest) = (n / 100, n % 100);
        return if rest == 0 {
            format!("{} hundred", ONES[h as usize])
        } else {
            format!("{} hundred {}", ONES[h as usize], number_words(rest))
        };
    }
    for (scale, name) in SCALES {
        if n >= scale {
            let (high, rest) = (n / scale, n % scale);
            return if rest == 0 {
                format!("{} {name}", number_words(high))
            } else {
                format!("{} {name} {}", number_words(high), number_words(rest))
            };
        }
    }
    n.to_string()
}

/// Word-level edit distance (substitutions + deletions + insertions) between two word lists.
pub fn edit_distance(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut cur = vec![0; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        cur[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let sub = prev[j] + usize::from(r != h);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[hypothesis.len()]
}

/// Word error rate of `hypothesis` against `reference`, after [`normalize`]. An empty reference
/// gives 0 for an empty hypothesis and 1 otherwise.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (r, h) = (normalize(reference), normalize(hypothesis));
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    edit_distance(&r, &h) as f64 / r.len() as f64
}

/// Corpus WER: total edits over total reference words.
pub fn corpus_wer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let (mut edits, mut words) = (0usize, 0usize);
    for (reference, hypothesis) in pairs {
        let (r, h) = (normalize(reference), normalize(hypothesis));
        edits += edit_distance(&r, &h);
        words += r.len();
    }
    if words == 0 {
        0.0
    } else {
        edits as f64 / words as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_words() {
        assert_eq!(
            normalize("Go forward 10 meters."),
            ["go", "forward", "ten", "meters"]
        );
        assert_eq!(number_words(2024), "two thousand twenty four");
        assert_eq!(number_words(105), "one hundred five");
        assert_eq!(
            normalize("the 3rd, twenty-one"),
            ["the", "three", "twenty", "one"]
        );
    }

    #[test]
    fn wer_counts_edits() {
        assert_eq!(wer("go forward ten meters", "Go forward, 10 meters!"), 0.0);
        assert_eq!(wer("a b c d", "a x c"), 0.5);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "hello"), 1.0);
        assert!((corpus_wer([("a b", "a b"), ("c d", "c")]) - 0.25).abs() < 1e-9);
    }
}
