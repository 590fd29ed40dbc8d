//! Label selectors in the Kubernetes syntax, with the Kubernetes semantics.
//!
//! A selector is a list of requirements joined by `,`, all of which must hold (there is no OR):
//!
//! | Requirement               | Matches a label set when                              |
//! |---------------------------|-------------------------------------------------------|
//! | `key=value`, `key==value` | `key` is present with value `value`                   |
//! | `key!=value`              | `key` is missing, or present with another value       |
//! | `key in (a,b)`            | `key` is present with value `a` or `b`                |
//! | `key notin (a,b)`         | `key` is missing, or present with neither `a` nor `b` |
//! | `key`                     | `key` is present, whatever its value                  |
//! | `!key`                    | `key` is missing                                      |
//!
//! This is what Kubernetes' `labels.Parse` accepts (without its numeric `<` and `>`): whitespace
//! may surround every token, a value may be empty (`key=` asks for the empty value, `key in ()`
//! and the empty slots of `key in (a,)` stand for it too), keys and values follow the rules of
//! [`crate::validate`], and the requirements are kept sorted by key. An empty selector matches
//! every label set. [`Selector`]'s `Display` prints the canonical form, which parses back to the
//! same selector. A [`SelectorError`] gives the 1-based column, in characters, of the token it
//! stopped at, and what it expected there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::validate::{ValidationError, check_key, check_value};

mod parse;

/// How a [`Requirement`] tests the value of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// `key=value` or `key==value`: the key is present with this value.
    Equals,
    /// `key!=value`: the key is missing, or present with another value.
    NotEquals,
    /// `key in (a,b)`: the key is present with one of the values.
    In,
    /// `key notin (a,b)`: the key is missing, or present with none of the values.
    NotIn,
    /// `key`: the key is present.
    Exists,
    /// `!key`: the key is missing.
    DoesNotExist,
}

impl Operator {
    /// What the operator needs in values, for [`RequirementError::ValueCount`].
    fn value_rule(self) -> &'static str {
        match self {
            Operator::Equals | Operator::NotEquals => {
                "an equality requirement (=, ==, !=) takes exactly one value"
            }
            Operator::In | Operator::NotIn => {
                "a set requirement (in, notin) takes at least one value (the empty string counts)"
            }
            Operator::Exists | Operator::DoesNotExist => {
                "an existence requirement (key, !key) takes no value"
            }
        }
    }

    /// Whether `count` values suit the operator.
    fn accepts(self, count: usize) -> bool {
        match self {
            Operator::Equals | Operator::NotEquals => count == 1,
            Operator::In | Operator::NotIn => count >= 1,
            Operator::Exists | Operator::DoesNotExist => count == 0,
        }
    }
}

/// One condition of a [`Selector`] on one label key.
///
/// Built by [`Selector::parse`] or by [`Requirement::new`], it always holds a valid key and
/// valid values, as many as its operator takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
}

impl Requirement {
    /// A requirement on `key`, after checking the key and values against the label rules and the
    /// number of values against the operator: one for [`Operator::Equals`] and
    /// [`Operator::NotEquals`], at least one for [`Operator::In`] and [`Operator::NotIn`] (repeated
    /// values count once), none for [`Operator::Exists`] and [`Operator::DoesNotExist`].
    ///
    /// ```
    /// use atbus_discovery::selector::{Operator, Requirement};
    ///
    /// let tier = Requirement::new("tier", Operator::NotIn, ["batch", "test"]).unwrap();
    /// assert_eq!(tier.to_string(), "tier notin (batch,test)");
    ///
    /// let none: [&str; 0] = [];
    /// assert!(Requirement::new("tier", Operator::Equals, none).is_err());
    /// ```
    pub fn new<I, V>(key: &str, operator: Operator, values: I) -> Result<Self, RequirementError>
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        check_key(key).map_err(|e| RequirementError::Invalid(e.at(KEY_FIELD)))?;
        let values: BTreeSet<String> = values.into_iter().map(Into::into).collect();
        if !operator.accepts(values.len()) {
            return Err(RequirementError::ValueCount {
                operator,
                count: values.len(),
            });
        }
        for value in &values {
            check_value(value).map_err(|e| RequirementError::Invalid(e.at(value_field(key))))?;
        }
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// The label key this requirement tests.
    ///
    /// ```
    /// use atbus_discovery::Selector;
    ///
    /// let selector = Selector::parse("!canary").unwrap();
    /// assert_eq!(selector.requirements()[0].key(), "canary");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How the value of the key is tested.
    ///
    /// ```
    /// use atbus_discovery::{Operator, Selector};
    ///
    /// let selector = Selector::parse("app == web").unwrap();
    /// assert_eq!(selector.requirements()[0].operator(), Operator::Equals);
    /// ```
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values the key is tested against, sorted and without repeats: one for `=` and `!=`, at
    /// least one for `in` and `notin`, none for `key` and `!key`.
    ///
    /// ```
    /// use atbus_discovery::Selector;
    ///
    /// let selector = Selector::parse("zone in (b, a, b)").unwrap();
    /// let values: Vec<&str> = selector.requirements()[0].values().map(String::as_str).collect();
    /// assert_eq!(values, ["a", "b"]);
    /// ```
    pub fn values(&self) -> impl ExactSizeIterator<Item = &String> {
        self.values.iter()
    }

    /// Whether `labels` meets this requirement (see the table in the [module](self) docs).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use atbus_discovery::{Operator, Requirement};
    ///
    /// let not_canary = Requirement::new("track", Operator::NotEquals, ["canary"]).unwrap();
    /// assert!(not_canary.matches(&BTreeMap::new()));
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    /// The canonical form: `key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`,
    /// `!key`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let set = |f: &mut fmt::Formatter<'_>, word: &str| {
            write!(f, "{key} {word} (")?;
            for (i, value) in self.values.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                f.write_str(value)?;
            }
            f.write_str(")")
        };
        let first = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Equals => write!(f, "{key}={first}"),
            Operator::NotEquals => write!(f, "{key}!={first}"),
            Operator::In => set(f, "in"),
            Operator::NotIn => set(f, "notin"),
            Operator::Exists => f.write_str(key),
            Operator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

/// The field name given to a bad key in a selector.
const KEY_FIELD: &str = "selector key";

/// The field name given to a bad value of `key` in a selector.
fn value_field(key: &str) -> String {
    format!("selector value for {key:?}")
}

/// A [`Requirement`] that [`Requirement::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// The key or one of the values breaks the label rules.
    #[error("{0}")]
    Invalid(ValidationError),
    /// The operator takes another number of values.
    #[error("{}; {count} were given", .operator.value_rule())]
    ValueCount {
        /// The operator of the requirement.
        operator: Operator,
        /// The number of distinct values given.
        count: usize,
    },
}

/// A conjunction of [`Requirement`]s on labels, as written `app=web,tier in (front,api),!canary`.
///
/// ```
/// use std::collections::BTreeMap;
/// use atbus_discovery::Selector;
///
/// let selector: Selector = "app = web, tier notin (batch), !canary".parse().unwrap();
/// let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
/// assert!(selector.matches(&labels));
/// assert_eq!(selector.to_string(), "app=web,!canary,tier notin (batch)");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Sorted by key, stably.
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The empty selector, which matches every label set (also what `""` parses to).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use atbus_discovery::Selector;
    ///
    /// assert!(Selector::everything().matches(&BTreeMap::new()));
    /// assert_eq!(Selector::parse("  ").unwrap(), Selector::everything());
    /// ```
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Parses a selector in the Kubernetes syntax (see the [module](self) docs).
    ///
    /// ```
    /// use atbus_discovery::Selector;
    ///
    /// let selector = Selector::parse("zone in (eu-west, eu-north), tier != batch").unwrap();
    /// assert_eq!(selector.requirements().len(), 2);
    ///
    /// let error = Selector::parse("zone in (eu-west").unwrap_err();
    /// assert_eq!(error.column, 17);
    /// assert_eq!(
    ///     error.to_string(),
    ///     "column 17: expected ')' or ',' after a value in the set, found end of input"
    /// );
    /// ```
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        parse::parse(input).map(Selector::from_iter)
    }

    /// The requirements, sorted by key (requirements on the same key keep their order).
    ///
    /// ```
    /// use atbus_discovery::Selector;
    ///
    /// let selector = Selector::parse("b, a").unwrap();
    /// assert_eq!(selector.requirements()[0].key(), "a");
    /// ```
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this is the empty selector, which matches everything.
    ///
    /// ```
    /// use atbus_discovery::Selector;
    ///
    /// assert!(Selector::parse("").unwrap().is_everything());
    /// assert!(!Selector::parse("app").unwrap().is_everything());
    /// ```
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` meets every requirement.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use atbus_discovery::Selector;
    ///
    /// let selector = Selector::parse("app=web,tier notin (batch)").unwrap();
    /// let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    /// assert!(selector.matches(&labels));
    /// labels.insert("tier".to_owned(), "batch".to_owned());
    /// assert!(!selector.matches(&labels));
    /// ```
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl FromIterator<Requirement> for Selector {
    /// The conjunction of `requirements`, sorted by key.
    fn from_iter<T: IntoIterator<Item = Requirement>>(requirements: T) -> Self {
        let mut requirements: Vec<Requirement> = requirements.into_iter().collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Self, SelectorError> {
        Selector::parse(input)
    }
}

impl fmt::Display for Selector {
    /// The canonical form: the requirements in key order, joined by `,` without spaces. It is
    /// empty for [`Selector::everything`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// A selector that does not parse: where, and why.
///
/// ```
/// use atbus_discovery::Selector;
///
/// let error = Selector::parse("app=web,").unwrap_err();
/// assert_eq!(error.column, 9);
/// assert_eq!(
///     error.to_string(),
///     "column 9: expected a label key or '!' after ',', found end of input"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {kind}")]
pub struct SelectorError {
    /// The column of the token the parser stopped at, counting characters from 1. The end of the
    /// input is one column past its last character.
    pub column: usize,
    /// What was wrong there.
    pub kind: SelectorErrorKind,
}

/// What a [`SelectorError`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorErrorKind {
    /// A token the grammar does not allow there.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the grammar allows there, in words.
        expected: String,
        /// What was there instead.
        found: Found,
    },
    /// A key or value that breaks the label rules; the column is where it starts.
    #[error("{0}")]
    Invalid(ValidationError),
}

/// The token a [`SelectorErrorKind::Unexpected`] stopped at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A token, as written.
    Token(String),
    /// The end of the input.
    EndOfInput,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Token(token) => write!(f, "'{token}'"),
            Found::EndOfInput => f.write_str("end of input"),
        }
    }
}
