//! Kubernetes rules for node names and label keys and values.
//!
//! A node name is a DNS subdomain (RFC 1123, lowercase, at most 253 characters). A label key is a
//! name of at most 63 characters, optionally prefixed by a DNS subdomain and a `/`
//! (`example.com/app`); a label value is empty or a name of at most 63 characters. The checks are
//! those of Kubernetes' `IsDNS1123Subdomain`, `IsQualifiedName` and `IsValidLabelValue`, written
//! out by hand. A [`ValidationError`] names the field, the part of it that is wrong and the rule
//! it breaks, so its message tells the user what to change.

use std::collections::BTreeMap;
use std::fmt;

/// The longest name part of a label key, and the longest label value, in characters.
pub const MAX_NAME_LENGTH: usize = 63;

/// The longest DNS subdomain (node name or label key prefix), in characters.
pub const MAX_SUBDOMAIN_LENGTH: usize = 253;

/// Which part of a field breaks a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A node name, a DNS subdomain.
    NodeName,
    /// A label key as a whole (used for rules about its shape, such as the number of `/`).
    Key,
    /// The DNS-subdomain prefix of a label key, before the `/`.
    KeyPrefix,
    /// The name of a label key, after the `/` if there is a prefix.
    KeyName,
    /// A label value.
    Value,
}

impl Part {
    /// The characters this part may hold.
    fn charset(self) -> Charset {
        match self {
            Part::NodeName | Part::KeyPrefix => Charset::DnsSubdomain,
            Part::Key | Part::KeyName | Part::Value => Charset::Name,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::NodeName => "the node name",
            Part::Key => "the key",
            Part::KeyPrefix => "the key prefix",
            Part::KeyName => "the key name",
            Part::Value => "the value",
        })
    }
}

/// The characters a part may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// A DNS subdomain: `a-z`, `0-9`, `-` and `.`.
    DnsSubdomain,
    /// A name (label key name or label value): `A-Z`, `a-z`, `0-9`, `-`, `_` and `.`.
    Name,
}

impl Charset {
    /// Whether `c` may appear anywhere in the part.
    fn allows(self, c: char) -> bool {
        match self {
            Charset::DnsSubdomain => {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
            }
            Charset::Name => c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
        }
    }

    /// Whether `c` may start or end the part (or, for a DNS subdomain, sit next to a `.`).
    fn is_alphanumeric(self, c: char) -> bool {
        match self {
            Charset::DnsSubdomain => c.is_ascii_lowercase() || c.is_ascii_digit(),
            Charset::Name => c.is_ascii_alphanumeric(),
        }
    }

    /// The alphanumeric characters of this set, for messages.
    fn alphanumerics(self) -> &'static str {
        match self {
            Charset::DnsSubdomain => "a-z, 0-9",
            Charset::Name => "A-Z, a-z, 0-9",
        }
    }
}

impl fmt::Display for Charset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Charset::DnsSubdomain => "lowercase alphanumeric characters (a-z, 0-9), '-' or '.'",
            Charset::Name => "alphanumeric characters (A-Z, a-z, 0-9), '-', '_' or '.'",
        })
    }
}

/// A rule of the Kubernetes naming conventions, as broken by a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The part is empty where it must not be.
    Empty,
    /// The part is longer than allowed.
    TooLong {
        /// The most characters allowed.
        max: usize,
        /// The characters the part has.
        length: usize,
    },
    /// The part holds a character outside its set.
    InvalidCharacter {
        /// The set the part must stay within.
        allowed: Charset,
        /// The first character outside it.
        found: char,
        /// Its position in the part, counting characters from 1.
        position: usize,
    },
    /// The part starts or ends with a character that is allowed but not alphanumeric.
    StartEnd {
        /// The set of the part, which says which alphanumerics are allowed.
        allowed: Charset,
    },
    /// A `.` of a DNS subdomain has a non-alphanumeric character (or nothing) next to it.
    DotNeighbours {
        /// The position of that `.` in the part, counting characters from 1.
        position: usize,
    },
    /// A label key has more than one `/`.
    MultipleSlashes,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Empty => f.write_str("must not be empty"),
            Rule::TooLong { max, length } => {
                write!(f, "must be at most {max} characters (it has {length})")
            }
            Rule::InvalidCharacter {
                allowed,
                found,
                position,
            } => write!(
                f,
                "must consist of {allowed}; it has {found:?} at position {position}"
            ),
            Rule::StartEnd { allowed } => write!(
                f,
                "must start and end with an alphanumeric character ({})",
                allowed.alphanumerics()
            ),
            Rule::DotNeighbours { position } => write!(
                f,
                "must have an alphanumeric character (a-z, 0-9) on both sides of every '.'; \
                 the '.' at position {position} does not"
            ),
            Rule::MultipleSlashes => f.write_str(
                "must contain at most one '/', between an optional DNS-subdomain prefix and the \
                 name (as in \"example.com/app\")",
            ),
        }
    }
}

/// A name, label key or label value that breaks the Kubernetes rules.
///
/// The message reads `field: part "value" rule`, for instance `labels["app"]: the value "-web"
/// must start and end with an alphanumeric character (A-Z, a-z, 0-9)`.
///
/// ```
/// use atbus_discovery::validate::{validate_node_name, Part, Rule};
///
/// let error = validate_node_name("web-").unwrap_err();
/// assert_eq!(error.field, "name");
/// assert_eq!(error.part, Part::NodeName);
/// assert!(matches!(error.rule, Rule::StartEnd { .. }));
/// assert_eq!(
///     error.to_string(),
///     "name: the node name \"web-\" must start and end with an alphanumeric character (a-z, 0-9)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {part} {value:?} {rule}")]
pub struct ValidationError {
    /// The field holding the bad string: `name`, `labels["app"]`, `label key`...
    pub field: String,
    /// Which part of the field breaks the rule.
    pub part: Part,
    /// That part, as given.
    pub value: String,
    /// The rule it breaks.
    pub rule: Rule,
}

impl ValidationError {
    /// The same error reported against another field name, for callers that validate a string
    /// nested in a larger record (`metadata.labels["app"]`, say).
    ///
    /// ```
    /// use atbus_discovery::validate::validate_label_value;
    ///
    /// let error = validate_label_value("a b").unwrap_err().at("metadata.labels[\"app\"]");
    /// assert!(error.to_string().starts_with("metadata.labels[\"app\"]: the value \"a b\""));
    /// ```
    #[must_use]
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    fn new(part: Part, value: &str, rule: Rule) -> Self {
        ValidationError {
            field: String::new(),
            part,
            value: value.to_owned(),
            rule,
        }
    }
}

/// Checks a node name: a DNS subdomain of at most 253 characters, made of lowercase
/// alphanumerics, `-` and `.`, with an alphanumeric at both ends and on both sides of every `.`.
///
/// The error names the field `name`.
///
/// ```
/// use atbus_discovery::validate::validate_node_name;
///
/// assert!(validate_node_name("relay-0.eu-west").is_ok());
/// assert!(validate_node_name("Relay").is_err());
/// ```
pub fn validate_node_name(name: &str) -> Result<(), ValidationError> {
    check_subdomain(Part::NodeName, name).map_err(|e| e.at("name"))
}

/// Checks a label key: an optional DNS-subdomain prefix of at most 253 characters and a `/`, then
/// a name of at most 63 alphanumerics, `-`, `_` and `.`, with an alphanumeric at both ends.
///
/// The error names the field `label key`; [`validate_labels`] names it after the key instead.
///
/// ```
/// use atbus_discovery::validate::validate_label_key;
///
/// assert!(validate_label_key("app").is_ok());
/// assert!(validate_label_key("atbus.io/Relay_Group").is_ok());
/// assert!(validate_label_key("atbus.io/").is_err());
/// ```
pub fn validate_label_key(key: &str) -> Result<(), ValidationError> {
    check_key(key).map_err(|e| e.at("label key"))
}

/// Checks a label value: empty, or a name of at most 63 alphanumerics, `-`, `_` and `.`, with an
/// alphanumeric at both ends.
///
/// The error names the field `label value`; [`validate_labels`] names it after the key instead.
///
/// ```
/// use atbus_discovery::validate::validate_label_value;
///
/// assert!(validate_label_value("").is_ok());
/// assert!(validate_label_value("v1.2_rc-3").is_ok());
/// assert!(validate_label_value("v1/2").is_err());
/// ```
pub fn validate_label_value(value: &str) -> Result<(), ValidationError> {
    check_value(value).map_err(|e| e.at("label value"))
}

/// Checks every key and value of a label set, in key order, and reports the first violation
/// against the field `labels["key"]`.
///
/// ```
/// use std::collections::BTreeMap;
/// use atbus_discovery::validate::validate_labels;
///
/// let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
/// assert!(validate_labels(&labels).is_ok());
///
/// labels.insert("tier".to_owned(), "front end".to_owned());
/// let error = validate_labels(&labels).unwrap_err();
/// assert_eq!(error.field, "labels[\"tier\"]");
/// ```
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (key, value) in labels {
        check_key(key)
            .and_then(|()| check_value(value))
            .map_err(|e| e.at(format!("labels[{key:?}]")))?;
    }
    Ok(())
}

/// A label key, with the error's field left empty.
pub(crate) fn check_key(key: &str) -> Result<(), ValidationError> {
    let (prefix, name) = match key.split_once('/') {
        Some((_, rest)) if rest.contains('/') => {
            return Err(ValidationError::new(Part::Key, key, Rule::MultipleSlashes));
        }
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_subdomain(Part::KeyPrefix, prefix)?;
    }
    if name.is_empty() {
        return Err(ValidationError::new(Part::KeyName, name, Rule::Empty));
    }
    check_name(Part::KeyName, name)
}

/// A label value, with the error's field left empty.
pub(crate) fn check_value(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(Part::Value, value)
}

/// A non-empty name: length, characters, ends.
fn check_name(part: Part, s: &str) -> Result<(), ValidationError> {
    check_common(part, s, MAX_NAME_LENGTH)
}

/// A DNS subdomain: the common checks, then the neighbours of every `.`.
fn check_subdomain(part: Part, s: &str) -> Result<(), ValidationError> {
    check_common(part, s, MAX_SUBDOMAIN_LENGTH)?;
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '.' {
            continue;
        }
        let alnum = |c: Option<&char>| c.is_some_and(|&c| Charset::DnsSubdomain.is_alphanumeric(c));
        let before = i.checked_sub(1).and_then(|j| chars.get(j));
        if !alnum(before) || !alnum(chars.get(i + 1)) {
            return Err(ValidationError::new(
                part,
                s,
                Rule::DotNeighbours { position: i + 1 },
            ));
        }
    }
    Ok(())
}

/// Non-empty, at most `max` characters, within the part's set, alphanumeric at both ends.
fn check_common(part: Part, s: &str, max: usize) -> Result<(), ValidationError> {
    let charset = part.charset();
    let length = s.chars().count();
    if length == 0 {
        return Err(ValidationError::new(part, s, Rule::Empty));
    }
    if length > max {
        return Err(ValidationError::new(part, s, Rule::TooLong { max, length }));
    }
    if let Some((i, found)) = s.chars().enumerate().find(|&(_, c)| !charset.allows(c)) {
        let rule = Rule::InvalidCharacter {
            allowed: charset,
            found,
            position: i + 1,
        };
        return Err(ValidationError::new(part, s, rule));
    }
    let first = s.chars().next();
    let last = s.chars().next_back();
    let alnum = |c: Option<char>| c.is_some_and(|c| charset.is_alphanumeric(c));
    if !alnum(first) || !alnum(last) {
        return Err(ValidationError::new(
            part,
            s,
            Rule::StartEnd { allowed: charset },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn valid_node_names_pass() {
        for name in [
            "a",
            "0",
            "relay-0",
            "relay-0.eu-west.example",
            &"a".repeat(253),
        ] {
            assert_eq!(validate_node_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn node_name_empty_is_refused() {
        let e = validate_node_name("").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.part, &e.rule),
            ("name", Part::NodeName, &Rule::Empty)
        );
        assert_eq!(e.to_string(), "name: the node name \"\" must not be empty");
    }

    #[test]
    fn node_name_over_253_characters_is_refused() {
        let e = validate_node_name(&"a".repeat(254)).unwrap_err();
        assert_eq!(e.field, "name");
        assert_eq!(
            e.rule,
            Rule::TooLong {
                max: 253,
                length: 254
            }
        );
        assert!(
            e.to_string()
                .ends_with("must be at most 253 characters (it has 254)")
        );
    }

    #[test]
    fn node_name_uppercase_is_refused_with_its_position() {
        let e = validate_node_name("relayA").unwrap_err();
        assert_eq!(
            e.rule,
            Rule::InvalidCharacter {
                allowed: Charset::DnsSubdomain,
                found: 'A',
                position: 6
            }
        );
        assert_eq!(
            e.to_string(),
            "name: the node name \"relayA\" must consist of lowercase alphanumeric characters \
             (a-z, 0-9), '-' or '.'; it has 'A' at position 6"
        );
    }

    #[test]
    fn node_name_underscore_and_non_ascii_are_refused() {
        for (name, found, position) in [("a_b", '_', 2), ("né", 'é', 2), ("a b", ' ', 2)] {
            let e = validate_node_name(name).unwrap_err();
            assert_eq!(
                e.rule,
                Rule::InvalidCharacter {
                    allowed: Charset::DnsSubdomain,
                    found,
                    position
                },
                "{name:?}"
            );
        }
    }

    #[test]
    fn node_name_must_start_and_end_alphanumeric() {
        for name in ["-a", "a-", ".a", "a."] {
            let e = validate_node_name(name).unwrap_err();
            assert_eq!(
                e.rule,
                Rule::StartEnd {
                    allowed: Charset::DnsSubdomain
                },
                "{name:?}"
            );
        }
    }

    #[test]
    fn node_name_dot_needs_alphanumeric_neighbours() {
        for (name, position) in [("a..b", 2), ("a-.b", 3), ("a.-b", 2)] {
            let e = validate_node_name(name).unwrap_err();
            assert_eq!(e.rule, Rule::DotNeighbours { position }, "{name:?}");
        }
        let e = validate_node_name("a-.b").unwrap_err();
        assert!(e.to_string().ends_with("the '.' at position 3 does not"));
    }

    #[test]
    fn valid_label_keys_pass() {
        let long_prefix = format!("{}.io", "a".repeat(250));
        for key in [
            "a",
            "App_Name.v1-x",
            "atbus.io/app",
            "in",
            &"k".repeat(63),
            &format!("{long_prefix}/{}", "n".repeat(63)),
        ] {
            assert_eq!(validate_label_key(key), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn label_key_empty_name_is_refused() {
        for key in ["", "atbus.io/"] {
            let e = validate_label_key(key).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.part, &e.rule),
                ("label key", Part::KeyName, &Rule::Empty),
                "{key:?}"
            );
        }
    }

    #[test]
    fn label_key_empty_prefix_is_refused() {
        let e = validate_label_key("/app").unwrap_err();
        assert_eq!((e.part, &e.rule), (Part::KeyPrefix, &Rule::Empty));
        assert_eq!(
            e.to_string(),
            "label key: the key prefix \"\" must not be empty"
        );
    }

    #[test]
    fn label_key_two_slashes_are_refused() {
        let e = validate_label_key("a/b/c").unwrap_err();
        assert_eq!((e.part, &e.rule), (Part::Key, &Rule::MultipleSlashes));
        assert!(e.to_string().contains("at most one '/'"));
    }

    #[test]
    fn label_key_name_over_63_characters_is_refused() {
        let e = validate_label_key(&format!("x.io/{}", "n".repeat(64))).unwrap_err();
        assert_eq!(e.part, Part::KeyName);
        assert_eq!(
            e.rule,
            Rule::TooLong {
                max: 63,
                length: 64
            }
        );
    }

    #[test]
    fn label_key_prefix_over_253_characters_is_refused() {
        let e = validate_label_key(&format!("{}/app", "p".repeat(254))).unwrap_err();
        assert_eq!(e.part, Part::KeyPrefix);
        assert_eq!(
            e.rule,
            Rule::TooLong {
                max: 253,
                length: 254
            }
        );
    }

    #[test]
    fn label_key_prefix_is_a_lowercase_subdomain() {
        let e = validate_label_key("Atbus.io/app").unwrap_err();
        assert_eq!(e.part, Part::KeyPrefix);
        assert_eq!(
            e.rule,
            Rule::InvalidCharacter {
                allowed: Charset::DnsSubdomain,
                found: 'A',
                position: 1
            }
        );
        let e = validate_label_key("atbus..io/app").unwrap_err();
        assert_eq!(
            (e.part, &e.rule),
            (Part::KeyPrefix, &Rule::DotNeighbours { position: 6 })
        );
    }

    #[test]
    fn label_key_name_characters_and_ends() {
        let e = validate_label_key("app=x").unwrap_err();
        assert_eq!(
            e.rule,
            Rule::InvalidCharacter {
                allowed: Charset::Name,
                found: '=',
                position: 4
            }
        );
        let e = validate_label_key("atbus.io/_app").unwrap_err();
        assert_eq!(
            (e.part, &e.rule),
            (
                Part::KeyName,
                &Rule::StartEnd {
                    allowed: Charset::Name
                }
            )
        );
        assert_eq!(
            e.to_string(),
            "label key: the key name \"_app\" must start and end with an alphanumeric character \
             (A-Z, a-z, 0-9)"
        );
    }

    #[test]
    fn label_values() {
        assert_eq!(validate_label_value(""), Ok(()));
        assert_eq!(validate_label_value(&"v".repeat(63)), Ok(()));
        let e = validate_label_value(&"v".repeat(64)).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.part, &e.rule),
            (
                "label value",
                Part::Value,
                &Rule::TooLong {
                    max: 63,
                    length: 64
                }
            )
        );
        let e = validate_label_value("a/b").unwrap_err();
        assert_eq!(
            e.rule,
            Rule::InvalidCharacter {
                allowed: Charset::Name,
                found: '/',
                position: 2
            }
        );
        let e = validate_label_value("web.").unwrap_err();
        assert_eq!(
            e.rule,
            Rule::StartEnd {
                allowed: Charset::Name
            }
        );
    }

    #[test]
    fn label_set_errors_name_the_key() {
        assert_eq!(validate_labels(&BTreeMap::new()), Ok(()));
        assert_eq!(
            validate_labels(&labels(&[("app", "web"), ("atbus.io/tier", "")])),
            Ok(())
        );

        let e = validate_labels(&labels(&[("app", "web"), ("tier", "-front")])).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.part),
            ("labels[\"tier\"]", Part::Value)
        );
        assert_eq!(
            e.to_string(),
            "labels[\"tier\"]: the value \"-front\" must start and end with an alphanumeric \
             character (A-Z, a-z, 0-9)"
        );

        let e = validate_labels(&labels(&[("bad key", "x")])).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.part),
            ("labels[\"bad key\"]", Part::KeyName)
        );
    }

    #[test]
    fn at_renames_the_field() {
        let e = validate_node_name("").unwrap_err().at("record.name");
        assert_eq!(e.field, "record.name");
        assert!(e.to_string().starts_with("record.name: "));
    }
}
