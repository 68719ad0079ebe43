//! Secret masking: every log line passes through a [`Masker`] before it
//! leaves the agent.
//!
//! For each secret value the masker looks for the value itself, each line of
//! a multi-line value, and the forms a script is likely to print it in:
//! base64 (standard and URL-safe, padded and not, also of the value followed
//! by a newline as `echo "$SECRET" | base64` prints it), percent-encoded
//! (`%20` and `+` for spaces) and JSON-escaped. Every occurrence, including
//! overlapping occurrences of different secrets, is replaced by `***`.
//! Empty and whitespace-only values are ignored.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a masked occurrence is replaced with.
pub const MASK: &str = "***";

/// Up to this many patterns the matcher is a DFA (fast, and small for a
/// handful of secrets); beyond, aho-corasick's default (and memory-lean)
/// choice with its prefilter.
const DFA_PATTERNS: usize = 256;

/// The prefix of the stdout command that adds a value to mask at run time.
pub const ADD_MASK_COMMAND: &str = "::add-mask::";

/// Replaces secret values (and their common encodings) in text.
///
/// `Debug` prints only how many patterns it holds, never a value.
#[derive(Default)]
pub struct Masker {
    patterns: BTreeSet<String>,
    matcher: Option<AhoCorasick>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Masker({} patterns)", self.patterns.len())
    }
}

impl Masker {
    /// A masker for these secret values; empty values are ignored.
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut masker = Masker::default();
        for secret in secrets {
            masker.patterns.extend(forms(secret.as_ref()));
        }
        masker.rebuild();
        masker
    }

    /// Adds a value to mask from now on; returns whether anything new was
    /// added (the matcher is rebuilt only then).
    pub fn add(&mut self, secret: &str) -> bool {
        let before = self.patterns.len();
        self.patterns.extend(forms(secret));
        if self.patterns.len() == before {
            return false;
        }
        self.rebuild();
        true
    }

    /// How many strings are searched for (values, lines and encodings).
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    fn rebuild(&mut self) {
        self.matcher = if self.patterns.is_empty() {
            None
        } else {
            // Standard semantics so that overlapping matches can be found and
            // their union masked; a build failure falls back to plain search.
            // A DFA without prefilter for the usual handful of patterns: the
            // prefilter hunts for a secret's rarest bytes, which in random
            // secrets are letters and digits, common in any log, and cost
            // more than they skip (`cargo bench -p ferry-agent --bench
            // masking`: 0.228 µs a line before, 0.140 with this and the
            // `is_match` fast path in `mask`).
            let small = self.patterns.len() <= DFA_PATTERNS;
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .kind(small.then_some(AhoCorasickKind::DFA))
                .prefilter(!small)
                .build(&self.patterns)
                .ok()
        };
    }

    /// `text` with every occurrence of every pattern replaced by [`MASK`].
    /// Overlapping or adjacent occurrences are merged into one mask.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.patterns.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut ranges: Vec<(usize, usize)> = match &self.matcher {
            // Most lines hold no secret: one pass says so.
            Some(matcher) if !matcher.is_match(text) => return Cow::Borrowed(text),
            Some(matcher) => matcher
                .find_overlapping_iter(text)
                .map(|found| (found.start(), found.end()))
                .collect(),
            None => self
                .patterns
                .iter()
                .flat_map(|pattern| {
                    text.match_indices(pattern.as_str())
                        .map(|(start, found)| (start, start + found.len()))
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        ranges.sort_unstable();
        let mut masked = String::with_capacity(text.len());
        let mut copied = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in ranges {
            match current {
                Some((_, current_end)) if start <= current_end => {
                    if let Some(range) = current.as_mut() {
                        range.1 = range.1.max(end);
                    }
                }
                _ => {
                    if let Some((current_start, current_end)) = current {
                        masked.push_str(&text[copied..current_start]);
                        masked.push_str(MASK);
                        copied = current_end;
                    }
                    current = Some((start, end));
                }
            }
        }
        if let Some((current_start, current_end)) = current {
            masked.push_str(&text[copied..current_start]);
            masked.push_str(MASK);
            copied = current_end;
        }
        masked.push_str(&text[copied..]);
        Cow::Owned(masked)
    }
}

/// Every string to mask for one secret value.
fn forms(value: &str) -> BTreeSet<String> {
    let mut forms = BTreeSet::new();
    // Empty and blank values would mask every space: ignored.
    if value.trim().is_empty() {
        return forms;
    }
    forms.insert(value.to_owned());
    if value.contains('\n') {
        for line in value.lines() {
            let line = line.trim();
            if !line.is_empty() {
                forms.insert(line.to_owned());
            }
        }
    }
    for bytes in [value.to_owned(), format!("{value}\n")] {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            forms.insert(engine.encode(bytes.as_bytes()));
        }
    }
    forms.insert(percent_encode(value, false));
    forms.insert(percent_encode(value, true));
    if let Ok(json) = serde_json::to_string(value) {
        let inner = json
            .strip_prefix('"')
            .and_then(|json| json.strip_suffix('"'))
            .unwrap_or(&json);
        forms.insert(inner.to_owned());
    }
    forms.retain(|form| !form.is_empty());
    forms
}

/// RFC 3986 percent-encoding of everything but unreserved characters; with
/// `plus_for_space`, spaces become `+` as in HTML form encoding.
fn percent_encode(value: &str, plus_for_space: bool) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(char::from(byte));
            }
            b' ' if plus_for_space => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// The value an `::add-mask::VALUE` stdout line adds, if `line` is one.
pub fn add_mask_value(line: &str) -> Option<&str> {
    line.trim_start()
        .strip_prefix(ADD_MASK_COMMAND)
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(secrets: &[&str], text: &str) -> String {
        Masker::new(secrets).mask(text).into_owned()
    }

    #[test]
    fn masks_the_value_everywhere_and_leaves_other_text_alone() {
        assert_eq!(
            masked(&["hunter2"], "pw=hunter2 again hunter2."),
            "pw=*** again ***."
        );
        assert_eq!(
            masked(&["hunter2"], "nothing secret here"),
            "nothing secret here"
        );
        assert!(matches!(
            Masker::new(["x1"]).mask("clean"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn empty_values_are_ignored() {
        let masker = Masker::new(["", " ", "\n"]);
        assert_eq!(masker.pattern_count(), 0);
        assert_eq!(masker.mask("text stays"), "text stays");
    }

    #[test]
    fn masks_base64_in_every_alphabet_and_padding() {
        // Encodes with '+' (standard) or '-' (URL-safe) and "==" padding.
        let secret = "?>~s3cr3t!";
        let mut seen = BTreeSet::new();
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(secret);
            seen.insert(encoded.clone());
            assert_eq!(
                masked(&[secret], &format!("b64 {encoded} end")),
                "b64 *** end",
                "{encoded}"
            );
        }
        assert_eq!(
            seen.len(),
            4,
            "the test secret must have distinct encodings: {seen:?}"
        );
        let with_newline = STANDARD.encode("?>~s3cr3t!\n");
        assert_eq!(masked(&[secret], &with_newline), "***");
    }

    #[test]
    fn masks_url_encoded_forms() {
        let secret = "p@ss word/&=";
        assert_eq!(percent_encode(secret, false), "p%40ss%20word%2F%26%3D");
        assert_eq!(
            masked(&[secret], "u=p%40ss%20word%2F%26%3D&x=1"),
            "u=***&x=1"
        );
        assert_eq!(masked(&[secret], "u=p%40ss+word%2F%26%3D"), "u=***");
    }

    #[test]
    fn masks_json_escaped_forms() {
        let secret = "quote\"back\\slash\ttab";
        let line = r#"{"token":"quote\"back\\slash\ttab"}"#;
        assert_eq!(masked(&[secret], line), r#"{"token":"***"}"#);
    }

    #[test]
    fn masks_each_line_of_a_multi_line_secret() {
        let secret = "-----BEGIN KEY-----\r\nAAAAfirstline\n  BBBBsecond\n-----END KEY-----\n";
        let masker = Masker::new([secret]);
        assert_eq!(masker.mask("-----BEGIN KEY-----"), "***");
        assert_eq!(masker.mask("    AAAAfirstline"), "    ***");
        assert_eq!(masker.mask("x BBBBsecond y"), "x *** y");
        assert_eq!(masker.mask("unrelated"), "unrelated");
    }

    #[test]
    fn overlapping_and_nested_secrets_are_masked_as_their_union() {
        // Nested: the longer one wins, nothing of it leaks.
        assert_eq!(masked(&["abc", "abcdef"], "xabcdefx"), "x***x");
        // Overlapping: "abcd" and "cdef" overlap in "abcdef"; nothing leaks.
        assert_eq!(masked(&["abcd", "cdef"], "[abcdef]"), "[***]");
        // Adjacent occurrences become one mask.
        assert_eq!(masked(&["ab"], "ababab-ab"), "***-***");
        // A secret inside another secret's text but standing alone.
        assert_eq!(masked(&["abc", "abcdef"], "abc abcdef"), "*** ***");
    }

    #[test]
    fn non_ascii_secrets_and_text_stay_valid_utf8() {
        let masker = Masker::new(["pässwörd"]);
        assert_eq!(masker.mask("→pässwörd←"), "→***←");
        assert_eq!(masker.mask(&percent_encode("pässwörd", false)), "***");
    }

    #[test]
    fn values_added_at_run_time_are_masked_from_then_on() {
        let mut masker = Masker::new(["first1"]);
        assert_eq!(masker.mask("late-value"), "late-value");
        assert!(masker.add("late-value"));
        assert!(!masker.add("late-value"), "adding again changes nothing");
        assert!(!masker.add(""));
        assert_eq!(masker.mask("first1 late-value"), "*** ***");
        assert_eq!(masker.mask(&STANDARD.encode("late-value")), "***");
    }

    #[test]
    fn add_mask_commands_are_recognised() {
        assert_eq!(add_mask_value("::add-mask::abc"), Some("abc"));
        assert_eq!(add_mask_value("  ::add-mask:: abc \r"), Some("abc"));
        assert_eq!(add_mask_value("::add-mask::"), None);
        assert_eq!(add_mask_value("echo ::add-mask::abc"), None);
    }

    #[test]
    fn debug_never_prints_a_value() {
        let masker = Masker::new(["topsecretvalue"]);
        let debug = format!("{masker:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
    }
}
