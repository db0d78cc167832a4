//! Who created a region, whether that run is still alive, and cleaning up after dead runs.
//!
//! A region's header records its creator: the pid **and** the process start time (field 22
//! of `/proc/PID/stat`, clock ticks since boot), because a pid alone may have been reused by
//! an unrelated process. A region is *live* while a process with that pid and that start
//! time exists; otherwise its run is dead and its files are stale.
//!
//! # Contract
//!
//! * Files are inspected without following links (`O_NOFOLLOW`), without blocking
//!   (`O_NONBLOCK`: a FIFO planted in `/dev/shm` cannot hang us), and only regular files are
//!   read — at most the header's first [`INSPECT_BYTES`] bytes, never the whole file.
//! * [`clean`] never removes a file owned by another user, nor a live run's files. A stale
//!   file is a region file whose creator is dead, a file named like a region whose header is
//!   not a region's (left half-made by a killed run), or another `mbox.<prefix>.*` file whose
//!   prefix has no live region; only files owned by the effective user count.
//! * `check_free` is what [`Region::create`](super::Region::create) asks before it
//!   creates: a prefix in use by a live run, or whose region file belongs to someone else, is
//!   refused with an error naming the pid or the owner.

use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{region_path, Header, ShmError, MAGIC, SHM_DIR, VERSION};

/// How many bytes of a file [`inspect`] reads at most: the header up to the creator fields.
pub const INSPECT_BYTES: usize = std::mem::offset_of!(Header, entries);

/// A process, identified so that a reused pid is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creator {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start: u64,
}

impl Creator {
    /// This process.
    pub fn current() -> Creator {
        let pid = std::process::id();
        Creator { pid, start: start_time(pid).unwrap_or(0) }
    }

    /// Whether the process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        self.pid != 0 && start_time(self.pid) == Some(self.start)
    }
}

/// The start time of process `pid`, or `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)` come field 3 (state), 4, ...: field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What a file under `/dev/shm` named `mbox.*` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// A region whose creator runs.
    Live(Creator),
    /// A region whose creator has ended.
    Dead(Creator),
    /// Not a region of this version (the reason says why).
    Other(String),
}

/// One `mbox.*` file under `/dev/shm`.
#[derive(Clone, Debug)]
pub struct FileInfo {
    /// Its path.
    pub path: PathBuf,
    /// The prefix in its name (`mbox.<prefix>.<what>`).
    pub prefix: String,
    /// Owner's user id.
    pub uid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Live, dead, or not a region.
    pub state: State,
}

/// Looks at `path` without following links, blocking, or reading more than the header.
pub fn inspect(path: &Path) -> io::Result<FileInfo> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let prefix = name.strip_prefix("mbox.").and_then(|r| r.split('.').next()).unwrap_or_default().to_string();
    let meta = std::fs::symlink_metadata(path)?;
    let info =
        |state| FileInfo { path: path.to_path_buf(), prefix: prefix.clone(), uid: meta.uid(), size: meta.len(), state };
    if !meta.file_type().is_file() {
        return Ok(info(State::Other("not a regular file".into())));
    }
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(info(State::Other("not readable".into()))),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; INSPECT_BYTES];
    if file.read_exact_at(&mut head, 0).is_err() {
        return Ok(info(State::Other("shorter than a region header".into())));
    }
    let word = |field: usize, n: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&head[field..field + n]);
        u64::from_ne_bytes(b)
    };
    if word(std::mem::offset_of!(Header, magic), 8) != MAGIC {
        return Ok(info(State::Other("no region magic".into())));
    }
    let version = word(std::mem::offset_of!(Header, version), 4) as u32;
    if version != VERSION {
        return Ok(info(State::Other(format!("region version {version}, not {VERSION}"))));
    }
    let creator = Creator {
        pid: word(std::mem::offset_of!(Header, creator_pid), 4) as u32,
        start: word(std::mem::offset_of!(Header, creator_start), 8),
    };
    Ok(info(if creator.is_alive() { State::Live(creator) } else { State::Dead(creator) }))
}

/// Every `mbox.*` file under `/dev/shm`, by name.
pub fn list() -> io::Result<Vec<FileInfo>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        let is_ours = entry.file_name().to_str().is_some_and(|n| n.starts_with("mbox."));
        if is_ours {
            match inspect(&entry.path()) {
                Ok(i) => out.push(i),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // gone meanwhile
                Err(e) => return Err(e),
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What [`clean`] did.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Files left alone, with the reason.
    pub kept: Vec<(PathBuf, String)>,
}

/// Removes the stale files of dead runs — of `prefix` only, or of every prefix — that belong
/// to the effective user. See the module contract.
pub fn clean(prefix: Option<&str>) -> io::Result<Cleaned> {
    clean_where(prefix, false)
}

/// As [`clean`] for `prefix`, and also removes the regions this very process created: for
/// a process about to exit at once (a second Ctrl-C) that will not drop its `Region`.
pub fn clean_own(prefix: &str) -> io::Result<Cleaned> {
    clean_where(Some(prefix), true)
}

fn clean_where(prefix: Option<&str>, own_too: bool) -> io::Result<Cleaned> {
    let me = crate::sys::effective_uid();
    let this = Creator::current();
    let files: Vec<FileInfo> = list()?.into_iter().filter(|f| prefix.is_none_or(|p| f.prefix == p)).collect();
    let is_live = |s: &State| matches!(s, State::Live(c) if !(own_too && *c == this));
    let live: Vec<&str> = files.iter().filter(|f| is_live(&f.state)).map(|f| f.prefix.as_str()).collect();
    let mut out = Cleaned::default();
    for f in &files {
        let keep = if f.uid != me {
            Some(format!("belongs to user {}", f.uid))
        } else if let (true, State::Live(c)) = (is_live(&f.state), &f.state) {
            Some(format!("in use by pid {}", c.pid))
        } else if live.contains(&f.prefix.as_str()) {
            Some(format!("prefix `{}` is in use by a live run", f.prefix))
        } else {
            None
        };
        match keep {
            Some(reason) => out.kept.push((f.path.clone(), reason)),
            None => match std::fs::remove_file(&f.path) {
                Ok(()) => out.removed.push(f.path.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(out)
}

/// Refuses to create the region of `prefix` when a live run uses it or another user owns
/// its file.
pub(super) fn check_free(prefix: &str, path: &Path) -> Result<(), ShmError> {
    debug_assert_eq!(path, region_path(prefix));
    let info = match inspect(path) {
        Ok(i) => i,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ShmError::Io { op: "inspect", path: path.to_path_buf(), source }),
    };
    if info.uid != crate::sys::effective_uid() {
        return Err(ShmError::NotOwned { path: path.to_path_buf(), uid: info.uid });
    }
    match info.state {
        State::Live(c) => Err(ShmError::InUse { prefix: prefix.to_string(), pid: c.pid }),
        _ => Ok(()),
    }
}
