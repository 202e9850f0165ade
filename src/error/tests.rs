//! The error chain: typed causes are `#[source]`s, printed after the message by `{:#}`-style
//! walks, and wrapped sub-enums show their own message unchanged.

use std::error::Error as _;
use std::path::PathBuf;

use super::*;

/// The message and every source below it, joined as anyhow's `{:#}` joins them.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(&format!(": {e}"));
        next = e.source();
    }
    text
}

#[test]
fn a_header_problem_is_the_source_of_its_shard_error() {
    let err = Error::BadShard {
        path: PathBuf::from("m.safetensors"),
        problem: HeaderProblem::TooShort { len_bytes: 3 },
    };
    assert_eq!(
        chain(&err),
        "m.safetensors: not a valid safetensors file, damaged or incomplete (download or copy it again): the file is 3 bytes, shorter than the 8-byte header length"
    );
}

#[test]
fn an_incomplete_worker_output_keeps_what_reading_it_found() {
    let found = Error::NoWeights {
        path: PathBuf::from("out/rank-00000-of-00002"),
    };
    let err = Error::from(OutputError::Incomplete {
        path: PathBuf::from("out/rank-00000-of-00002"),
        source: Box::new(found),
    });
    let text = chain(&err);
    assert!(
        text.starts_with(
            "out/rank-00000-of-00002: not complete; rerun the worker that writes it: "
        ),
        "{text}"
    );
    assert!(
        text.ends_with("no *.safetensors file found; is this a checkpoint directory?"),
        "{text}"
    );
}

#[test]
fn a_wrapped_config_error_shows_its_own_message_and_parser_cause() {
    let source = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
    let err = Error::from(ConfigError::Json {
        path: PathBuf::from("config.json"),
        source: crate::json::JsonError::Syntax(source),
    });
    let text = chain(&err);
    assert!(
        text.starts_with("config.json: not valid JSON: EOF"),
        "{text}"
    );
}
