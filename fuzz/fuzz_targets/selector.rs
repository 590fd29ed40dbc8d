//! Arbitrary text into the label selector parser, `Selector::parse`.
//!
//! Proves that parsing never panics and keeps what `atbus_discovery::selector` documents:
//!
//! - An error's column counts characters from 1 and lies within the input, the end of the input
//!   being one column past its last character: an unexpected token is found, as written, at that
//!   column; the end of the input is reported at the end only; a bad key or value starts at that
//!   column, is reported under the right field and part, and the label rules refuse it.
//! - A selector that parses holds requirements sorted by key, each with a valid key, valid values
//!   (sorted, without repeats) as many as its operator takes, and equal to what
//!   `Requirement::new` builds from the same parts; collecting them gives the same selector.
//! - Its `Display` is the canonical form: the requirements joined by `,`, empty only for the empty
//!   selector, and it parses back to an equal selector that prints the same text. So does that
//!   text with `=` written `==`, and with whitespace around its tokens.
//! - Matching follows the table of the module docs, for the selector and for the one parsed back,
//!   on label sets drawn from the input: its words paired as keys and values, and sets on the
//!   selector's keys that leave each key out or give it one of its values, the empty value or
//!   another one. The empty label set is matched exactly when every requirement asks for absence
//!   or for another value.
//!
//! Input: the bytes as text (invalid UTF-8 replaced by U+FFFD); their hash seeds the choices.
#![no_main]

use std::collections::BTreeMap;
use std::hint::black_box;

use atbus_discovery::validate::{Part, validate_label_key, validate_label_value};
use atbus_discovery::{
    Found, Operator, Requirement, Selector, SelectorError, SelectorErrorKind, ValidationError,
};
use libfuzzer_sys::fuzz_target;

/// The whitespace the parser skips (space, tab, CR, LF).
const WHITESPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_whitespace(c: char) -> bool {
    WHITESPACE.contains(&c)
}

/// The characters that end a word, as the parser's module docs list them.
fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

/// The words of `text`: runs of characters that are neither whitespace nor special.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c| is_whitespace(c) || is_special(c))
        .filter(|word| !word.is_empty())
}

/// A xorshift64 PRNG for the choices the input's hash seeds.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8]) -> Self {
        // FNV-1a.
        let hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng(hash | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`, which must not be 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The text of `input` from the 1-based character `column` on (empty one past the end).
fn from_column(input: &str, column: usize) -> &str {
    let start = input
        .char_indices()
        .nth(column - 1)
        .map_or(input.len(), |(i, _)| i);
    &input[start..]
}

/// Checks a parse error against the input it came from.
fn check_error(input: &str, error: &SelectorError) {
    let chars = input.chars().count();
    let column = error.column;
    assert!(
        (1..=chars + 1).contains(&column),
        "{input:?}: column {column} outside 1..={}: {error}",
        chars + 1
    );
    let rest = from_column(input, column);
    match &error.kind {
        SelectorErrorKind::Unexpected { expected, found } => {
            assert!(!expected.is_empty(), "{input:?}: {error}");
            match found {
                Found::EndOfInput => assert_eq!(
                    column,
                    chars + 1,
                    "{input:?}: the end of the input reported before it: {error}"
                ),
                Found::Token(token) => {
                    assert!(!token.is_empty(), "{input:?}: an empty token: {error}");
                    assert!(
                        rest.starts_with(token.as_str()),
                        "{input:?}: {token:?} is not at column {column}: {error}"
                    );
                }
            }
        }
        SelectorErrorKind::Invalid(invalid) => check_invalid(input, rest, error, invalid),
    }
}

/// Checks an error for a bad key or value, which starts at the error's column (`rest`).
fn check_invalid(input: &str, rest: &str, error: &SelectorError, invalid: &ValidationError) {
    let word = words(rest).next().unwrap_or("");
    assert!(
        !word.is_empty() && rest.starts_with(word),
        "{input:?}: no key or value at column {}: {error}",
        error.column
    );
    let value = invalid.value.as_str();
    match invalid.part {
        Part::Value => {
            assert_eq!(word, value, "{input:?}: {error}");
            assert!(
                invalid.field.starts_with("selector value for \""),
                "{input:?}: {error}"
            );
            assert!(validate_label_value(word).is_err(), "{input:?}: {error}");
        }
        Part::Key | Part::KeyPrefix | Part::KeyName => {
            let part_of_key = match invalid.part {
                Part::Key => word == value,
                Part::KeyPrefix => word.strip_prefix(value).is_some_and(|n| n.starts_with('/')),
                _ => word.strip_suffix(value).is_some_and(|p| p.ends_with('/')) || word == value,
            };
            assert!(
                part_of_key,
                "{input:?}: {value:?} is not in {word:?}: {error}"
            );
            assert_eq!(invalid.field, "selector key", "{input:?}: {error}");
            assert!(validate_label_key(word).is_err(), "{input:?}: {error}");
        }
        Part::NodeName => panic!("{input:?}: a node name error from a selector: {error}"),
    }
}

/// The values `operator` takes: `(at least, at most)`.
fn value_count(operator: Operator) -> (usize, usize) {
    match operator {
        Operator::Equals | Operator::NotEquals => (1, 1),
        Operator::In | Operator::NotIn => (1, usize::MAX),
        Operator::Exists | Operator::DoesNotExist => (0, 0),
    }
}

/// Checks the requirements of a selector that parsed, and returns its canonical text.
fn check_selector(input: &str, selector: &Selector) -> String {
    let requirements = selector.requirements();
    for pair in requirements.windows(2) {
        assert!(
            pair[0].key() <= pair[1].key(),
            "{input:?}: requirements out of key order: {selector:?}"
        );
    }
    for requirement in requirements {
        let key = requirement.key();
        let operator = requirement.operator();
        let values: Vec<&String> = requirement.values().collect();
        assert_eq!(
            validate_label_key(key),
            Ok(()),
            "{input:?}: {requirement:?}"
        );
        for value in &values {
            assert_eq!(
                validate_label_value(value),
                Ok(()),
                "{input:?}: {requirement:?}"
            );
        }
        assert!(
            values.windows(2).all(|pair| pair[0] < pair[1]),
            "{input:?}: values unsorted or repeated: {requirement:?}"
        );
        let (min, max) = value_count(operator);
        assert!(
            (min..=max).contains(&values.len()),
            "{input:?}: {operator:?} with {} values",
            values.len()
        );
        assert_eq!(
            Requirement::new(key, operator, values.iter().copied().cloned()).as_ref(),
            Ok(requirement),
            "{input:?}: Requirement::new disagrees with the parser"
        );
    }
    let collected: Selector = requirements.iter().cloned().collect();
    assert_eq!(&collected, selector, "{input:?}: collecting reorders");

    let text = selector.to_string();
    let joined: Vec<String> = requirements.iter().map(ToString::to_string).collect();
    assert_eq!(text, joined.join(","), "{input:?}");
    assert_eq!(
        selector.is_everything(),
        requirements.is_empty(),
        "{input:?}"
    );
    assert_eq!(text.is_empty(), requirements.is_empty(), "{input:?}");
    text
}

/// Parses text that must give `selector`.
fn reparse(input: &str, what: &str, text: &str, selector: &Selector) -> Selector {
    match Selector::parse(text) {
        Ok(again) => {
            assert_eq!(
                &again, selector,
                "{input:?}: {what} {text:?} parses differently"
            );
            again
        }
        Err(error) => panic!("{input:?}: {what} {text:?} does not parse: {error}"),
    }
}

/// `text` with `=` written `==` (a canonical text has no `==`, and no `=` in keys or values).
fn double_equals(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut previous = None;
    for c in text.chars() {
        out.push(c);
        if c == '=' && previous != Some('!') {
            out.push('=');
        }
        previous = Some(c);
    }
    out
}

/// `text` with whitespace added at the ends and, at random, between its tokens: next to a
/// special character or to whitespace, but never inside `!=` or `==`.
fn spaced(text: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let pad = |out: &mut String, rng: &mut Rng| {
        for _ in 0..rng.below(3) {
            out.push(WHITESPACE[rng.below(WHITESPACE.len())]);
        }
    };
    pad(&mut out, rng);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if let Some(p) = previous {
            let boundary = is_special(p) || is_special(c) || is_whitespace(p) || is_whitespace(c);
            let operator = matches!(p, '!' | '=') && c == '=';
            if boundary && !operator {
                pad(&mut out, rng);
            }
        }
        out.push(c);
        previous = Some(c);
    }
    pad(&mut out, rng);
    out
}

/// Whether `requirement` holds on `labels`, by the table of the module docs.
fn expected_match(requirement: &Requirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(requirement.key());
    let listed = value.is_some_and(|v| requirement.values().any(|listed| listed == v));
    match requirement.operator() {
        Operator::Equals | Operator::In => listed,
        Operator::NotEquals | Operator::NotIn => !listed,
        Operator::Exists => value.is_some(),
        Operator::DoesNotExist => value.is_none(),
    }
}

/// Label sets to match: the input's words paired as keys and values, the empty set, and sets on
/// the selector's keys (and `in`) giving each key no value, one of its values, the empty value or
/// another value.
fn label_sets(input: &str, selector: &Selector, rng: &mut Rng) -> Vec<BTreeMap<String, String>> {
    let words: Vec<&str> = words(input).take(64).collect();
    let paired = words
        .chunks(2)
        .map(|pair| {
            (
                pair[0].to_owned(),
                pair.get(1).copied().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut sets = vec![BTreeMap::new(), paired];
    let mut keys: Vec<&str> = selector
        .requirements()
        .iter()
        .map(Requirement::key)
        .collect();
    keys.push("in");
    keys.sort_unstable();
    keys.dedup();
    let values: Vec<&str> = selector
        .requirements()
        .iter()
        .flat_map(Requirement::values)
        .map(String::as_str)
        .chain(words.iter().copied())
        .chain(["", "in", "other"])
        .collect();
    for _ in 0..8 {
        let mut set = BTreeMap::new();
        for &key in &keys {
            let own: Vec<&String> = selector
                .requirements()
                .iter()
                .filter(|r| r.key() == key)
                .flat_map(Requirement::values)
                .collect();
            let value = match rng.below(4) {
                0 => continue,
                1 if !own.is_empty() => own[rng.below(own.len())].as_str(),
                _ => values[rng.below(values.len())],
            };
            set.insert(key.to_owned(), value.to_owned());
        }
        sets.push(set);
    }
    sets
}

/// Checks matching of `selector` and of the selectors equal to it on every set, and returns
/// which sets it matched.
fn check_matches(
    input: &str,
    selector: &Selector,
    again: &[Selector],
    sets: &[BTreeMap<String, String>],
) -> u64 {
    let mut matched = 0;
    for (i, labels) in sets.iter().enumerate() {
        let expected = selector
            .requirements()
            .iter()
            .all(|requirement| expected_match(requirement, labels));
        for requirement in selector.requirements() {
            assert_eq!(
                requirement.matches(labels),
                expected_match(requirement, labels),
                "{input:?}: {requirement} on {labels:?}"
            );
        }
        assert_eq!(
            selector.matches(labels),
            expected,
            "{input:?} on {labels:?}"
        );
        for other in again {
            assert_eq!(
                other.matches(labels),
                expected,
                "{input:?}: {other} on {labels:?}"
            );
        }
        if labels.is_empty() {
            let only_absence = selector.requirements().iter().all(|r| {
                matches!(
                    r.operator(),
                    Operator::NotEquals | Operator::NotIn | Operator::DoesNotExist
                )
            });
            assert_eq!(expected, only_absence, "{input:?} on the empty set");
        }
        assert!(Selector::everything().matches(labels));
        matched |= u64::from(expected) << (i % 64);
    }
    matched
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let input = input.as_ref();
    let mut rng = Rng::new(data);
    let parsed = Selector::parse(input);
    let mut matched = 0;
    match &parsed {
        Ok(selector) => {
            let mut again = Vec::new();
            let text = check_selector(input, selector);
            let canonical = reparse(input, "the canonical form", &text, selector);
            assert_eq!(
                canonical.to_string(),
                text,
                "{input:?}: the canonical form moves"
            );
            let doubled = double_equals(&text);
            again.push(reparse(input, "the form with `==`", &doubled, selector));
            let spaced_text = spaced(&text, &mut rng);
            again.push(reparse(input, "the spaced form", &spaced_text, selector));
            let spaced_doubled = spaced(&doubled, &mut rng);
            again.push(reparse(
                input,
                "the spaced form with `==`",
                &spaced_doubled,
                selector,
            ));
            again.push(canonical);
            let sets = label_sets(input, selector, &mut rng);
            matched = check_matches(input, selector, &again, &sets);
        }
        Err(error) => check_error(input, error),
    }
    black_box((&parsed, matched));
});
