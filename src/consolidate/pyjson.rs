//! JSON as Python's `json` module writes it, which the reference's outputs are made with
//! (DCP-FORMAT §3.5-§3.7): `json.dumps` separators (`", "`, `": "`; `","` before a newline
//! when indented), ASCII only with `\uXXXX` escapes, floats as Python's `repr`, and objects in
//! the order read (a config is parsed and dumped again with its key order kept). serde_json's
//! own writer differs in each of these, so this module writes the text itself.

use std::fmt::Write;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value with object keys in file order and numbers kept as Python sees them.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number without fraction or exponent.
    Int(i128),
    /// A number with a fraction or exponent (a Python float).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<PyValue>),
    /// An object, keys in order (a repeated key keeps its first place and its last value, as
    /// a Python dict does).
    Object(Vec<(String, PyValue)>),
}

impl PyValue {
    /// Sets `key` of an object in place, or appends it last (Python dict assignment).
    /// Does nothing on a value that is not an object.
    pub fn set(&mut self, key: &str, value: PyValue) {
        if let PyValue::Object(entries) = self {
            match entries.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => entries.push((key.to_string(), value)),
            }
        }
    }

    /// The value of `key` of an object.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// `json.dumps(value)`: one line, `", "` and `": "` separators.
pub fn dumps(value: &PyValue) -> String {
    let mut out = String::new();
    write_value(&mut out, value, None, 0);
    out
}

/// `json.dumps(value, indent=2)`: no trailing newline.
pub fn dumps_indent2(value: &PyValue) -> String {
    let mut out = String::new();
    write_value(&mut out, value, Some(2), 0);
    out
}

fn write_value(out: &mut String, value: &PyValue, indent: Option<usize>, level: usize) {
    match value {
        PyValue::Null => out.push_str("null"),
        PyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PyValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        PyValue::Float(f) => out.push_str(&float_repr(*f)),
        PyValue::Str(s) => write_str(out, s),
        PyValue::Array(items) => {
            write_seq(out, '[', ']', items, indent, level, |out, v, lvl| {
                write_value(out, v, indent, lvl)
            });
        }
        PyValue::Object(entries) => {
            write_seq(out, '{', '}', entries, indent, level, |out, (k, v), lvl| {
                write_str(out, k);
                out.push_str(": ");
                write_value(out, v, indent, lvl);
            });
        }
    }
}

fn write_seq<T>(
    out: &mut String,
    open: char,
    close: char,
    items: &[T],
    indent: Option<usize>,
    level: usize,
    item: impl Fn(&mut String, &T, usize),
) {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return;
    }
    let newline = |out: &mut String, lvl: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * lvl));
        }
    };
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(if indent.is_some() { "," } else { ", " });
        }
        newline(out, level + 1);
        item(out, it, level + 1);
    }
    newline(out, level);
    out.push(close);
}

/// A string as `json.dumps` writes it with `ensure_ascii=True`.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation when
/// the decimal exponent is in [-4, 16), else `d.ddde±XX`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.2345e-5".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always writes an exponent");
    let exp: i32 = exp.parse().expect("{:e} writes an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1;
    if !(-4 < decpt && decpt <= 16) {
        let rest = &digits[1..];
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{}{frac}e{esign}{:02}", &digits[..1], exp.abs());
    }
    let n = digits.len() as i32;
    let body = if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PyValue, D::Error> {
        deserializer.deserialize_any(PyVisitor)
    }
}

struct PyVisitor;

impl<'de> Visitor<'de> for PyVisitor {
    type Value = PyValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<PyValue, E> {
        Ok(PyValue::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<PyValue, E> {
        Ok(PyValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<PyValue, E> {
        Ok(PyValue::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<PyValue, E> {
        Ok(PyValue::Int(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<PyValue, E> {
        Ok(PyValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<PyValue, E> {
        Ok(PyValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<PyValue, E> {
        Ok(PyValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PyValue, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(PyValue::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PyValue, A::Error> {
        let mut object = PyValue::Object(Vec::new());
        while let Some((k, v)) = map.next_entry::<String, PyValue>()? {
            object.set(&k, v);
        }
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_follow_python_repr() {
        let cases = [
            (1e-05, "1e-05"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (2.5, "2.5"),
            (0.02, "0.02"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1.5e-10, "1.5e-10"),
            (1e100, "1e+100"),
            (100.0, "100.0"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn dumps_matches_python_spacing_escapes_and_order() {
        let v: PyValue = serde_json::from_str(
            r#"{"b": [1, 2.0, {"x": null}], "a": "\u00e9\ud83d\ude00\n", "e": [], "o": {}}"#,
        )
        .unwrap();
        // Python: json.dumps(json.loads(the same text))
        assert_eq!(
            dumps(&v),
            r#"{"b": [1, 2.0, {"x": null}], "a": "\u00e9\ud83d\ude00\n", "e": [], "o": {}}"#
        );
        assert_eq!(
            dumps_indent2(&v),
            "{\n  \"b\": [\n    1,\n    2.0,\n    {\n      \"x\": null\n    }\n  ],\n  \"a\": \"\\u00e9\\ud83d\\ude00\\n\",\n  \"e\": [],\n  \"o\": {}\n}"
        );
    }

    #[test]
    fn set_replaces_in_place_or_appends() {
        let mut v: PyValue = serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap();
        v.set("a", PyValue::Int(3));
        v.set("c", PyValue::Int(4));
        assert_eq!(dumps(&v), r#"{"a": 3, "b": 2, "c": 4}"#);
    }
}
