//! JSON as Python writes it (issue 11, item 3): `json.dump` with its defaults writes the bare
//! tokens `NaN`, `Infinity` and `-Infinity`, which strict JSON (and serde_json) refuses;
//! transformers configs hold them (`"time_step_limit": [0.0, Infinity]`).
//!
//! serde_json has no option for them and its `Value` cannot hold a non-finite number, and a
//! JSON5 parser would accept much more than Python does (comments, single quotes) and still
//! lose the values on a rewrite. So a pre-pass outside string literals turns each such token
//! into a reserved string, and [`to_text_pretty`] turns those strings back into the tokens:
//! a config nemoconv rewrites keeps its values exactly.

use serde_json::Value;

/// The reserved prefix of the strings standing for Python's non-finite numbers.
const RESERVED: &str = "__nemoconv_python_float__:";
/// Python's spellings of the non-finite floats; `-Infinity` before `Infinity`.
const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

/// Why JSON text was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The text holds the string nemoconv uses for non-finite numbers.
    #[error("holds the string {RESERVED:?}, which nemoconv reserves for NaN and Infinity")]
    Reserved,
    /// serde_json's error, with line and column.
    #[error(transparent)]
    Syntax(#[from] serde_json::Error),
}

/// Parses JSON text, accepting `NaN`, `Infinity` and `-Infinity` as Python's `json` does.
///
/// # Errors
/// serde_json's error for invalid JSON, or a refusal of text that holds the reserved prefix.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    if text.contains(RESERVED) {
        return Err(JsonError::Reserved);
    }
    Ok(serde_json::from_str(&quote_non_finite(text))?)
}

/// Pretty JSON text of `value`, with Python's non-finite numbers written back as bare tokens,
/// ending in a newline.
pub fn to_text_pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value serializes");
    for token in TOKENS {
        text = text.replace(&format!("\"{RESERVED}{token}\""), token);
    }
    text.push('\n');
    text.into_bytes()
}

/// Replaces every bare `NaN`, `Infinity`, `-Infinity` outside string literals by a reserved
/// string literal.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = TOKENS.iter().find(|t| starts_token(rest, t)) {
            out.push_str(&format!("\"{RESERVED}{token}\""));
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `rest` starts with `token` and no letter or digit follows it.
fn starts_token(rest: &str, token: &str) -> bool {
    rest.starts_with(token)
        && !rest[token.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_non_finite_numbers_are_accepted_and_written_back() {
        let text = "{\n  \"a\": [\n    0.0,\n    Infinity\n  ],\n  \"b\": -Infinity,\n  \"c\": NaN,\n  \"s\": \"NaN Infinity \\\" NaN\"\n}\n";
        let value = parse(text).unwrap();
        assert_eq!(value["s"], "NaN Infinity \" NaN");
        assert_eq!(value["a"][0], 0.0);
        assert_eq!(String::from_utf8(to_text_pretty(&value)).unwrap(), text);
    }

    #[test]
    fn tokens_inside_words_and_strings_are_not_numbers() {
        assert!(parse("[NaNa]").is_err());
        assert!(parse("[Infinityx]").is_err());
        assert_eq!(parse(r#"["-Infinity"]"#).unwrap()[0], "-Infinity");
    }

    #[test]
    fn invalid_json_and_the_reserved_prefix_are_refused() {
        assert!(parse("{").is_err());
        assert!(parse(&format!("[\"{RESERVED}NaN\"]")).is_err());
    }
}
