//! Source archives: a directory packed into a gzip-compressed tar for
//! `job queue --source`, written to an anonymous temporary file as it is
//! built and hashed on the way, so that the whole archive is never held in
//! memory.
//!
//! What goes in: every regular file, directory and symbolic link under the
//! directory, by its path relative to it (`/`-separated), with its
//! permission bits and modification time; owners are left out (uid and gid
//! 0, no names) and entries are sorted by name so the same tree packs to
//! the same bytes. `.git` (a directory or a submodule's file, at any depth)
//! is skipped unless asked for. Symbolic links are stored as links, never
//! followed; a link whose target resolves outside the directory (an
//! absolute target, or one that climbs out with `..`) is refused. Other
//! kinds of file (sockets, FIFOs, devices) are skipped and listed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// A packed source archive in an anonymous temporary file (gone when it is
/// dropped).
#[derive(Debug)]
pub struct PackedSource {
    /// The archive, positioned at its start.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of the archive, lowercase hex.
    pub sha256: String,
    /// Regular files packed.
    pub files: u64,
    /// Paths (relative to the directory) of entries skipped because they are
    /// neither files, directories nor symbolic links.
    pub skipped: Vec<PathBuf>,
}

/// Packs `dir` into a gzip-compressed tar in a temporary file. `.git` is
/// left out unless `include_git`.
pub fn pack(dir: &Path, include_git: bool) -> anyhow::Result<PackedSource> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("cannot read source directory {}", dir.display()))?;
    if !root.is_dir() {
        bail!("source {} is not a directory", dir.display());
    }
    let file = tempfile::tempfile().context("cannot create a temporary file for the source")?;
    let writer = HashingWriter::new(BufWriter::new(
        file.try_clone()
            .context("cannot open the temporary source file")?,
    ));
    let mut packer = Packer {
        builder: tar::Builder::new(GzEncoder::new(writer, Compression::default())),
        root: root.clone(),
        include_git,
        files: 0,
        skipped: Vec::new(),
    };
    packer
        .add_dir(&root, Path::new(""))
        .with_context(|| format!("cannot pack source {}", dir.display()))?;
    let Packer {
        builder,
        files,
        skipped,
        ..
    } = packer;
    let writing = || format!("cannot write the source archive of {}", dir.display());
    let encoder = builder.into_inner().with_context(writing)?;
    let mut writer = encoder.finish().with_context(writing)?;
    writer.flush().with_context(writing)?;
    let (size, sha256) = writer.finish();
    let mut file = file;
    file.seek(SeekFrom::Start(0)).with_context(writing)?;
    Ok(PackedSource {
        file,
        size,
        sha256,
        files,
        skipped,
    })
}

struct Packer<W: Write> {
    builder: tar::Builder<W>,
    /// The canonical source directory.
    root: PathBuf,
    include_git: bool,
    files: u64,
    skipped: Vec<PathBuf>,
}

impl<W: Write> Packer<W> {
    /// Adds the entries of `dir` (canonical: no component is a link), which
    /// is `relative` inside the archive.
    fn add_dir(&mut self, dir: &Path, relative: &Path) -> anyhow::Result<()> {
        let shown = |path: &Path| {
            if path.as_os_str().is_empty() {
                ".".to_owned()
            } else {
                path.display().to_string()
            }
        };
        let mut entries = std::fs::read_dir(dir)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .with_context(|| format!("cannot list source directory {}", shown(relative)))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            if name == ".git" && !self.include_git {
                continue;
            }
            let path = entry.path();
            let inside = relative.join(&name);
            let metadata = std::fs::symlink_metadata(&path)
                .with_context(|| format!("cannot read {}", inside.display()))?;
            let kind = metadata.file_type();
            let mut header = Header::new_gnu();
            header.set_mode(mode(&metadata));
            header.set_mtime(mtime(&metadata));
            header.set_uid(0);
            header.set_gid(0);
            let adding = || format!("cannot add {} to the source archive", inside.display());
            if kind.is_dir() {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                self.builder
                    .append_data(&mut header, &inside, io::empty())
                    .with_context(adding)?;
                self.add_dir(&path, &inside)?;
            } else if kind.is_file() {
                let size = metadata.len();
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                let file = File::open(&path)
                    .with_context(|| format!("cannot read {}", inside.display()))?;
                let exact = ExactReader {
                    inner: file.take(size),
                    remaining: size,
                };
                self.builder
                    .append_data(&mut header, &inside, exact)
                    .with_context(adding)?;
                self.files += 1;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path)
                    .with_context(|| format!("cannot read link {}", inside.display()))?;
                check_link(&self.root, dir, &target).map_err(|reason| {
                    anyhow::anyhow!(
                        "symbolic link {} points outside the source directory ({}): {reason}",
                        inside.display(),
                        target.display()
                    )
                })?;
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                self.builder
                    .append_link(&mut header, &inside, &target)
                    .with_context(adding)?;
            } else {
                self.skipped.push(inside);
            }
        }
        Ok(())
    }
}

/// Checks that the link `target`, found in the canonical directory `dir`,
/// resolves inside the canonical `root`: every existing prefix is resolved
/// on disk (so links it passes through count), the rest lexically.
fn check_link(root: &Path, dir: &Path, target: &Path) -> Result<(), &'static str> {
    let mut current = dir.to_path_buf();
    for component in target.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err("the target is absolute"),
            Component::CurDir => {}
            Component::ParentDir => {
                if !current.pop() || !current.starts_with(root) {
                    return Err("the target climbs out of it");
                }
            }
            Component::Normal(name) => {
                let next = current.join(name);
                current = match std::fs::symlink_metadata(&next) {
                    Ok(_) => next
                        .canonicalize()
                        .map_err(|_| "the target cannot be resolved")?,
                    Err(_) => next,
                };
                if !current.starts_with(root) {
                    return Err("the target resolves outside it");
                }
            }
        }
    }
    if current.starts_with(root) {
        Ok(())
    } else {
        Err("the target resolves outside it")
    }
}

#[cfg(unix)]
fn mode(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode(metadata: &std::fs::Metadata) -> u32 {
    if metadata.is_dir() {
        0o755
    } else if metadata.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

fn mtime(metadata: &std::fs::Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Reads exactly `remaining` bytes: a file that shrank while it was packed
/// is an error rather than a corrupt archive (one that grew is cut at the
/// size its header announced).
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was packed",
            ));
        }
        self.remaining = self.remaining.saturating_sub(read as u64);
        Ok(read)
    }
}

/// Passes bytes through while counting and hashing them.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The number of bytes written and their SHA-256, lowercase hex.
    pub(crate) fn finish(self) -> (u64, String) {
        (self.written, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests;
