//! The lexer and recursive-descent parser behind [`Selector::parse`](super::Selector::parse).
//!
//! It follows Kubernetes' `labels.Parse`: words run to the next whitespace (space, tab, CR, LF) or
//! special character (`= ! ( ) , < >`), `!=` and `==` are single tokens, and `in`/`notin` are
//! operators only where an operator is expected (elsewhere they are ordinary keys and values).
//! Each token remembers its 1-based character column for the error.

use std::collections::BTreeSet;

use super::{
    Found, KEY_FIELD, Operator, Requirement, SelectorError, SelectorErrorKind, value_field,
};
use crate::validate::{check_key, check_value};

/// The kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A key, a value, or the operators `in` and `notin`.
    Word,
    /// `!`
    Bang,
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `,`
    Comma,
    /// `<` or `>`: Kubernetes' numeric comparisons, which no rule here accepts.
    Unsupported,
    /// The end of the input.
    End,
}

/// A token and where it starts.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// 1-based, in characters.
    column: usize,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

/// Splits `input` into tokens, ending with [`Kind::End`].
fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    // The column of the last character taken from `chars`.
    let mut column = 0;
    while let Some((start, c)) = chars.next() {
        column += 1;
        if is_whitespace(c) {
            continue;
        }
        let token_column = column;
        let kind = match c {
            '!' | '=' if chars.peek().is_some_and(|&(_, n)| n == '=') => {
                chars.next();
                column += 1;
                if c == '!' {
                    Kind::NotEquals
                } else {
                    Kind::DoubleEquals
                }
            }
            '!' => Kind::Bang,
            '=' => Kind::Equals,
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            '<' | '>' => Kind::Unsupported,
            _ => {
                while chars
                    .peek()
                    .is_some_and(|&(_, n)| !is_whitespace(n) && !is_special(n))
                {
                    chars.next();
                    column += 1;
                }
                Kind::Word
            }
        };
        let end = chars.peek().map_or(input.len(), |&(i, _)| i);
        tokens.push(Token {
            kind,
            text: &input[start..end],
            column: token_column,
        });
    }
    tokens.push(Token {
        kind: Kind::End,
        text: "",
        column: column + 1,
    });
    tokens
}

/// Parses `input` into its requirements, in the order written.
pub(super) fn parse(input: &str) -> Result<Vec<Requirement>, SelectorError> {
    let mut parser = Parser {
        tokens: lex(input),
        position: 0,
    };
    let mut requirements = Vec::new();
    let first = parser.peek();
    match first.kind {
        Kind::End => return Ok(requirements),
        Kind::Word | Kind::Bang => {}
        _ => return Err(unexpected(first, "a label key, '!' or end of input")),
    }
    loop {
        requirements.push(parser.requirement()?);
        let token = parser.next();
        match token.kind {
            Kind::End => return Ok(requirements),
            Kind::Comma => {
                let following = parser.peek();
                if !matches!(following.kind, Kind::Word | Kind::Bang) {
                    return Err(unexpected(following, "a label key or '!' after ','"));
                }
            }
            _ => {
                return Err(unexpected(token, "',' or end of input after a requirement"));
            }
        }
    }
}

/// The error for `token` where the grammar wants `expected`.
fn unexpected(token: Token<'_>, expected: &str) -> SelectorError {
    let found = match token.kind {
        Kind::End => Found::EndOfInput,
        _ => Found::Token(token.text.to_owned()),
    };
    SelectorError {
        column: token.column,
        kind: SelectorErrorKind::Unexpected {
            expected: expected.to_owned(),
            found,
        },
    }
}

struct Parser<'a> {
    /// Never empty: the last token is [`Kind::End`].
    tokens: Vec<Token<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    /// The next token, without taking it; [`Kind::End`] for ever at the end.
    fn peek(&self) -> Token<'a> {
        let end = Token {
            kind: Kind::End,
            text: "",
            column: 1,
        };
        self.tokens
            .get(self.position)
            .or(self.tokens.last())
            .copied()
            .unwrap_or(end)
    }

    /// Takes the next token.
    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    /// `!key`, `key`, `key op value` or `key op (values)`.
    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next();
        let negated = token.kind == Kind::Bang;
        if negated {
            token = self.next();
        }
        if token.kind != Kind::Word {
            let expected = if negated {
                "a label key after '!'"
            } else {
                "a label key or '!'"
            };
            return Err(unexpected(token, expected));
        }
        let key = token.text;
        check_key(key).map_err(|e| invalid(token, e.at(KEY_FIELD)))?;

        let after_key = self.peek();
        if matches!(after_key.kind, Kind::End | Kind::Comma) {
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Ok(build(key, operator, BTreeSet::new()));
        }
        if negated {
            return Err(unexpected(
                after_key,
                "',' or end of input after '!key' (it takes no operator or value)",
            ));
        }

        let token = self.next();
        let operator = match (token.kind, token.text) {
            (Kind::Equals | Kind::DoubleEquals, _) => Operator::Equals,
            (Kind::NotEquals, _) => Operator::NotEquals,
            (Kind::Word, "in") => Operator::In,
            (Kind::Word, "notin") => Operator::NotIn,
            _ => {
                return Err(unexpected(
                    token,
                    "an operator (=, ==, !=, in, notin), ',' or end of input after the key",
                ));
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.set(key, token.text)?,
            _ => self.exact_value(key, token.text)?,
        };
        Ok(build(key, operator, values))
    }

    /// The value after `=`, `==` or `!=`: a word, or nothing (the empty value) before `,` or the
    /// end.
    fn exact_value(
        &mut self,
        key: &str,
        operator: &str,
    ) -> Result<BTreeSet<String>, SelectorError> {
        let token = self.peek();
        let value = match token.kind {
            Kind::End | Kind::Comma => "",
            Kind::Word => {
                self.next();
                check_value(token.text).map_err(|e| invalid(token, e.at(value_field(key))))?;
                token.text
            }
            _ => {
                let expected = format!("a value, ',' or end of input after '{operator}'");
                return Err(unexpected(token, &expected));
            }
        };
        Ok(BTreeSet::from([value.to_owned()]))
    }

    /// `( value, ... )` after `in` or `notin`; an empty slot is the empty value.
    fn set(&mut self, key: &str, operator: &str) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.next();
        if open.kind != Kind::Open {
            let expected = format!("'(' to open the set of values after '{operator}'");
            return Err(unexpected(open, &expected));
        }
        let mut values = BTreeSet::new();
        loop {
            let token = self.peek();
            match token.kind {
                Kind::Word => {
                    self.next();
                    check_value(token.text).map_err(|e| invalid(token, e.at(value_field(key))))?;
                    values.insert(token.text.to_owned());
                }
                Kind::Comma | Kind::Close => {
                    values.insert(String::new());
                }
                _ => return Err(unexpected(token, "a value, ',' or ')' in the set")),
            }
            let token = self.next();
            match token.kind {
                Kind::Comma => {}
                Kind::Close => return Ok(values),
                _ => {
                    return Err(unexpected(token, "')' or ',' after a value in the set"));
                }
            }
        }
    }
}

/// The error for a key or value `token` that breaks a label rule.
fn invalid(token: Token<'_>, error: crate::validate::ValidationError) -> SelectorError {
    SelectorError {
        column: token.column,
        kind: SelectorErrorKind::Invalid(error),
    }
}

/// A requirement whose key, values and value count the parser has already checked.
fn build(key: &str, operator: Operator, values: BTreeSet<String>) -> Requirement {
    Requirement {
        key: key.to_owned(),
        operator,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<(Kind, &str, usize)> {
        lex(input)
            .into_iter()
            .map(|t| (t.kind, t.text, t.column))
            .collect()
    }

    #[test]
    fn lexer_splits_words_at_whitespace_and_special_characters() {
        assert_eq!(
            kinds(" a!=b,c==d ,!e"),
            [
                (Kind::Word, "a", 2),
                (Kind::NotEquals, "!=", 3),
                (Kind::Word, "b", 5),
                (Kind::Comma, ",", 6),
                (Kind::Word, "c", 7),
                (Kind::DoubleEquals, "==", 8),
                (Kind::Word, "d", 10),
                (Kind::Comma, ",", 12),
                (Kind::Bang, "!", 13),
                (Kind::Word, "e", 14),
                (Kind::End, "", 15),
            ]
        );
    }

    #[test]
    fn lexer_takes_two_character_operators_greedily() {
        let got: Vec<Kind> = lex("===!!=").into_iter().map(|t| t.kind).collect();
        assert_eq!(
            got,
            [
                Kind::DoubleEquals,
                Kind::Equals,
                Kind::Bang,
                Kind::NotEquals,
                Kind::End
            ]
        );
    }

    #[test]
    fn lexer_counts_columns_in_characters() {
        let tokens = lex("é\tin(x)");
        assert_eq!(
            tokens.iter().map(|t| t.column).collect::<Vec<_>>(),
            [1, 3, 5, 6, 7, 8]
        );
    }
}
