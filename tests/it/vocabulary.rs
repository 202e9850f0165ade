//! Issue 12, "one vocabulary": only `src/family/` knows NemotronV3 tensor names. This test
//! reads every `.rs` file under `src/` outside `src/family/` and fails on a string literal of
//! non-test code that holds a fragment of those names.
//!
//! What is scanned, and why: string literals, because a name rule is text the program
//! compares or builds (`"backbone."`, `format!("{}.mixer.", ..)`), while identifiers such as a
//! field `experts` or `fp32_params` are not names. Comments and doc comments are not scanned:
//! they explain the contract (`inspect`'s JSON schema, the help of `--allow fp32-params`) and
//! never decide anything. Test code is not scanned either (`#[cfg(test)]` items, and the files
//! of modules declared under `#[cfg(test)]`): a test of `inspect` needs a checkpoint with real
//! names as its input data.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Fragments of NemotronV3 names and files that only `src/family/` may spell. `lm_head` is not
/// here: the family has no rule for it (it keeps its name), so there is nothing to own.
const FRAGMENTS: &[&str] = &[
    "backbone.",
    "model.",
    "mtp.",
    "layers.",
    "mixer.",
    ".mixer",
    "experts.",
    "_fp32_params",
    "A_log",
    "dt_bias",
    "_scale_inv",
    "weight_scale",
    "input_scale",
    "hf_quant_config",
    "embedding.",
    "embeddings",
    "embed_tokens",
    "norm_f",
    "up_proj",
    "down_proj",
    "gate_proj",
    "gate_and_up_projs",
    "down_projs",
    "nemotron_h",
];

/// Text that contains a fragment without being a tensor name: the safetensors convention for
/// shard and index file names (`model.safetensors`, `model.safetensors.index.json`).
const NOT_NAMES: &[&str] = &["model.safetensors"];

/// One string literal: its line and its text (escapes left as written).
#[derive(Debug, PartialEq)]
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of non-test code in `source`, and the modules it declares under
/// `#[cfg(test)]` (`mod fixture;`), whose files are test code too.
fn literals(source: &str) -> (Vec<Literal>, Vec<String>) {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut test_mods = Vec::new();
    let mut lexer = Lexer {
        chars: &chars,
        at: 0,
        line: 1,
    };
    while let Some(token) = lexer.next() {
        match token {
            Token::Str(line, text) => out.push(Literal { line, text }),
            Token::Char('#') if lexer.starts_with("[cfg(test)]") => {
                lexer.at += "[cfg(test)]".len();
                if let Some(name) = lexer.skip_item() {
                    test_mods.push(name);
                }
            }
            Token::Char(_) => {}
        }
    }
    (out, test_mods)
}

enum Token {
    Str(usize, String),
    Char(char),
}

struct Lexer<'a> {
    chars: &'a [char],
    at: usize,
    line: usize,
}

impl Lexer<'_> {
    fn starts_with(&self, text: &str) -> bool {
        let mut at = self.at;
        text.chars().all(|c| {
            let ok = self.chars.get(at) == Some(&c);
            at += 1;
            ok
        })
    }

    fn bump(&mut self) -> Option<char> {
        let c = *self.chars.get(self.at)?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The next string literal or code character; comments and char literals are skipped.
    fn next(&mut self) -> Option<Token> {
        loop {
            let c = self.bump()?;
            match c {
                '/' if self.starts_with("/") => while self.bump().is_some_and(|c| c != '\n') {},
                '/' if self.starts_with("*") => {
                    while !self.starts_with("*/") {
                        self.bump()?;
                    }
                    self.at += 2;
                }
                '"' => return Some(self.string()),
                'r' if self.starts_with("\"")
                    || self.starts_with("#\"")
                    || self.starts_with("##\"") =>
                {
                    return Some(self.raw_string());
                }
                '\'' => self.char_or_lifetime(),
                c => return Some(Token::Char(c)),
            }
        }
    }

    fn string(&mut self) -> Token {
        let (line, mut text) = (self.line, String::new());
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    text.push(c);
                    text.extend(self.bump());
                }
                '"' => break,
                c => text.push(c),
            }
        }
        Token::Str(line, text)
    }

    fn raw_string(&mut self) -> Token {
        let mut hashes = 0;
        while self.bump() == Some('#') {
            hashes += 1;
        }
        let close: String = std::iter::once('"')
            .chain((0..hashes).map(|_| '#'))
            .collect();
        let (line, mut text) = (self.line, String::new());
        while !self.starts_with(&close) {
            match self.bump() {
                Some(c) => text.push(c),
                None => break,
            }
        }
        self.at += close.chars().count();
        Token::Str(line, text)
    }

    /// `'x'`, `'\n'`, `'"'` are skipped whole; a lifetime `'a` leaves the rest as code.
    fn char_or_lifetime(&mut self) {
        let escaped = self.starts_with("\\");
        let len = if escaped {
            (self.at + 1..self.chars.len())
                .find(|&i| self.chars[i] == '\'')
                .map(|i| i - self.at + 1)
        } else {
            (self.chars.get(self.at + 1) == Some(&'\'')).then_some(2)
        };
        if let Some(len) = len {
            for _ in 0..len {
                self.bump();
            }
        }
    }

    /// Skips the item after `#[cfg(test)]`: up to its `;` or its closing brace. Returns the
    /// name of a module declared without a body (`mod fixture;`).
    fn skip_item(&mut self) -> Option<String> {
        let (mut depth, mut code) = (0usize, String::new());
        while let Some(token) = self.next() {
            let Token::Char(c) = token else { continue };
            code.push(c);
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => return None,
                '}' => depth = depth.saturating_sub(1),
                ';' if depth == 0 => {
                    let words: Vec<&str> = code.trim_end_matches(';').split_whitespace().collect();
                    return match words.as_slice() {
                        [.., "mod", name] => Some(name.to_string()),
                        _ => None,
                    };
                }
                _ => {}
            }
        }
        None
    }
}

/// The fragments a literal holds once the allowed non-name text is taken out.
fn fragments_in(text: &str) -> Vec<&'static str> {
    let text = NOT_NAMES
        .iter()
        .fold(text.to_string(), |t, allowed| t.replace(allowed, ""));
    FRAGMENTS
        .iter()
        .copied()
        .filter(|f| text.contains(f))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The directory holding the files of the submodules of `file`.
fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().expect("a file under src/");
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod" | "lib" | "main") => parent.to_path_buf(),
        Some(stem) => parent.join(stem),
        None => parent.to_path_buf(),
    }
}

/// Every fragment in a string literal of non-test code under `src/` outside `src/family/`,
/// and how many literals were read (so a scan that reads nothing cannot pass).
fn leaks(src: &Path) -> (Vec<String>, usize) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let family = src.join("family");
    let parsed: Vec<(PathBuf, Vec<Literal>, Vec<String>)> = files
        .into_iter()
        .map(|f| {
            let text =
                std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let (lits, mods) = literals(&text);
            (f, lits, mods)
        })
        .collect();
    let test_dirs: BTreeSet<PathBuf> = parsed
        .iter()
        .flat_map(|(f, _, mods)| mods.iter().map(|m| module_dir(f).join(m)))
        .collect();
    let is_test_file = |f: &Path| {
        test_dirs
            .iter()
            .any(|d| f.starts_with(d) || f == d.with_extension("rs"))
    };
    let (mut out, mut n_read) = (Vec::new(), 0);
    for (file, lits, _) in &parsed {
        if file.starts_with(&family) || is_test_file(file) {
            continue;
        }
        n_read += lits.len();
        for lit in lits {
            let found = fragments_in(&lit.text);
            if !found.is_empty() {
                out.push(format!(
                    "{}:{}: {found:?} in \"{}\"",
                    file.display(),
                    lit.line,
                    lit.text
                ));
            }
        }
    }
    (out, n_read)
}

#[test]
fn no_nemotron_v3_name_fragment_outside_family() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (leaks, n_read) = leaks(&src);
    assert!(
        n_read > 500,
        "only {n_read} string literals read under {}",
        src.display()
    );
    assert!(
        leaks.is_empty(),
        "NemotronV3 name fragments outside src/family/ (move the rule into the family, or \
         ask it through its typed keys):\n{}",
        leaks.join("\n")
    );
}

#[test]
fn the_scan_sees_code_strings_and_skips_comments_chars_and_tests() {
    let source = r##"
//! "backbone." in a doc comment
fn f<'a>(x: &'a str) -> bool {
    let quote = '"'; // "mtp." in a comment
    /* "model.layers." in a block comment */
    x.starts_with("backbone.") || x == r#"a.mixer.D"# || x.ends_with("model.safetensors")
}
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests {
    fn g() { let s = "experts.0"; { "up_proj" }; }
}
fn h() -> &'static str { "layers.{}" }
"##;
    let (lits, mods) = literals(source);
    let texts: Vec<(usize, &str)> = lits.iter().map(|l| (l.line, l.text.as_str())).collect();
    assert_eq!(
        texts,
        vec![
            (6, "backbone."),
            (6, "a.mixer.D"),
            (6, "model.safetensors"),
            (14, "layers.{}")
        ]
    );
    assert_eq!(mods, vec!["fixture".to_string()]);
    assert_eq!(fragments_in("backbone."), vec!["backbone."]);
    assert_eq!(fragments_in("a.mixer.D"), vec!["mixer.", ".mixer"]);
    assert!(fragments_in("model.safetensors.index.json").is_empty());
    assert_eq!(fragments_in("model.{rest}"), vec!["model."]);
}
