//! The files a user gives us: reading what they wrote without trusting it, and writing
//! outputs so that a failed or interrupted run never leaves a half file under the real name.
//!
//! # Reading
//!
//! A path given on the command line or in an app file may name anything: `/dev/zero` (which
//! never ends), a FIFO (which blocks until someone writes), a directory, or a huge file.
//! [`read_text`] refuses everything but a regular file of at most `limit` bytes, with an
//! error that says which and names the limit, and never reads more than `limit + 1` bytes
//! even if the file grows meanwhile. It opens with `O_NONBLOCK`, so a FIFO is refused at once
//! instead of hanging the run.
//!
//! # Parsing
//!
//! [`deserialize_all`] turns a TOML table into a strict config struct
//! (`#[serde(deny_unknown_fields)]`) and reports every bad key, not only the first one serde
//! meets, each with its full key path and value.
//!
//! # Writing
//!
//! [`AtomicFile`] writes to a temporary file beside the destination (same directory, so the
//! rename cannot cross file systems), named `.<name>.mbox-<pid>-<n>.tmp`, created exclusively;
//! [`AtomicFile::commit`] renames it over the destination in one step. Until then an existing
//! file of that name is untouched; if the writer is dropped uncommitted (the run failed or
//! was aborted) the temporary file is removed. Only a SIGKILL can leave a temporary file
//! behind (a hidden dot-file, never the destination). A destination that is a character
//! device (`/dev/null`, `/dev/stdout`) is written directly (there is nothing to replace);
//! any other destination that exists and is not a regular file (a directory, a FIFO) is
//! refused at creation.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest app file or core map read, in bytes (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Largest rules file read, in bytes (64 MiB: a full public rule set is a few tens of MiB).
pub const MAX_RULES_BYTES: u64 = 64 << 20;

/// Reads `path` as UTF-8 text: a regular file of at most `limit` bytes, else an error of kind
/// `InvalidInput` whose message says what the path is or how large, and the limit.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    let what = if ft.is_dir() {
        Some("a directory")
    } else if ft.is_fifo() {
        Some("a FIFO")
    } else if ft.is_char_device() || ft.is_block_device() {
        Some("a device")
    } else if ft.is_socket() {
        Some("a socket")
    } else if !ft.is_file() {
        Some("not a regular file")
    } else {
        None
    };
    let refuse = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if let Some(what) = what {
        return refuse(format!("it is {what}, not a regular file"));
    }
    let too_big = |n: u64| format!("it is {n} bytes or more, larger than the limit of {limit} bytes");
    if meta.len() > limit {
        return refuse(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return refuse(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("it is not UTF-8 text ({e})")))
}

/// A file written under a temporary name and renamed into place by [`commit`](Self::commit).
/// See the module docs.
#[derive(Debug)]
pub struct AtomicFile {
    file: std::fs::File,
    /// The temporary name; `None` when writing a device directly.
    tmp: Option<std::path::PathBuf>,
    dest: std::path::PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing `dest`: creates the temporary file beside it. Errors if the directory
    /// cannot be written or `dest` exists and is not a regular file.
    pub fn create(dest: &Path) -> io::Result<AtomicFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if let Ok(meta) = std::fs::metadata(dest) {
            if meta.file_type().is_char_device() {
                let file = std::fs::OpenOptions::new().write(true).open(dest)?;
                return Ok(AtomicFile { file, tmp: None, dest: dest.to_path_buf(), committed: true });
            }
            if !meta.is_file() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "it exists and is not a regular file"));
            }
        }
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "it names no file"))?
            .to_string_lossy();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dest.with_file_name(format!(".{name}.mbox-{}-{n}.tmp", std::process::id()));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        Ok(AtomicFile { file, tmp: Some(tmp), dest: dest.to_path_buf(), committed: false })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// Renames the temporary file over the destination (once; later calls do nothing).
    pub fn commit(&mut self) -> io::Result<()> {
        if let (false, Some(tmp)) = (self.committed, &self.tmp) {
            std::fs::rename(tmp, &self.dest)?;
            self.committed = true;
        }
        Ok(())
    }
}

impl io::Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let (false, Some(tmp)) = (self.committed, &self.tmp) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Deserializes `table` into a strict config struct and reports **every** bad key, not only
/// the first one serde meets: each bad key is reported (``key `PATH`: MESSAGE``, `PATH` being
/// `path` followed by the key) and left out, and the rest is tried again. The result is
/// `Some` when what is left deserializes (the bad keys had defaults), so that the caller can
/// go on checking it; a missing required key ends the search.
pub fn deserialize_all<T: serde::de::DeserializeOwned>(table: toml::Table, path: &str) -> (Option<T>, Vec<String>) {
    let (cfg, errs) = deserialize_all_keyed(table, path);
    (cfg, errs.into_iter().map(|e| e.to_string()).collect())
}

/// A bad key found by [`deserialize_all_keyed`]: its full path and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    /// `path` + the key; empty when serde named no key.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.key.is_empty(), self.message.as_str()) {
            (true, m) => f.write_str(m),
            (false, "(it is required)") => write!(f, "missing key `{}` (it is required)", self.key),
            (false, m) => write!(f, "key `{}`: {m}", self.key),
        }
    }
}

/// As [`deserialize_all`], each problem with its key apart (for callers that format it
/// themselves).
pub fn deserialize_all_keyed<T: serde::de::DeserializeOwned>(
    mut table: toml::Table,
    path: &str,
) -> (Option<T>, Vec<KeyError>) {
    let mut errs = Vec::new();
    let mut removed = Vec::new();
    // Each round removes one key, so this ends; the bound is a guard.
    for _ in 0..=table.len() {
        // One `"key" = value` per key (values inline), so that an error's span names its key.
        let mut text = String::new();
        let mut starts = Vec::with_capacity(table.len());
        for (k, v) in &table {
            starts.push((text.len(), k.clone()));
            text.push_str(&format!("{} = {v}\n", toml::Value::String(k.clone())));
        }
        let e = match toml::from_str::<T>(&text) {
            Ok(cfg) => return (Some(cfg), errs),
            Err(e) => e,
        };
        let msg = e.message().trim().to_string();
        if let Some(missing) = msg.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            if !removed.iter().any(|r| r == missing) {
                errs.push(KeyError { key: format!("{path}{missing}"), message: "(it is required)".into() });
            }
            return (None, errs);
        }
        let key = e.span().and_then(|sp| starts.iter().rev().find(|(at, _)| *at <= sp.start)).map(|(_, k)| k.clone());
        let Some(key) = key else {
            errs.push(KeyError { key: String::new(), message: msg });
            return (None, errs);
        };
        let value = table.remove(&key).unwrap_or(toml::Value::Boolean(false));
        let found = if msg.starts_with("expected") { format!(", found {}", describe(&value)) } else { String::new() };
        errs.push(KeyError { key: format!("{path}{key}"), message: format!("{msg}{found}") });
        removed.push(key);
    }
    (None, errs)
}

/// A value as a message shows it: its TOML type and text (``integer 3``, ``string "80-"``).
pub fn describe(v: &toml::Value) -> String {
    let text = v.to_string();
    if text.len() > 60 {
        format!("{} {}…", v.type_str(), text.chars().take(60).collect::<String>())
    } else {
        format!("{} {text}", v.type_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("mbox-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_text(&ok, 100).unwrap(), "a = 1\n");
        let e = read_text(&ok, 3).unwrap_err();
        assert!(e.to_string().contains("larger than the limit of 3 bytes"), "{e}");
        let e = read_text(Path::new("/dev/zero"), MAX_CONFIG_BYTES).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        let e = read_text(&dir, MAX_CONFIG_BYTES).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        if made {
            let t = std::time::Instant::now();
            let e = read_text(&fifo, MAX_CONFIG_BYTES).unwrap_err();
            assert!(e.to_string().contains("a FIFO"), "{e}");
            assert!(t.elapsed() < std::time::Duration::from_secs(2));
        }
        std::fs::write(&ok, [0xff, 0xfe]).unwrap();
        assert!(read_text(&ok, 100).unwrap_err().to_string().contains("not UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_file_replaces_only_on_commit() {
        use std::io::Write as _;
        let dir = std::env::temp_dir().join(format!("mbox-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.jsonl");
        std::fs::write(&dest, "old\n").unwrap();
        let listing = || {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
            assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old\n");
            assert_eq!(listing().len(), 2, "the temporary file sits beside it");
        } // dropped uncommitted: a failed run
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old\n");
        assert_eq!(listing(), ["out.jsonl"]);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new\n").unwrap();
        f.commit().unwrap();
        f.commit().unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new\n");
        assert_eq!(listing(), ["out.jsonl"]);
        let mut null = AtomicFile::create(Path::new("/dev/null")).unwrap();
        null.write_all(b"discarded").unwrap();
        null.commit().unwrap();
        let e = AtomicFile::create(&dir).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
