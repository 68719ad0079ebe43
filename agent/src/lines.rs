//! Splitting a child's output bytes into log lines.

/// The longest line text, in bytes; longer lines are cut into pieces.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Turns a byte stream into lines: split at `\n`, a trailing `\r` removed,
/// invalid UTF-8 replaced by U+FFFD, and text with no line break for
/// [`MAX_LINE_BYTES`] cut into pieces of at most that many bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter with nothing buffered.
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    /// Adds bytes; returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(newline) = bytes.iter().position(|&byte| byte == b'\n') {
            self.pending.extend_from_slice(&bytes[..newline]);
            bytes = &bytes[newline + 1..];
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            push_text(&mut lines, &line);
        }
        self.pending.extend_from_slice(bytes);
        // `>` so the byte after the cut is known: a character is never split.
        while self.pending.len() > MAX_LINE_BYTES {
            let cut = char_boundary_before(&self.pending, MAX_LINE_BYTES);
            let rest = self.pending.split_off(cut);
            let piece = std::mem::replace(&mut self.pending, rest);
            push_text(&mut lines, &piece);
        }
        lines
    }

    /// The last line when the stream ended without a line break.
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.is_empty() {
            push_text(&mut lines, &line);
        }
        lines
    }
}

/// Converts one line lossily and cuts it to pieces of at most
/// [`MAX_LINE_BYTES`] (replacement characters can make it longer).
fn push_text(lines: &mut Vec<String>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX_LINE_BYTES {
        lines.push(text.into_owned());
        return;
    }
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_LINE_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        lines.push(piece.to_owned());
        rest = tail;
    }
}

/// The largest cut at or below `limit` that does not split a valid UTF-8
/// sequence: it backs up over at most three continuation bytes.
fn char_boundary_before(bytes: &[u8], limit: usize) -> usize {
    let limit = limit.min(bytes.len());
    let mut cut = limit;
    while cut > 0 && limit - cut < 3 && bytes.get(cut).is_some_and(|&byte| byte & 0xC0 == 0x80) {
        cut -= 1;
    }
    // Only back up when it lands on the start of a multi-byte sequence.
    if cut > 0 && bytes.get(cut).is_some_and(|&byte| byte >= 0xC0) {
        cut
    } else {
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            lines.extend(splitter.push(chunk));
        }
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn splits_on_newlines_and_strips_crlf() {
        assert_eq!(split_all(&[b"a\nb\r\nc"]), ["a", "b", "c"]);
        assert_eq!(split_all(&[b"\n\r\n"]), ["", ""]);
        assert_eq!(split_all(&[b"only\r"]), ["only"]);
        assert_eq!(split_all(&[b"in\rside\n"]), ["in\rside"]);
        assert!(split_all(&[b""]).is_empty());
    }

    #[test]
    fn joins_lines_across_chunks() {
        assert_eq!(
            split_all(&[b"hel", b"lo\r", b"\nwor", b"ld\n"]),
            ["hello", "world"]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(
            split_all(&[b"ok \xff\xfe end\n"]),
            ["ok \u{fffd}\u{fffd} end"]
        );
        // A multi-byte character split across chunks survives intact.
        let euro = "€".as_bytes();
        assert_eq!(split_all(&[&euro[..1], &euro[1..], b"\n"]), ["€"]);
    }

    #[test]
    fn long_lines_without_newline_are_cut_into_pieces() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let lines = split_all(&[&long[..1000], &long[1000..], b"\n"]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].len(), MAX_LINE_BYTES);
        assert_eq!(lines[2].len(), 10);
        // Pieces are emitted as soon as they are full, before any newline.
        let mut splitter = LineSplitter::new();
        assert_eq!(splitter.push(&long[..MAX_LINE_BYTES + 1]).len(), 1);
    }

    #[test]
    fn cuts_never_split_a_character() {
        let mut text = "a".repeat(MAX_LINE_BYTES - 1).into_bytes();
        text.extend_from_slice("€€".as_bytes());
        // Without a newline the raw buffer is cut, in two chunks the cut
        // position falls inside the first euro sign.
        let lines = split_all(&[&text[..MAX_LINE_BYTES], &text[MAX_LINE_BYTES..]]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|line| line.len() <= MAX_LINE_BYTES));
        assert_eq!(
            lines.concat(),
            format!("{}€€", "a".repeat(MAX_LINE_BYTES - 1))
        );
        assert!(!lines.concat().contains('\u{fffd}'));
    }

    #[test]
    fn replacement_characters_cannot_make_a_piece_too_long() {
        let invalid = vec![0xffu8; MAX_LINE_BYTES - 1];
        let lines = split_all(&[&invalid, b"\n"]);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|line| line.len() <= MAX_LINE_BYTES));
        assert_eq!(lines.concat().chars().count(), MAX_LINE_BYTES - 1);
    }
}
