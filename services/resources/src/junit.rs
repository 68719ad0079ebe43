//! JUnit XML → test counts. Accepts the common dialects (Surefire, pytest,
//! Jest, go-junit-report): every `<testcase>` is one test; a `<failure>` or
//! `<error>` child fails it, a `<skipped>` child skips it.

use ferry_store::TestSummary;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Most failed test names kept in a summary.
pub const MAX_FAILED_NAMES: usize = 100;

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

#[derive(Default)]
struct Case {
    name: String,
    failed: bool,
    skipped: bool,
}

fn attribute(element: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|attribute| attribute.key.as_ref() == key)
        .and_then(|attribute| {
            attribute
                .unescape_value()
                .ok()
                .map(|value| value.into_owned())
        })
}

fn open_case(element: &BytesStart<'_>) -> Case {
    let name = attribute(element, b"name").unwrap_or_else(|| "unnamed".to_owned());
    let name = match attribute(element, b"classname") {
        Some(class) if !class.is_empty() => format!("{class}.{name}"),
        _ => name,
    };
    Case {
        name,
        ..Case::default()
    }
}

fn close_case(case: Case, summary: &mut TestSummary) {
    summary.total += 1;
    if case.failed {
        summary.failed += 1;
        if summary.failed_tests.len() < MAX_FAILED_NAMES {
            summary.failed_tests.push(case.name);
        }
    } else if case.skipped {
        summary.skipped += 1;
    } else {
        summary.passed += 1;
    }
}

/// Counts the tests of one JUnit XML document.
pub fn parse(xml: &[u8]) -> Result<TestSummary, ParseError> {
    let mut reader = Reader::from_reader(xml);
    let mut buffer = Vec::new();
    let mut summary = TestSummary {
        files: 1,
        ..TestSummary::default()
    };
    let mut case: Option<Case> = None;
    let mut saw_root = false;
    loop {
        let event = reader.read_event_into(&mut buffer).map_err(|error| {
            ParseError(format!(
                "not valid XML at byte {}: {error}",
                reader.buffer_position()
            ))
        })?;
        match event {
            Event::Start(element) | Event::Empty(element)
                if element.name().as_ref() == b"testsuites"
                    || element.name().as_ref() == b"testsuite" =>
            {
                saw_root = true;
            }
            Event::Start(element) if element.name().as_ref() == b"testcase" => {
                case = Some(open_case(&element));
            }
            Event::Empty(element) if element.name().as_ref() == b"testcase" => {
                close_case(open_case(&element), &mut summary);
            }
            Event::Start(element) | Event::Empty(element) => {
                if let Some(case) = case.as_mut() {
                    match element.name().as_ref() {
                        b"failure" | b"error" => case.failed = true,
                        b"skipped" => case.skipped = true,
                        _ => {}
                    }
                }
            }
            Event::End(element) if element.name().as_ref() == b"testcase" => {
                if let Some(done) = case.take() {
                    close_case(done, &mut summary);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buffer.clear();
    }
    if !saw_root {
        return Err(ParseError(
            "no <testsuites> or <testsuite> element: not a JUnit report".to_owned(),
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUREFIRE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.example.AppTest" tests="4" failures="1" errors="1" skipped="1">
  <testcase classname="com.example.AppTest" name="adds" time="0.01"/>
  <testcase classname="com.example.AppTest" name="divides"><failure message="boom">trace</failure></testcase>
  <testcase classname="com.example.AppTest" name="reads &amp; writes"><error type="IOError"/></testcase>
  <testcase classname="com.example.AppTest" name="later"><skipped/></testcase>
</testsuite>"#;

    #[test]
    fn counts_every_outcome_and_names_failures() {
        let summary = parse(SUREFIRE.as_bytes()).expect("parse");
        assert_eq!(
            (
                summary.total,
                summary.passed,
                summary.failed,
                summary.skipped
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(
            summary.failed_tests,
            [
                "com.example.AppTest.divides",
                "com.example.AppTest.reads & writes"
            ]
        );
    }

    #[test]
    fn nested_suites_count_once_each() {
        let xml = r#"<testsuites><testsuite name="a"><testcase name="x"/></testsuite>
            <testsuite name="b"><testcase name="y"><failure/></testcase></testsuite></testsuites>"#;
        let summary = parse(xml.as_bytes()).expect("parse");
        assert_eq!(
            (summary.total, summary.passed, summary.failed, summary.files),
            (2, 1, 1, 1)
        );
        assert_eq!(summary.failed_tests, ["y"]);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(parse(b"<html><body>no</body></html>").is_err());
        assert!(
            parse(b"<testsuite><testcase name='x'></testsuite>").is_err(),
            "mismatched tags"
        );
        assert!(parse(b"\x00\x01 not xml at all <<<").is_err());
    }
}
