//! The log spool: an append-only file per job, `spool/<job_id>.log` under
//! the agent directory (mode 0600), holding every log line the server has
//! not acknowledged yet. Lines are masked before they get here, so no secret
//! is ever written. Each record is a 4-byte big-endian length followed by the
//! `LogLine` protobuf.
//!
//! Lines are appended before they are sent; acknowledged lines are trimmed
//! from the front: the file is truncated when everything is acknowledged, or
//! rewritten without its acknowledged head once that head is large. The
//! uploader reads lines back from it when more are unacknowledged than it
//! keeps in memory, so a server outage of any length costs disk, not memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use ferry_proto::v1::LogLine;
use prost::Message as _;

/// The spool directory inside the agent directory.
pub const SPOOL_DIR: &str = "spool";
/// The spool file's extension.
pub const SPOOL_EXTENSION: &str = "log";
/// Rewrite the file without its acknowledged head once the head is at
/// least this large and at least half of the file.
pub const REWRITE_BYTES: u64 = 4 * 1024 * 1024;
/// The largest record read back (a line is at most 64 KiB of text).
const MAX_RECORD: u32 = 1024 * 1024;

/// One job's spool file.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    writer: File,
    reader: BufReader<File>,
    /// Where `reader` is positioned.
    reader_at: u64,
    /// Bytes in the file.
    len: u64,
    /// Where the next record to read back starts.
    read_offset: u64,
    /// Bytes at the front that hold acknowledged lines.
    acked: u64,
}

/// Whether a job id is usable as a file or directory name: 1 to 64 ASCII
/// letters, digits and dashes (a UUID).
pub fn is_safe_job_id(job_id: &str) -> bool {
    !job_id.is_empty()
        && job_id.len() <= 64
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The spool file of `job_id` in `dir`.
pub fn spool_path(dir: &Path, job_id: &str) -> PathBuf {
    dir.join(format!("{job_id}.{SPOOL_EXTENSION}"))
}

/// Creates `dir` (mode 0700) if needed.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Spool {
    /// Creates (or empties) the spool file of `job_id` in `dir`.
    pub fn create(dir: &Path, job_id: &str) -> io::Result<Spool> {
        if !is_safe_job_id(job_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the job id is not usable as a file name",
            ));
        }
        create_dir(dir)?;
        let path = spool_path(dir, job_id);
        let writer = open_append(&path, true)?;
        let reader = BufReader::new(File::open(&path)?);
        Ok(Spool {
            path,
            writer,
            reader,
            reader_at: 0,
            len: 0,
            read_offset: 0,
            acked: 0,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a line; returns the record's size. A line appended while
    /// every earlier one was read back counts as read (the caller keeps it).
    pub fn append(&mut self, line: &LogLine, read: bool) -> io::Result<u64> {
        let body = line.encode_to_vec();
        let length = u32::try_from(body.len())
            .ok()
            .filter(|&length| length <= MAX_RECORD)
            .ok_or_else(|| io::Error::other("log line too long for the spool"))?;
        let mut record = Vec::with_capacity(4 + body.len());
        record.extend_from_slice(&length.to_be_bytes());
        record.extend_from_slice(&body);
        self.writer.write_all(&record)?;
        let size = record.len() as u64;
        if read && self.read_offset == self.len {
            self.read_offset += size;
        }
        self.len += size;
        Ok(size)
    }

    /// Reads back the next line not read yet; returns it and its record size.
    pub fn read_next(&mut self) -> io::Result<(LogLine, u64)> {
        if self.read_offset >= self.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no spooled line left to read",
            ));
        }
        if self.reader_at != self.read_offset {
            self.reader.seek(SeekFrom::Start(self.read_offset))?;
            self.reader_at = self.read_offset;
        }
        let mut length = [0u8; 4];
        self.reader.read_exact(&mut length)?;
        let length = u32::from_be_bytes(length);
        if length > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "corrupt spool record",
            ));
        }
        let mut body = vec![0u8; length as usize];
        self.reader.read_exact(&mut body)?;
        let line = LogLine::decode(body.as_slice())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "corrupt spool record"))?;
        let size = 4 + u64::from(length);
        self.read_offset += size;
        self.reader_at = self.read_offset;
        Ok((line, size))
    }

    /// Records that the oldest `size` bytes' lines were acknowledged, and
    /// trims the file: truncated when everything is acknowledged, rewritten
    /// without its head when the head is large.
    pub fn acknowledge(&mut self, size: u64) -> io::Result<()> {
        self.acked = (self.acked + size).min(self.len);
        if self.acked == self.len {
            if self.len > 0 {
                self.writer.set_len(0)?;
                self.reopen_reader()?;
            }
            self.len = 0;
            self.read_offset = 0;
            self.acked = 0;
            return Ok(());
        }
        if self.acked >= REWRITE_BYTES && self.acked * 2 >= self.len {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Copies the unacknowledged tail to a new file that replaces this one.
    fn rewrite(&mut self) -> io::Result<()> {
        let mut temporary = self.path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        let _ = fs::remove_file(&temporary);
        {
            let mut source = File::open(&self.path)?;
            source.seek(SeekFrom::Start(self.acked))?;
            let mut target = open_append(&temporary, true)?;
            io::copy(&mut source, &mut target)?;
        }
        fs::rename(&temporary, &self.path)?;
        self.writer = open_append(&self.path, false)?;
        self.reopen_reader()?;
        self.len -= self.acked;
        self.read_offset -= self.acked.min(self.read_offset);
        self.acked = 0;
        Ok(())
    }

    fn reopen_reader(&mut self) -> io::Result<()> {
        self.reader = BufReader::new(File::open(&self.path)?);
        self.reader_at = 0;
        Ok(())
    }

    /// Deletes the file.
    pub fn remove(self) {
        if let Err(error) = fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the log spool file");
        }
    }
}

fn open_append(path: &Path, truncate: bool) -> io::Result<File> {
    if truncate {
        // O_APPEND cannot be combined with O_TRUNC: empty it first.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
    }
    // Appends only, so that writes after a truncation start at the front.
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Deletes the spool files a previous run left behind: their jobs' tokens
/// lived only in that run's memory, so their lines can never be sent.
/// Returns how many were discarded.
pub fn discard_leftovers(dir: &Path) -> usize {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return 0,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the log spool directory");
            return 0;
        }
    };
    let mut discarded = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_spool = path
            .extension()
            .is_some_and(|extension| extension == SPOOL_EXTENSION || extension == "new");
        if !is_spool || !path.is_file() {
            continue;
        }
        let job_id = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().trim_end_matches(".log").to_owned())
            .unwrap_or_default();
        let bytes = entry.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {
                discarded += 1;
                tracing::warn!(
                    job_id = %job_id,
                    bytes,
                    "discarded unsent log lines of a job from an earlier run: its job token is gone, so they cannot be sent"
                );
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot remove a leftover log spool file");
            }
        }
    }
    discarded
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use ferry_proto::v1::LogStream;

    use super::*;

    fn line(sequence: u64, text: &str) -> LogLine {
        LogLine {
            sequence,
            step_index: 1,
            time: Some(ferry_proto::time::now()),
            stream: LogStream::Stdout as i32,
            text: text.into(),
            step_update: None,
        }
    }

    #[test]
    fn lines_are_read_back_in_order_and_trimmed_once_acknowledged() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("spool");
        let mut spool = Spool::create(&dir, "job-1").expect("spool");
        let mode = fs::metadata(spool.path())
            .expect("file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);

        // The first two stay in memory (read), the rest only in the file.
        let mut sizes = Vec::new();
        for sequence in 1..=5 {
            let read = sequence <= 2;
            sizes.push(
                spool
                    .append(&line(sequence, &format!("line {sequence}")), read)
                    .expect("append"),
            );
        }
        let on_disk = fs::metadata(spool.path()).expect("file").len();
        assert_eq!(on_disk, spool.len());
        for sequence in 3..=5 {
            let (read, size) = spool.read_next().expect("read");
            assert_eq!(read.sequence, sequence);
            assert_eq!(read.text, format!("line {sequence}"));
            assert_eq!(size, sizes[sequence as usize - 1]);
        }
        assert!(spool.read_next().is_err());

        spool.acknowledge(sizes[0] + sizes[1]).expect("ack");
        assert_eq!(
            fs::metadata(spool.path()).expect("file").len(),
            on_disk,
            "small heads stay"
        );
        spool.acknowledge(sizes[2..].iter().sum()).expect("ack");
        assert!(spool.is_empty());
        assert_eq!(
            fs::metadata(spool.path()).expect("file").len(),
            0,
            "truncated"
        );

        // Appends after the truncation start over at the front.
        let size = spool.append(&line(6, "six"), false).expect("append");
        assert_eq!(spool.len(), size);
        assert_eq!(spool.read_next().expect("read").0.sequence, 6);
        let path = spool.path().to_owned();
        spool.remove();
        assert!(!path.exists());
    }

    #[test]
    fn a_large_acknowledged_head_is_rewritten_away() {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::create(temp.path(), "job-2").expect("spool");
        let text = "x".repeat(60 * 1024);
        let mut sizes = Vec::new();
        for sequence in 1..=100 {
            sizes.push(spool.append(&line(sequence, &text), false).expect("append"));
        }
        for _ in 0..90 {
            spool.read_next().expect("read");
        }
        let head: u64 = sizes[..80].iter().sum();
        spool.acknowledge(head).expect("ack");
        let rest: u64 = sizes[80..].iter().sum();
        assert_eq!(spool.len(), rest, "rewritten");
        assert_eq!(fs::metadata(spool.path()).expect("file").len(), rest);
        // Reading goes on where it was, and appends land after the tail.
        assert_eq!(spool.read_next().expect("read").0.sequence, 91);
        spool.append(&line(101, "last"), false).expect("append");
        for expected in 92..=101 {
            assert_eq!(spool.read_next().expect("read").0.sequence, expected);
        }
    }

    #[test]
    fn leftovers_of_an_earlier_run_are_discarded() {
        let temp = tempfile::tempdir().expect("tempdir");
        assert_eq!(discard_leftovers(&temp.path().join("missing")), 0);
        let mut spool = Spool::create(temp.path(), "old-job").expect("spool");
        spool.append(&line(1, "masked"), false).expect("append");
        fs::write(temp.path().join("notes.txt"), "keep").expect("write");
        assert_eq!(discard_leftovers(temp.path()), 1);
        assert!(Spool::create(temp.path(), "../escape").is_err());
        assert!(Spool::create(temp.path(), "").is_err());
        assert!(!spool_path(temp.path(), "old-job").exists());
        assert!(temp.path().join("notes.txt").exists());
    }
}
