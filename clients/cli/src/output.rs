//! Writing results: text and JSON to standard output, notes to standard
//! error. Write errors (a closed pipe) are returned, never panics.

use std::io::Write;

use serde::Serialize;

/// Writes `text` to standard output as is.
pub(crate) fn text(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Writes `value` as pretty JSON and a line break to standard output.
pub(crate) fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut encoded = serde_json::to_string_pretty(value)?;
    encoded.push('\n');
    text(&encoded)
}

/// Writes `value` as JSON on one line to standard output.
pub(crate) fn json_line<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut encoded = serde_json::to_string(value)?;
    encoded.push('\n');
    text(&encoded)
}

/// Writes a note for the person at the terminal to standard error; a
/// failure to do so is ignored.
pub(crate) fn note(text: &str) {
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "{text}");
}

/// Whether an error comes from writing to a closed pipe (`ferryctl … | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipes_are_recognized() {
        let error = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&error.context("writing")));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
