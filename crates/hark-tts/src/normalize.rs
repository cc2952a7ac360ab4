//! What an LLM writes, as it should be said: numbers, money, percentages, times, dates, ordinals,
//! units, abbreviations and symbols spelled out in words, so nothing is read out as a symbol and
//! the voice never has to guess ("3/4", "$5", "°C").

/// `text` (already free of markdown, see [`crate::text::speakable`]) with every number and symbol
/// in words.
pub fn normalize(text: &str) -> String {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let (lead, core, trail) = split_punctuation(tokens[i]);
        let next = tokens.get(i + 1).map(|t| split_punctuation(t).1);
        let mut consumed_next = false;
        let spoken = if let Some(words) = abbreviation(core, next) {
            // The abbreviation's full stop also ended the sentence when nothing follows.
            if next.is_none() {
                format!("{words}.")
            } else {
                words.to_string()
            }
        } else if let Some((words, took_next)) = number_phrase(core, next) {
            consumed_next = took_next;
            words
        } else {
            symbols(core)
        };
        let trail = if consumed_next {
            split_punctuation(tokens[i + 1]).2
        } else {
            trail
        };
        let piece = format!("{}{}{}", lead_words(lead), spoken, trail);
        if !piece.trim().is_empty() {
            out.push(piece.trim().to_string());
        }
        i += if consumed_next { 2 } else { 1 };
    }
    out.join(" ")
}

/// Opening punctuation kept as is (quotes, brackets), the word, and closing punctuation.
fn split_punctuation(token: &str) -> (&str, &str, &str) {
    let start = token
        .find(|c: char| c.is_alphanumeric() || "$€£-+#@°".contains(c))
        .unwrap_or(token.len());
    let end = token
        .rfind(|c: char| c.is_alphanumeric() || c == '%' || c == '°')
        .map_or(start, |e| {
            e + token[e..].chars().next().map_or(1, char::len_utf8)
        });
    let end = end.max(start);
    // A full stop that belongs to an abbreviation stays with the word.
    let core_end = if token[end..].starts_with('.') && is_abbreviation(&token[start..end + 1]) {
        end + 1
    } else {
        end
    };
    (&token[..start], &token[start..core_end], &token[core_end..])
}

fn lead_words(lead: &str) -> String {
    lead.chars()
        .filter(|c| matches!(c, '"' | '\'' | '('))
        .collect()
}

const ABBREVIATIONS: [(&str, &str); 16] = [
    ("Dr.", "Doctor"),
    ("Mr.", "Mister"),
    ("Mrs.", "Missus"),
    ("Ms.", "Miz"),
    ("Prof.", "Professor"),
    ("St.", "Saint"),
    ("Jr.", "Junior"),
    ("e.g.", "for example"),
    ("i.e.", "that is"),
    ("etc.", "et cetera"),
    ("vs.", "versus"),
    ("approx.", "approximately"),
    ("No.", "number"),
    ("U.S.", "U S"),
    ("a.m.", "a m"),
    ("p.m.", "p m"),
];

fn is_abbreviation(word: &str) -> bool {
    ABBREVIATIONS
        .iter()
        .any(|(a, _)| a.eq_ignore_ascii_case(word))
}

fn abbreviation(word: &str, next: Option<&str>) -> Option<&'static str> {
    let (_, spoken) = ABBREVIATIONS
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(word))?;
    // "No." is "number" only before a number.
    if word.eq_ignore_ascii_case("No.")
        && !next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
    {
        return None;
    }
    Some(spoken)
}

/// Units read after a number: (written, singular, plural).
const UNITS: [(&str, &str, &str); 26] = [
    ("km", "kilometer", "kilometers"),
    ("m", "meter", "meters"),
    ("cm", "centimeter", "centimeters"),
    ("mm", "millimeter", "millimeters"),
    ("mi", "mile", "miles"),
    ("ft", "foot", "feet"),
    ("in", "inch", "inches"),
    ("kg", "kilogram", "kilograms"),
    ("g", "gram", "grams"),
    ("mg", "milligram", "milligrams"),
    ("lb", "pound", "pounds"),
    ("lbs", "pound", "pounds"),
    ("l", "liter", "liters"),
    ("ml", "milliliter", "milliliters"),
    ("km/h", "kilometer per hour", "kilometers per hour"),
    ("mph", "mile per hour", "miles per hour"),
    ("°C", "degree Celsius", "degrees Celsius"),
    ("°F", "degree Fahrenheit", "degrees Fahrenheit"),
    ("°", "degree", "degrees"),
    ("GB", "gigabyte", "gigabytes"),
    ("MB", "megabyte", "megabytes"),
    ("KB", "kilobyte", "kilobytes"),
    ("ms", "millisecond", "milliseconds"),
    ("s", "second", "seconds"),
    ("min", "minute", "minutes"),
    ("h", "hour", "hours"),
];

fn unit(written: &str) -> Option<(&'static str, &'static str)> {
    UNITS
        .iter()
        .find(|(w, _, _)| *w == written)
        .map(|(_, one, many)| (*one, *many))
}

/// "3pm", "3:30pm", "3.30pm", "11a.m." in words ("three thirty p m"); `None` for anything else.
fn time_with_meridiem(word: &str) -> Option<String> {
    let lower = word.to_lowercase();
    let (rest, letters) = ["a.m.", "p.m.", "a.m", "p.m", "am", "pm"]
        .iter()
        .find_map(|ap| lower.strip_suffix(ap).map(|r| (r, &ap[..1])))?;
    let (h, m) = match rest.split_once([':', '.']) {
        Some((h, m)) if m.len() == 2 => (h.parse::<u64>().ok()?, m.parse::<u64>().ok()?),
        Some(_) => return None,
        None => (rest.parse::<u64>().ok()?, 0),
    };
    if !(1..=12).contains(&h) || m >= 60 {
        return None;
    }
    let minutes = match m {
        0 => String::new(),
        1..=9 => format!(" oh {}", number_words(m)),
        _ => format!(" {}", number_words(m)),
    };
    Some(format!("{}{minutes} {letters} m", number_words(h)))
}

/// A number-like token (and the unit or "am"/"pm" after it, when it takes it) in words; `true`
/// when the next token was used.
fn number_phrase(word: &str, next: Option<&str>) -> Option<(String, bool)> {
    if !word.contains(|c: char| c.is_ascii_digit()) {
        return None;
    }
    // Money: $5, $3.50, €20, £1,000.
    if let Some((symbol, rest)) = ["$", "€", "£"]
        .iter()
        .find_map(|s| word.strip_prefix(s).map(|r| (*s, r)))
    {
        let (major, minor) = match symbol {
            "$" => ("dollar", "cent"),
            "€" => ("euro", "cent"),
            _ => ("pound", "penny"),
        };
        return money(rest, major, minor).map(|w| (w, false));
    }
    // "#1": number one.
    if let Some(rest) = word.strip_prefix('#') {
        return Some((format!("number {}", plain_number(rest)?), false));
    }
    // Percentages.
    if let Some(rest) = word.strip_suffix('%') {
        return Some((format!("{} percent", plain_number(rest)?), false));
    }
    // Times with the meridiem attached: 3pm, 3:30pm, 3.30pm (as British English writes it),
    // 11a.m.
    if let Some(spoken) = time_with_meridiem(word) {
        return Some((spoken, false));
    }
    // Times: 3:30, 12:05, 9:00, with am/pm after.
    if let Some((h, m)) = word.split_once(':') {
        if let (Ok(h), Ok(m)) = (h.parse::<u64>(), m.parse::<u64>()) {
            if h < 24 && m < 60 && word.len() <= 5 {
                let mut words = number_words(h);
                words += &match m {
                    0 => " o'clock".to_string(),
                    1..=9 => format!(" oh {}", number_words(m)),
                    _ => format!(" {}", number_words(m)),
                };
                let meridiem = next.map(|n| n.to_lowercase().replace('.', ""));
                if let Some(ap @ ("am" | "pm")) = meridiem.as_deref() {
                    if m == 0 {
                        words = words.replace(" o'clock", "");
                    }
                    return Some((
                        format!(
                            "{words} {}",
                            ap.chars().map(String::from).collect::<Vec<_>>().join(" ")
                        ),
                        true,
                    ));
                }
                return Some((words, false));
            }
        }
    }
    // ISO dates: 2024-05-01.
    if let Some(date) = iso_date(word) {
        return Some((date, false));
    }
    // Ordinals: 1st, 22nd, 3rd, 4th.
    for suffix in ["st", "nd", "rd", "th"] {
        if let Some(n) = word
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<u64>().ok())
        {
            return Some((ordinal_words(n), false));
        }
    }
    // Fractions: 3/4.
    if let Some((a, b)) = word.split_once('/') {
        if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
            if b > 0 && b <= 10 && a < 100 {
                let denominator = match b {
                    2 => {
                        if a == 1 {
                            "half".to_string()
                        } else {
                            "halves".to_string()
                        }
                    }
                    4 => {
                        if a == 1 {
                            "quarter".to_string()
                        } else {
                            "quarters".to_string()
                        }
                    }
                    _ => {
                        let o = ordinal_words(b);
                        if a == 1 {
                            o
                        } else {
                            format!("{o}s")
                        }
                    }
                };
                return Some((format!("{} {denominator}", number_words(a)), false));
            }
        }
    }
    // A number with its unit attached ("5km") or next ("5 km").
    let digits_end = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-'))
        .unwrap_or(word.len());
    let (num, attached) = word.split_at(digits_end);
    let spoken = plain_number(num)?;
    let one = num.trim_start_matches('-') == "1";
    let name = |u: (&'static str, &'static str)| if one { u.0 } else { u.1 };
    if !attached.is_empty() {
        let u = unit(attached)?;
        return Some((format!("{spoken} {}", name(u)), false));
    }
    if let Some(u) = next.and_then(unit) {
        return Some((format!("{spoken} {}", name(u)), true));
    }
    // "3 pm", "11 a.m."
    if let Some(ap @ ("am" | "pm")) = next.map(|n| n.to_lowercase().replace('.', "")).as_deref() {
        let letters: Vec<String> = ap.chars().map(String::from).collect();
        return Some((format!("{spoken} {}", letters.join(" ")), true));
    }
    // Four digits standing alone read as a year (1984, 2025) when they look like one.
    if num.len() == 4 && !num.starts_with('0') {
        if let Ok(y) = num.parse::<u64>() {
            if (1100..2100).contains(&y) {
                return Some((year_words(y), false));
            }
        }
    }
    Some((spoken, false))
}

fn money(amount: &str, major: &str, minor: &str) -> Option<String> {
    let (whole, cents) = match amount.split_once('.') {
        Some((w, c)) if c.len() == 2 => (w, c.parse::<u64>().ok()?),
        Some(_) => return Some(format!("{} {major}s", plain_number(amount)?)),
        None => (amount, 0),
    };
    let units = whole.replace(',', "").parse::<u64>().ok()?;
    let plural = |n: u64, word: &str| {
        if n == 1 {
            word.to_string()
        } else if word == "penny" {
            "pence".to_string()
        } else {
            format!("{word}s")
        }
    };
    let mut out = format!("{} {}", number_words(units), plural(units, major));
    if cents > 0 {
        out += &format!(" and {} {}", number_words(cents), plural(cents, minor));
    }
    Some(out)
}

/// "2024-05-01" → "May first, twenty twenty four".
fn iso_date(word: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mut parts = word.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d) = (
        y.parse::<u64>().ok()?,
        m.parse::<usize>().ok()?,
        d.parse::<u64>().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!(
        "{} {}, {}",
        MONTHS[m - 1],
        ordinal_words(d),
        year_words(y)
    ))
}

/// An integer or decimal, with thousands separators and a sign allowed.
fn plain_number(text: &str) -> Option<String> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if text.is_empty() || !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    // Thousands separators only in groups of three.
    let groups: Vec<&str> = whole.split(',').collect();
    if groups.len() > 1 && groups[1..].iter().any(|g| g.len() != 3) {
        return None;
    }
    let whole: u64 = groups.concat().parse().ok()?;
    let mut out = number_words(whole);
    if let Some(f) = fraction {
        if f.is_empty() || !f.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        out += " point";
        for d in f.chars() {
            out += " ";
            out += DIGITS[d as usize - '0' as usize];
        }
    }
    Some(if negative {
        format!("minus {out}")
    } else {
        out
    })
}

const DIGITS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

pub use hark_core::wer::number_words;

/// 1 → "first", 22 → "twenty second", 100 → "one hundredth".
pub fn ordinal_words(n: u64) -> String {
    let words = number_words(n);
    let (head, last) = match words.rfind([' ', '-']) {
        Some(i) => words.split_at(i + 1),
        None => ("", words.as_str()),
    };
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// 1984 → "nineteen eighty four", 2005 → "two thousand five", 2024 → "twenty twenty four".
fn year_words(y: u64) -> String {
    let (century, rest) = (y / 100, y % 100);
    if (2000..2010).contains(&y) || rest == 0 && century % 10 == 0 {
        return number_words(y);
    }
    if rest == 0 {
        return format!("{} hundred", number_words(century));
    }
    if rest < 10 {
        return format!("{} oh {}", number_words(century), number_words(rest));
    }
    format!("{} {}", number_words(century), number_words(rest))
}

/// A word with symbols in it: "and/or", "R&D", "a+b", "#1", an address.
fn symbols(word: &str) -> String {
    if word.eq_ignore_ascii_case("and/or") {
        return "and or".into();
    }
    if word.contains("://") || word.starts_with("www.") || word.contains('@') {
        let bare = word
            .split_once("://")
            .map_or(word, |(_, rest)| rest)
            .trim_end_matches('/');
        return bare
            .replace('.', " dot ")
            .replace('/', " slash ")
            .replace('@', " at ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut out = String::with_capacity(word.len());
    let chars: Vec<char> = word.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let spoken = match c {
            '&' => " and ",
            '+' => " plus ",
            '=' => " equals ",
            '@' => " at ",
            '%' => " percent ",
            '°' => " degrees ",
            '#' if chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()) => " number ",
            '/' => " or ",
            '#' | '^' | '~' | '|' | '\\' | '*' | '_' | '<' | '>' => " ",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(spoken);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_words() {
        assert_eq!(number_words(0), "zero");
        assert_eq!(number_words(42), "forty two");
        assert_eq!(number_words(115), "one hundred fifteen");
        assert_eq!(number_words(3_000), "three thousand");
        assert_eq!(
            number_words(1_234_567),
            "one million two hundred thirty four thousand five hundred sixty seven"
        );
        assert_eq!(ordinal_words(1), "first");
        assert_eq!(ordinal_words(22), "twenty second");
        assert_eq!(ordinal_words(40), "fortieth");
        assert_eq!(ordinal_words(12), "twelfth");
    }

    #[test]
    fn what_llms_write_is_spoken_in_words() {
        let cases = [
            ("It costs $3.50.", "It costs three dollars and fifty cents."),
            (
                "That's €20, or £1,000!",
                "That's twenty euros, or one thousand pounds!",
            ),
            ("About 45% of them.", "About forty five percent of them."),
            ("Meet me at 3:30 pm.", "Meet me at three thirty p m."),
            ("It opens at 9:00.", "It opens at nine o'clock."),
            ("Lunch is at 12:05", "Lunch is at twelve oh five"),
            ("Come at 3 PM.", "Come at three p m."),
            ("At 3.30pm on Tuesday.", "At three thirty p m on Tuesday."),
            ("From 9am to 5:05PM.", "From nine a m to five oh five p m."),
            ("It opens at 11a.m.", "It opens at eleven a m."),
            (
                "On 2024-05-01 we left.",
                "On May first, twenty twenty four we left.",
            ),
            (
                "She came 1st, he came 22nd.",
                "She came first, he came twenty second.",
            ),
            ("Add 3/4 cup.", "Add three quarters cup."),
            ("It is 5 km away.", "It is five kilometers away."),
            ("Run 1 km.", "Run one kilometer."),
            ("It weighs 10kg.", "It weighs ten kilograms."),
            ("It was 20°C.", "It was twenty degrees Celsius."),
            ("Pi is 3.14.", "Pi is three point one four."),
            (
                "In 1984 and 2005.",
                "In nineteen eighty four and two thousand five.",
            ),
            ("It fell to -5 today.", "It fell to minus five today."),
            (
                "Dr. Smith, e.g. a doctor, etc.",
                "Doctor Smith, for example a doctor, et cetera.",
            ),
            ("See No. 5.", "See number five."),
            ("R&D and/or sales.", "R and D and or sales."),
            (
                "Visit https://example.com/docs.",
                "Visit example dot com slash docs.",
            ),
            ("We are #1", "We are number one"),
        ];
        for (written, spoken) in cases {
            assert_eq!(normalize(written), spoken, "{written:?}");
        }
    }

    #[test]
    fn plain_words_are_left_alone() {
        let text = "Hello, how are you? I'm fine (thanks).";
        assert_eq!(normalize(text), text);
    }
}
