//! Selector semantics, parse errors and the canonical form, table by table.
//!
//! The semantics table runs every operator against a label set where its key is present with the
//! value asked for, present with another value, and missing; it shows that `!=` and `notin`, like
//! Kubernetes' `labels.Parse`, match a label set without the key. The error table pins the column
//! and message of each parse error. The property tests show that `Display` prints a form that
//! parses back to the same selector, and that any input either parses or fails at a column inside
//! it, without panicking.

use std::collections::BTreeMap;

use atbus_discovery::selector::{Found, SelectorErrorKind};
use atbus_discovery::validate::{Part, Rule};
use atbus_discovery::{Operator, Requirement, Selector};
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A label set written as pairs.
type LabelSet = &'static [(&'static str, &'static str)];

/// `tier` present with the value the selectors ask for.
const MATCHING: LabelSet = &[("app", "web"), ("tier", "front")];
/// `tier` present with another value.
const DIFFERENT: LabelSet = &[("app", "web"), ("tier", "batch")];
/// `tier` missing.
const MISSING: LabelSet = &[("app", "web")];
/// `tier` present with the empty value.
const EMPTY: LabelSet = &[("app", "web"), ("tier", "")];

#[test]
fn every_operator_against_present_matching_different_and_missing_keys() {
    // (selector, matches MATCHING, matches DIFFERENT, matches MISSING)
    let table: &[(&str, bool, bool, bool)] = &[
        ("tier=front", true, false, false),
        ("tier==front", true, false, false),
        ("tier!=front", false, true, true),
        ("tier in (front)", true, false, false),
        ("tier in (front,api)", true, false, false),
        ("tier notin (front)", false, true, true),
        ("tier notin (front,api)", false, true, true),
        ("tier", true, true, false),
        ("!tier", false, false, true),
    ];
    for &(input, matching, different, missing) in table {
        let selector = Selector::parse(input).unwrap();
        assert_eq!(
            selector.matches(&labels(MATCHING)),
            matching,
            "{input:?} on {MATCHING:?}"
        );
        assert_eq!(
            selector.matches(&labels(DIFFERENT)),
            different,
            "{input:?} on {DIFFERENT:?}"
        );
        assert_eq!(
            selector.matches(&labels(MISSING)),
            missing,
            "{input:?} on {MISSING:?}"
        );
    }
}

#[test]
fn empty_values_are_values_not_absence() {
    // (selector, matches EMPTY, matches MISSING, matches MATCHING)
    let table: &[(&str, bool, bool, bool)] = &[
        ("tier=", true, false, false),
        ("tier==", true, false, false),
        ("tier!=", false, true, true),
        ("tier in ()", true, false, false),
        ("tier in (,)", true, false, false),
        ("tier in (front,)", true, false, true),
        ("tier in (,front)", true, false, true),
        ("tier in (front,,api)", true, false, true),
        ("tier notin ()", false, true, true),
        ("tier notin (front,)", false, true, false),
        ("tier", true, false, true),
        ("!tier", false, true, false),
    ];
    for &(input, empty, missing, matching) in table {
        let selector = Selector::parse(input).unwrap();
        assert_eq!(
            selector.matches(&labels(EMPTY)),
            empty,
            "{input:?} on {EMPTY:?}"
        );
        assert_eq!(
            selector.matches(&labels(MISSING)),
            missing,
            "{input:?} on {MISSING:?}"
        );
        assert_eq!(
            selector.matches(&labels(MATCHING)),
            matching,
            "{input:?} on {MATCHING:?}"
        );
    }
}

#[test]
fn comma_is_and() {
    let table: &[(&str, LabelSet, bool)] = &[
        ("app=web,tier=front", MATCHING, true),
        ("app=web,tier=front", DIFFERENT, false),
        ("app=web,tier=front", MISSING, false),
        ("app=web,!tier", MISSING, true),
        ("app=web,!tier", MATCHING, false),
        ("app=api,tier!=front", DIFFERENT, false),
        ("app,tier notin (batch)", MISSING, true),
        ("app,tier notin (batch)", DIFFERENT, false),
        // Contradictions match nothing.
        ("tier,!tier", MATCHING, false),
        ("tier,!tier", MISSING, false),
        ("tier=front,tier=batch", MATCHING, false),
    ];
    for &(input, set, expected) in table {
        let selector = Selector::parse(input).unwrap();
        assert_eq!(
            selector.matches(&labels(set)),
            expected,
            "{input:?} on {set:?}"
        );
    }
}

#[test]
fn the_empty_selector_matches_everything() {
    for input in ["", " ", "\t\r\n "] {
        let selector = Selector::parse(input).unwrap();
        assert_eq!(selector, Selector::everything(), "{input:?}");
        assert!(selector.is_everything());
        for set in [&[][..], MATCHING, DIFFERENT, MISSING, EMPTY] {
            assert!(selector.matches(&labels(set)), "{input:?} on {set:?}");
        }
    }
    assert_eq!(Selector::everything().to_string(), "");
}

#[test]
fn whitespace_around_tokens_does_not_change_the_selector() {
    let table: &[(&str, &str)] = &[
        (" app = web ", "app=web"),
        ("app\t==\tweb", "app=web"),
        ("app!= web", "app!=web"),
        ("zone in(a,b)", "zone in (a,b)"),
        ("zone in ( a , b )", "zone in (a,b)"),
        ("zone notin\n(a)", "zone notin (a)"),
        (" ! canary , app ", "app,!canary"),
        ("app =", "app="),
        ("app = , b", "app=,b"),
    ];
    for &(spaced, canonical) in table {
        let parsed = Selector::parse(spaced).unwrap();
        assert_eq!(parsed, Selector::parse(canonical).unwrap(), "{spaced:?}");
        assert_eq!(parsed.to_string(), canonical, "{spaced:?}");
    }
}

#[test]
fn parsed_requirements_carry_operator_and_values() {
    let table: &[(&str, Operator, &[&str])] = &[
        ("k=v", Operator::Equals, &["v"]),
        ("k==v", Operator::Equals, &["v"]),
        ("k!=v", Operator::NotEquals, &["v"]),
        ("k=", Operator::Equals, &[""]),
        ("k in (b,a,b)", Operator::In, &["a", "b"]),
        ("k notin (a,)", Operator::NotIn, &["", "a"]),
        ("k in ()", Operator::In, &[""]),
        ("k", Operator::Exists, &[]),
        ("!k", Operator::DoesNotExist, &[]),
    ];
    for &(input, operator, values) in table {
        let selector = Selector::parse(input).unwrap();
        let [requirement] = selector.requirements() else {
            panic!("{input:?} gave {selector:?}");
        };
        assert_eq!(requirement.key(), "k", "{input:?}");
        assert_eq!(requirement.operator(), operator, "{input:?}");
        let got: Vec<&str> = requirement.values().map(String::as_str).collect();
        assert_eq!(got, values, "{input:?}");
    }
}

#[test]
fn in_and_notin_are_keys_and_values_outside_the_operator_position() {
    let table: &[(&str, LabelSet, bool)] = &[
        ("in", &[("in", "x")], true),
        ("!notin", &[("in", "x")], true),
        ("in=notin", &[("in", "notin")], true),
        ("in in (in, notin)", &[("in", "notin")], true),
        ("notin notin (in)", &[("notin", "in")], false),
    ];
    for &(input, set, expected) in table {
        let selector = Selector::parse(input).unwrap();
        assert_eq!(
            selector.matches(&labels(set)),
            expected,
            "{input:?} on {set:?}"
        );
        assert_eq!(
            Selector::parse(&selector.to_string()).unwrap(),
            selector,
            "{input:?}"
        );
    }
}

#[test]
fn requirements_are_sorted_by_key_keeping_the_order_of_one_key() {
    let selector = Selector::parse("b=1,a,b=2,!0").unwrap();
    assert_eq!(selector.to_string(), "!0,a,b=1,b=2");
}

#[test]
fn prefixed_keys_are_accepted() {
    let selector = Selector::parse("atbus.io/zone in (eu-west),example.com/Tier_1").unwrap();
    let set = labels(&[("atbus.io/zone", "eu-west"), ("example.com/Tier_1", "")]);
    assert!(selector.matches(&set));
}

#[test]
fn parse_errors_give_the_column_and_what_was_expected() {
    // (input, column, message)
    let table: &[(&str, usize, &str)] = &[
        (
            "zone in (eu",
            12,
            "expected ')' or ',' after a value in the set, found end of input",
        ),
        (
            "zone in (a b)",
            12,
            "expected ')' or ',' after a value in the set, found 'b'",
        ),
        (
            "zone in (a,",
            12,
            "expected a value, ',' or ')' in the set, found end of input",
        ),
        (
            "zone in (a,!)",
            12,
            "expected a value, ',' or ')' in the set, found '!'",
        ),
        (
            "zone in a",
            9,
            "expected '(' to open the set of values after 'in', found 'a'",
        ),
        (
            "zone notin",
            11,
            "expected '(' to open the set of values after 'notin', found end of input",
        ),
        (
            "app=(web)",
            5,
            "expected a value, ',' or end of input after '=', found '('",
        ),
        (
            "app===web",
            6,
            "expected a value, ',' or end of input after '==', found '='",
        ),
        (
            "app web",
            5,
            "expected an operator (=, ==, !=, in, notin), ',' or end of input after the key, \
             found 'web'",
        ),
        (
            "replicas>1",
            9,
            "expected an operator (=, ==, !=, in, notin), ',' or end of input after the key, \
             found '>'",
        ),
        (
            "app=web tier",
            9,
            "expected ',' or end of input after a requirement, found 'tier'",
        ),
        (
            "app=web)",
            8,
            "expected ',' or end of input after a requirement, found ')'",
        ),
        (
            "app=web,",
            9,
            "expected a label key or '!' after ',', found end of input",
        ),
        (
            "app=web, ,tier",
            10,
            "expected a label key or '!' after ',', found ','",
        ),
        (
            ",app",
            1,
            "expected a label key, '!' or end of input, found ','",
        ),
        (
            "  =web",
            3,
            "expected a label key, '!' or end of input, found '='",
        ),
        ("!", 2, "expected a label key after '!', found end of input"),
        ("!!app", 2, "expected a label key after '!', found '!'"),
        (
            "!app=web",
            5,
            "expected ',' or end of input after '!key' (it takes no operator or value), found '='",
        ),
    ];
    for &(input, column, message) in table {
        let error = Selector::parse(input).unwrap_err();
        assert_eq!(error.column, column, "{input:?}: {error}");
        assert!(
            matches!(error.kind, SelectorErrorKind::Unexpected { .. }),
            "{input:?}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("column {column}: {message}"),
            "{input:?}"
        );
    }
}

#[test]
fn the_end_of_input_is_reported_as_such() {
    let error = Selector::parse("zone in (eu").unwrap_err();
    let SelectorErrorKind::Unexpected { found, .. } = error.kind else {
        panic!("{error:?}");
    };
    assert_eq!(found, Found::EndOfInput);
}

#[test]
fn invalid_keys_and_values_are_reported_at_their_column() {
    // (input, column, part, field)
    let table: &[(&str, usize, Part, &str)] = &[
        ("-app=web", 1, Part::KeyName, "selector key"),
        ("app=web,Atbus.io/zone", 9, Part::KeyPrefix, "selector key"),
        ("a/b/c", 1, Part::Key, "selector key"),
        ("!atbus.io/", 2, Part::KeyName, "selector key"),
        ("app=web-", 5, Part::Value, "selector value for \"app\""),
        ("app != a/b", 8, Part::Value, "selector value for \"app\""),
        (
            "zone in (ok, _bad)",
            14,
            Part::Value,
            "selector value for \"zone\"",
        ),
        (
            "zone notin (é)",
            13,
            Part::Value,
            "selector value for \"zone\"",
        ),
    ];
    for &(input, column, part, field) in table {
        let error = Selector::parse(input).unwrap_err();
        assert_eq!(error.column, column, "{input:?}: {error}");
        let SelectorErrorKind::Invalid(invalid) = &error.kind else {
            panic!("{input:?}: {error:?}");
        };
        assert_eq!(
            (invalid.part, invalid.field.as_str()),
            (part, field),
            "{input:?}"
        );
    }

    let error = Selector::parse("app=web,tier in (front, api-)").unwrap_err();
    assert_eq!(
        error.to_string(),
        "column 25: selector value for \"tier\": the value \"api-\" must start and end with an \
         alphanumeric character (A-Z, a-z, 0-9)"
    );
    let error = Selector::parse(&format!("{}=x", "k".repeat(64))).unwrap_err();
    let SelectorErrorKind::Invalid(invalid) = error.kind else {
        panic!("{error:?}");
    };
    assert_eq!(
        invalid.rule,
        Rule::TooLong {
            max: 63,
            length: 64
        }
    );
}

#[test]
fn requirement_new_checks_keys_values_and_value_counts() {
    let none: [&str; 0] = [];
    assert!(Requirement::new("app", Operator::Equals, ["web"]).is_ok());
    assert!(Requirement::new("app", Operator::In, ["", "web"]).is_ok());
    assert!(Requirement::new("app", Operator::Exists, none).is_ok());

    let bad_count: &[(Operator, &[&str])] = &[
        (Operator::Equals, &[]),
        (Operator::NotEquals, &["a", "b"]),
        (Operator::In, &[]),
        (Operator::NotIn, &[]),
        (Operator::Exists, &["a"]),
        (Operator::DoesNotExist, &["a"]),
    ];
    for &(operator, values) in bad_count {
        let error = Requirement::new("app", operator, values.iter().copied()).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with(&format!("; {} were given", values.len())),
            "{operator:?}: {error}"
        );
    }
    let error = Requirement::new("app", Operator::Equals, ["a", "b"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "an equality requirement (=, ==, !=) takes exactly one value; 2 were given"
    );
    assert!(Requirement::new("-app", Operator::Exists, none).is_err());
    assert!(Requirement::new("app", Operator::In, ["ok", "not ok"]).is_err());
}

#[test]
fn built_selectors_equal_parsed_ones() {
    let built: Selector = [
        Requirement::new("tier", Operator::NotIn, ["batch"]).unwrap(),
        Requirement::new("app", Operator::Equals, ["web"]).unwrap(),
    ]
    .into_iter()
    .collect();
    assert_eq!(built, "app==web, tier notin (batch)".parse().unwrap());
    assert_eq!(built.to_string(), "app=web,tier notin (batch)");
}

/// Keys, including prefixed ones and the words `in` and `notin`.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,6}[a-zA-Z0-9])?",
        "[a-z0-9]{1,4}(\\.[a-z0-9]{1,3})?/[a-zA-Z0-9]([-_.a-z]{0,3}[a-zA-Z0-9])?",
        Just("in".to_owned()),
        Just("notin".to_owned()),
    ]
}

/// Values, including the empty one and the words `in` and `notin`.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,6}[a-zA-Z0-9])?",
        Just(String::new()),
        Just("in".to_owned()),
        Just("notin".to_owned()),
    ]
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let operator = prop_oneof![
        Just(Operator::Equals),
        Just(Operator::NotEquals),
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist),
    ];
    (key(), operator, prop::collection::vec(value(), 1..4)).prop_map(|(key, operator, values)| {
        let values = match operator {
            Operator::Equals | Operator::NotEquals => values[..1].to_vec(),
            Operator::In | Operator::NotIn => values,
            Operator::Exists | Operator::DoesNotExist => Vec::new(),
        };
        Requirement::new(&key, operator, values).unwrap()
    })
}

/// Fragments of selector text, valid and not, for inputs the parser must survive.
fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "b", "in", "notin", "=", "==", "!=", "!", "(", ")", ",", " ", "\t", "<", "-", "é",
        "x/y",
    ])
}

proptest! {
    #[test]
    fn display_parses_back_to_the_same_selector(
        requirements in prop::collection::vec(requirement(), 0..5),
    ) {
        let selector: Selector = requirements.into_iter().collect();
        let text = selector.to_string();
        let parsed = Selector::parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&selector), "{:?}", text);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn any_input_parses_to_a_stable_form_or_fails_inside_it(
        fragments in prop::collection::vec(fragment(), 0..12),
    ) {
        let input = fragments.concat();
        match Selector::parse(&input) {
            Ok(selector) => {
                let text = selector.to_string();
                prop_assert_eq!(Selector::parse(&text), Ok(selector), "{:?} -> {:?}", input, text);
            }
            Err(error) => {
                prop_assert!(error.column >= 1, "{:?}: {}", input, error);
                prop_assert!(error.column <= input.chars().count() + 1, "{:?}: {}", input, error);
            }
        }
    }
}
