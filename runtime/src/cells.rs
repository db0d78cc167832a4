//! Named blocks of shared 64-bit cells in the [`Region`]: a few atomic counters that one
//! process writes and another reads, e.g. an NF process's custody record (what it has taken
//! from its input ring and passed on), read by the run when the process has died.
//!
//! ```
//! # use runtime::{shm::Region, cells};
//! let region = Region::create(&format!("doc-cells-{}", std::process::id()), 1 << 20).unwrap();
//! let c = cells::create(&region, "custody.x", 4).unwrap();
//! c.set(2, 42);
//! assert_eq!(cells::attach(&region, "custody.x").unwrap().get(2), 42);
//! ```
//!
//! # Contract
//!
//! * The block `cells.<name>` holds `n` `AtomicU64`, zero at creation. [`Cells::set`] is a
//!   Release store, [`Cells::get`] an Acquire load: what a writer did before a `set` is
//!   visible to a reader that sees the value. Indices out of range read 0 and write nothing
//!   (never outside the block).
//! * There is no claim: who writes which cell is the users' protocol.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::shm::{Region, ShmError};

/// A block of shared cells (see the module docs).
pub struct Cells {
    _region: Arc<Region>,
    cells: NonNull<AtomicU64>,
    n: usize,
}

// SAFETY: the cells are atomics in a mapping kept alive by the `Arc<Region>`; sharing or
// moving the handle between threads only shares atomic accesses.
unsafe impl Send for Cells {}
// SAFETY: as above.
unsafe impl Sync for Cells {}

fn block_name(name: &str) -> String {
    format!("cells.{name}")
}

/// Creates the block `name` of `n` cells (all 0).
pub fn create(region: &Arc<Region>, name: &str, n: usize) -> Result<Cells, ShmError> {
    let offset = region.reserve(&block_name(name), n.max(1) * 8, std::mem::align_of::<AtomicU64>())?;
    Ok(cells_at(region, offset, n))
}

/// Attaches to the existing block `name`.
pub fn attach(region: &Arc<Region>, name: &str) -> Result<Cells, ShmError> {
    let (offset, size) = region.lookup(&block_name(name))?;
    let n = if offset % std::mem::align_of::<AtomicU64>() == 0 { size / 8 } else { 0 };
    Ok(cells_at(region, offset, n))
}

fn cells_at(region: &Arc<Region>, offset: usize, n: usize) -> Cells {
    // SAFETY: `offset` is the start of a block of at least `n * 8` bytes inside the mapping
    // (reserved or looked up), aligned for AtomicU64 (reserved with that alignment, or checked
    // above: a misaligned block gets n = 0); the mapping's base is non-null.
    let cells = unsafe { NonNull::new_unchecked(region.base().add(offset).cast::<AtomicU64>()) };
    Cells { _region: Arc::clone(region), cells, n }
}

impl Cells {
    fn cell(&self, i: usize) -> Option<&AtomicU64> {
        // SAFETY: i < n, so the cell lies inside the block; zero-filled or written memory is a
        // valid AtomicU64, and every access to it is atomic.
        (i < self.n).then(|| unsafe { &*self.cells.as_ptr().add(i) })
    }

    /// Cell `i` (Acquire); 0 when out of range.
    pub fn get(&self, i: usize) -> u64 {
        self.cell(i).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Sets cell `i` (Release); nothing when out of range.
    pub fn set(&self, i: usize, v: u64) {
        if let Some(c) = self.cell(i) {
            c.store(v, Ordering::Release);
        }
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the block has no cells.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}
