//! The shared-memory region: one file under `/dev/shm`, mapped by every process of a run.
//!
//! Everything that several actors (threads or processes) share lives in one [`Region`]: the
//! packet pool, the rings, their counters. A region is a file `/dev/shm/mbox.<prefix>.region`
//! that the first process creates and later processes [`Region::attach`] to by prefix.
//!
//! # Contract
//!
//! * [`Region::create`] refuses a prefix whose region is still in use by a live run
//!   ([`ShmError::InUse`]) or whose file belongs to another user ([`ShmError::NotOwned`]),
//!   removes stale files `mbox.<prefix>.*` left by a dead run (see [`owner`]), then creates the
//!   file exclusively (`O_CREAT | O_EXCL`, mode `0600`), sizes it with `ftruncate`, **reserves
//!   its space** with `posix_fallocate` (a `/dev/shm` too small for the region is a clear
//!   [`ShmError::NoSpace`] naming the size needed and the space free — never a SIGBUS on a
//!   later page fault) and maps it read-write with `MAP_POPULATE`. The creating `Region`
//!   unlinks the file when its last `Arc` drops; attached regions never unlink.
//! * The header records the **creator** (pid and process start time), so that a region whose
//!   creator died can be told from a live one: [`Region::attach`] refuses an orphaned region
//!   ([`ShmError::Orphaned`]) and [`owner::clean`] removes only dead runs' files.
//! * The region is carved into **named blocks** by [`Region::reserve`]: a bump allocator plus a
//!   fixed directory of [`DIR_ENTRIES`] entries (name of at most [`NAME_MAX`] bytes, offset,
//!   size) in the header. Blocks are never freed, so a block is zero-filled when reserved (the
//!   file starts as zeros from `ftruncate` and no byte is handed out twice).
//! * **No raw pointers in the region.** The header and every block store offsets from the
//!   region start, never addresses, so each process may map the region at a different address.
//!   `Region::base` gives this process's address for the other runtime modules.
//!
//! # Invariants
//!
//! * `header.used` only grows, never past `header.size`; directory entries `0..header.count`
//!   are complete and never change after they are published (release store of `count`), so
//!   [`Region::lookup`] reads them without a lock.
//! * Reservations serialize on a small spin lock in the header (an atomic word, so it works
//!   across processes). Reserving is rare (setup time); waiting for the lock is bounded by
//!   [`LOCK_TIMEOUT`].
//! * The region base is page aligned, so a block offset aligned to `align` gives an address
//!   aligned to `align` in every process (`align` is a power of two, at most 4096).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

pub mod owner;
pub use owner::Creator;

/// Directory where region files live.
pub const SHM_DIR: &str = "/dev/shm";
/// Number of named blocks a region can hold.
pub const DIR_ENTRIES: usize = 256;
/// Longest block name, in bytes.
pub const NAME_MAX: usize = 48;
/// Longest prefix, in bytes.
pub const PREFIX_MAX: usize = 64;
/// Largest alignment [`Region::reserve`] accepts (the page size).
pub const ALIGN_MAX: usize = 4096;
/// How long [`Region::reserve`] waits for another reserver before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

const MAGIC: u64 = u64::from_le_bytes(*b"MBOXSHM1");
const VERSION: u32 = 3;

/// One directory entry: a named block `[offset, offset + size)`.
#[repr(C)]
struct DirEntry {
    name_len: u32,
    _pad: u32,
    name: [u8; NAME_MAX],
    offset: u64,
    size: u64,
}

/// The region header, at offset 0. Only offsets and sizes: no pointers.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: u32,
    /// Reservation spin lock: 0 free, otherwise the pid of the holder.
    lock: AtomicU32,
    size: u64,
    /// Bytes handed out so far (bump pointer), including the header.
    used: AtomicU64,
    /// Number of published directory entries.
    count: AtomicU32,
    /// The creating process's pid ...
    creator_pid: u32,
    /// ... and its start time (clock ticks since boot), which tells a reused pid apart.
    creator_start: u64,
    /// A hash of the run's layout (rings, pool, stream stores, app): a process attaching to
    /// serve part of the run checks it against the layout it computed ([`Region::attach_layout`]).
    layout_hash: u64,
    entries: [DirEntry; DIR_ENTRIES],
}

const HEADER_SIZE: usize = std::mem::size_of::<Header>();

/// Errors of region creation, attachment, reservation and lookup.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// The prefix is not `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid shared-memory prefix `{prefix}`: {reason} (allowed: 1 to 64 of A-Z a-z 0-9 _ -)")]
    BadPrefix {
        /// The rejected prefix.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A system call on the region file failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        /// What was being done (`create`, `open`, `map`, ...).
        op: &'static str,
        /// The region file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The requested size cannot even hold the header.
    #[error("region size {size} is too small: the header alone needs {min} bytes")]
    TooSmall {
        /// Requested size.
        size: usize,
        /// Minimum size.
        min: usize,
    },
    /// The file exists but is not a region of this version.
    #[error("{}: not a Microboxes region: {reason}", .path.display())]
    BadHeader {
        /// The region file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The block name is empty or too long.
    #[error("invalid block name `{name}`: {reason}")]
    BadName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The alignment is not a power of two in `1..=4096`.
    #[error("invalid alignment {align} for block `{name}` (must be a power of two, at most 4096)")]
    BadAlign {
        /// Block name.
        name: String,
        /// The rejected alignment.
        align: usize,
    },
    /// A block of this name already exists.
    #[error("block `{name}` already exists in region `{prefix}`")]
    NameExists {
        /// Region prefix.
        prefix: String,
        /// Block name.
        name: String,
    },
    /// Not enough space left.
    #[error("region `{prefix}` is full: block `{name}` asks for {asked} bytes (aligned to {align}) but only {left} of {size} bytes are left")]
    Full {
        /// Region prefix.
        prefix: String,
        /// Block name.
        name: String,
        /// Bytes asked for.
        asked: usize,
        /// Alignment asked for.
        align: usize,
        /// Bytes left (before alignment padding).
        left: usize,
        /// Region size.
        size: usize,
    },
    /// The directory has no free entry.
    #[error("region `{prefix}` directory is full ({max} blocks); cannot add `{name}`")]
    DirectoryFull {
        /// Region prefix.
        prefix: String,
        /// Block name.
        name: String,
        /// Directory size.
        max: usize,
    },
    /// No block of this name.
    #[error("no block `{name}` in region `{prefix}` (blocks: {known})")]
    NotFound {
        /// Region prefix.
        prefix: String,
        /// Block name.
        name: String,
        /// Comma-separated list of existing names.
        known: String,
    },
    /// The file system holding the region has too little space for it.
    #[error("not enough shared memory for region `{prefix}`: it needs {} ({needed} bytes) but {} has {} free{}", mib(*.needed), SHM_DIR, mib(*.free), if .needed > .free { "" } else { " (others are using it too)" })]
    NoSpace {
        /// Region prefix.
        prefix: String,
        /// Bytes the region needs.
        needed: u64,
        /// Bytes free on the file system before the attempt.
        free: u64,
    },
    /// A live run already uses the region of this prefix.
    #[error("shared-memory prefix `{prefix}` is in use by a live run (pid {pid}): choose another prefix")]
    InUse {
        /// Region prefix.
        prefix: String,
        /// The creator's pid.
        pid: u32,
    },
    /// The region file of this prefix belongs to another user: it is never touched.
    #[error("{} belongs to user {uid}, not to us: choose another prefix", .path.display())]
    NotOwned {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The region was made for another layout (another app file, other options, or another
    /// build of mbox): attaching would read its blocks wrongly.
    #[error("region `{prefix}` was made for another layout (its layout hash is {found:#018x}, this process computed {expected:#018x}): the app file, the run's options or the mbox build differ between the run and this process")]
    LayoutMismatch {
        /// Region prefix.
        prefix: String,
        /// The hash in the region's header.
        found: u64,
        /// The hash this process expected.
        expected: u64,
    },
    /// The region's creator is gone: nothing will ever serve it.
    #[error("region `{prefix}` is orphaned: the run that created it (pid {pid}) has ended")]
    Orphaned {
        /// Region prefix.
        prefix: String,
        /// The dead creator's pid.
        pid: u32,
    },
    /// Another reserver held the lock for too long (maybe it died holding it).
    #[error("region `{prefix}`: reservation lock held by pid {holder} for more than {timeout:?}")]
    LockTimeout {
        /// Region prefix.
        prefix: String,
        /// Pid stored in the lock word.
        holder: u32,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A mapped shared-memory region. See the [module docs](self).
pub struct Region {
    prefix: String,
    path: PathBuf,
    map: MmapRaw,
    size: usize,
    owner: bool,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("prefix", &self.prefix)
            .field("path", &self.path)
            .field("size", &self.size)
            .field("used", &self.used())
            .field("owner", &self.owner)
            .finish()
    }
}

/// `bytes` as mebibytes with one decimal, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn check_prefix(prefix: &str) -> Result<(), ShmError> {
    let bad = |reason| Err(ShmError::BadPrefix { prefix: prefix.to_string(), reason });
    if prefix.is_empty() {
        return bad("it is empty");
    }
    if prefix.len() > PREFIX_MAX {
        return bad("it is longer than 64 bytes");
    }
    if !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return bad("it contains a character outside the allowed set");
    }
    Ok(())
}

fn region_path(prefix: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("mbox.{prefix}.region"))
}

/// Removes the stale files `/dev/shm/mbox.<prefix>.*` of a dead run; returns how many files
/// were removed. Files of a live run and files of other users are left alone (see
/// [`owner::clean`]).
///
/// Used by [`Region::create`] to clean up after a killed run. An invalid prefix is an
/// `InvalidInput` error (so that a pattern can never escape the `mbox.<prefix>.` namespace).
pub fn remove_stale(prefix: &str) -> std::io::Result<usize> {
    check_prefix(prefix).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(owner::clean(Some(prefix))?.removed.len())
}

impl Region {
    /// Creates the region `/dev/shm/mbox.<prefix>.region` of `size` bytes.
    ///
    /// Stale files of the same prefix are removed first; the file is then created exclusively
    /// with mode `0600`, sized, mapped read-write (pre-faulted) and given a header. The file is
    /// unlinked when the returned `Arc` (and every clone) is dropped.
    pub fn create(prefix: &str, size: usize) -> Result<Arc<Region>, ShmError> {
        Region::create_with_layout(prefix, size, 0)
    }

    /// As [`create`](Self::create), recording `layout_hash` in the header for
    /// [`attach_layout`](Self::attach_layout).
    pub fn create_with_layout(prefix: &str, size: usize, layout_hash: u64) -> Result<Arc<Region>, ShmError> {
        check_prefix(prefix)?;
        let path = region_path(prefix);
        if size < HEADER_SIZE {
            return Err(ShmError::TooSmall { size, min: HEADER_SIZE });
        }
        let io = |op, source| ShmError::Io { op, path: path.clone(), source };
        owner::check_free(prefix, &path)?;
        remove_stale(prefix).map_err(|e| io("remove stale files for", e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("create", e))?;
        // From here on the file exists: unlink it again if sizing or mapping fails.
        let cleanup = |e| {
            let _ = std::fs::remove_file(&path);
            e
        };
        file.set_len(size as u64).map_err(|e| cleanup(io("ftruncate", e)))?;
        let free = crate::sys::free_space(Path::new(SHM_DIR)).unwrap_or(0);
        crate::sys::reserve_file_space(&file, size as u64).map_err(|e| {
            cleanup(if e.raw_os_error() == Some(libc::ENOSPC) {
                ShmError::NoSpace { prefix: prefix.to_string(), needed: size as u64, free }
            } else {
                io("reserve space for", e)
            })
        })?;
        let map = MmapOptions::new().len(size).populate().map_raw(&file).map_err(|e| cleanup(io("mmap", e)))?;
        let region = Region { prefix: prefix.to_string(), path: path.clone(), map, size, owner: true };
        let h = region.header_ptr();
        let me = Creator::current();
        // SAFETY: the mapping is `size >= HEADER_SIZE` bytes, page aligned (so aligned for
        // Header), freshly created and zero-filled, and no other process knows it yet (the
        // magic is not set), so these plain writes race with nothing.
        unsafe {
            (*h).version = VERSION;
            (*h).size = size as u64;
            (*h).creator_pid = me.pid;
            (*h).creator_start = me.start;
            (*h).layout_hash = layout_hash;
        }
        region.header().used.store(HEADER_SIZE as u64, Ordering::Relaxed);
        region.header().magic.store(MAGIC, Ordering::Release);
        Ok(Arc::new(region))
    }

    /// Maps the existing region of `prefix`, created by another process (or this one).
    ///
    /// Checks the header's magic, version and size. The attached region never unlinks the file.
    pub fn attach(prefix: &str) -> Result<Arc<Region>, ShmError> {
        check_prefix(prefix)?;
        let path = region_path(prefix);
        let io = |op, source| ShmError::Io { op, path: path.clone(), source };
        // Never follow a link planted in /dev/shm, never block on a FIFO.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let meta = file.metadata().map_err(|e| io("stat", e))?;
        let bad = |reason: String| ShmError::BadHeader { path: path.clone(), reason };
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let len = meta.len() as usize;
        if len < HEADER_SIZE {
            return Err(bad(format!("file is {len} bytes, smaller than the {HEADER_SIZE}-byte header")));
        }
        let map = MmapOptions::new().len(len).populate().map_raw(&file).map_err(|e| io("mmap", e))?;
        let region = Region { prefix: prefix.to_string(), path: path.clone(), map, size: len, owner: false };
        let magic = region.header().magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(bad(format!("magic {magic:#x}, expected {MAGIC:#x}")));
        }
        let h = region.header();
        if h.version != VERSION {
            return Err(bad(format!(
                "region version {}, this mbox reads version {VERSION} (another build of mbox made it)",
                h.version
            )));
        }
        if h.size != len as u64 {
            return Err(bad(format!("header says {} bytes but the file has {len}", h.size)));
        }
        if !region.creator().is_alive() {
            return Err(ShmError::Orphaned { prefix: prefix.to_string(), pid: h.creator_pid });
        }
        Ok(Arc::new(region))
    }

    /// As [`attach`](Self::attach), and refuses a region whose header records another layout
    /// hash than `expected` ([`ShmError::LayoutMismatch`]).
    pub fn attach_layout(prefix: &str, expected: u64) -> Result<Arc<Region>, ShmError> {
        let region = Region::attach(prefix)?;
        let found = region.layout_hash();
        if found != expected {
            return Err(ShmError::LayoutMismatch { prefix: prefix.to_string(), found, expected });
        }
        Ok(region)
    }

    /// The layout hash recorded when the region was created (0: none).
    pub fn layout_hash(&self) -> u64 {
        self.header().layout_hash
    }

    /// The prefix this region was created or attached with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The region file, `/dev/shm/mbox.<prefix>.region`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total size in bytes, header included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The process that created the region.
    pub fn creator(&self) -> Creator {
        let h = self.header();
        Creator { pid: h.creator_pid, start: h.creator_start }
    }

    /// Whether the region's creator is still running (an attached process stops waiting for a
    /// run that has ended).
    pub fn creator_alive(&self) -> bool {
        self.creator().is_alive()
    }

    /// Bytes handed out so far, header included.
    pub fn used(&self) -> usize {
        self.header().used.load(Ordering::Acquire) as usize
    }

    /// Reserves a named block of `size` bytes aligned to `align`; returns its offset.
    ///
    /// The block is zero-filled. Errors if the name is empty or longer than [`NAME_MAX`], if a
    /// block of that name exists, if the directory or the region is full, or if `align` is not
    /// a power of two of at most 4096. Safe to call from several threads and processes.
    pub fn reserve(&self, name: &str, size: usize, align: usize) -> Result<usize, ShmError> {
        check_name(name)?;
        if !align.is_power_of_two() || align > ALIGN_MAX {
            return Err(ShmError::BadAlign { name: name.to_string(), align });
        }
        let _guard = self.lock()?;
        if self.find(name).is_some() {
            return Err(ShmError::NameExists { prefix: self.prefix.clone(), name: name.to_string() });
        }
        let h = self.header();
        let count = h.count.load(Ordering::Acquire) as usize;
        if count >= DIR_ENTRIES {
            return Err(ShmError::DirectoryFull {
                prefix: self.prefix.clone(),
                name: name.to_string(),
                max: DIR_ENTRIES,
            });
        }
        let used = h.used.load(Ordering::Acquire) as usize;
        let left = self.size - used;
        let full = || ShmError::Full {
            prefix: self.prefix.clone(),
            name: name.to_string(),
            asked: size,
            align,
            left,
            size: self.size,
        };
        let offset = used.checked_next_multiple_of(align).ok_or_else(full)?;
        let end = offset.checked_add(size).ok_or_else(full)?;
        if end > self.size {
            return Err(full());
        }
        let e = self.entry_ptr(count);
        let mut buf = [0u8; NAME_MAX];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `count < DIR_ENTRIES`, so `e` points into the header's directory; entry
        // `count` is not yet published (readers only read entries below `count`), and we hold
        // the reservation lock, so no one else writes it.
        unsafe {
            e.write(DirEntry {
                name_len: name.len() as u32,
                _pad: 0,
                name: buf,
                offset: offset as u64,
                size: size as u64,
            });
        }
        h.used.store(end as u64, Ordering::Release);
        h.count.store(count as u32 + 1, Ordering::Release);
        Ok(offset)
    }

    /// Finds the block `name`: its `(offset, size)`.
    pub fn lookup(&self, name: &str) -> Result<(usize, usize), ShmError> {
        self.find(name).ok_or_else(|| ShmError::NotFound {
            prefix: self.prefix.clone(),
            name: name.to_string(),
            known: self.names().join(", "),
        })
    }

    /// Names of all blocks, in reservation order.
    pub fn names(&self) -> Vec<String> {
        let count = self.header().count.load(Ordering::Acquire) as usize;
        (0..count.min(DIR_ENTRIES))
            .map(|i| {
                let e = self.entry(i);
                String::from_utf8_lossy(&e.name[..(e.name_len as usize).min(NAME_MAX)]).into_owned()
            })
            .collect()
    }

    /// This process's address of the region start. Add a block offset to reach the block.
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn header_ptr(&self) -> *mut Header {
        self.base().cast::<Header>()
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked in create/attach), page
        // aligned, and lives as long as `self`. Fields written after publication are atomics;
        // the plain fields (version, size) are written only before the magic is published.
        unsafe { &*self.header_ptr() }
    }

    fn entry_ptr(&self, i: usize) -> *mut DirEntry {
        debug_assert!(i < DIR_ENTRIES);
        // SAFETY: `i < DIR_ENTRIES`, so the place is inside the header; addr_of_mut! makes no
        // reference, so it does not assert anything about concurrent access.
        unsafe { std::ptr::addr_of_mut!((*self.header_ptr()).entries[i]) }
    }

    /// Reads entry `i`, which must be published (`i < count` read with Acquire).
    fn entry(&self, i: usize) -> &DirEntry {
        // SAFETY: published entries are never written again (see module invariants), and the
        // Acquire load of `count` made their contents visible.
        unsafe { &*self.entry_ptr(i) }
    }

    fn find(&self, name: &str) -> Option<(usize, usize)> {
        let count = self.header().count.load(Ordering::Acquire) as usize;
        (0..count.min(DIR_ENTRIES)).find_map(|i| {
            let e = self.entry(i);
            let len = (e.name_len as usize).min(NAME_MAX);
            (&e.name[..len] == name.as_bytes()).then_some((e.offset as usize, e.size as usize))
        })
    }

    fn lock(&self) -> Result<LockGuard<'_>, ShmError> {
        let lock = &self.header().lock;
        let me = std::process::id().max(1);
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            match lock.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(LockGuard(lock)),
                Err(holder) => {
                    if start.elapsed() > LOCK_TIMEOUT {
                        return Err(ShmError::LockTimeout {
                            prefix: self.prefix.clone(),
                            holder,
                            timeout: LOCK_TIMEOUT,
                        });
                    }
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}

struct LockGuard<'a>(&'a AtomicU32);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

fn check_name(name: &str) -> Result<(), ShmError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > NAME_MAX {
        format!("it is {} bytes, longer than {NAME_MAX}", name.len())
    } else {
        return Ok(());
    };
    Err(ShmError::BadName { name: name.to_string(), reason })
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

// `Region` holds an `MmapRaw` (Send + Sync) and plain data; shared access goes through atomics
// or through offsets that the other modules synchronize themselves.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Region>();
};
