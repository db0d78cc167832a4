//! Thin, safe wrappers over the Linux calls the runtime needs: CPU affinity and thread ids for
//! the executor; the effective uid, file space reservation and free space for the shared-memory
//! region.
//!
//! Contract: every function either succeeds or returns the OS error (`errno`) as an
//! `io::Error`; nothing here panics. CPU sets are `Vec<usize>` in ascending order. The
//! affinity calls act on the *calling thread* (`pid 0` in `sched_{get,set}affinity`), which
//! is what the executor wants: each core thread pins itself and reads its own mask back.

use std::io;

/// Number of CPUs a `cpu_set_t` can describe.
const SET_CPUS: usize = libc::CPU_SETSIZE as usize;

fn read_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t and we pass its exact size.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the set; every index is below CPU_SETSIZE.
    Ok((0..SET_CPUS).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

/// The CPUs the calling thread may run on (`sched_getaffinity(0)`), ascending. Called before
/// any pinning, this is the process's allowed set (e.g. what `taskset` or a cgroup gives).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    read_affinity()
}

/// Pins the calling thread to `cpu` alone (`sched_setaffinity(0, {cpu})`).
///
/// Fails with `InvalidInput` if `cpu` is beyond what a `cpu_set_t` can hold, and with the OS
/// error (usually `EINVAL`) if the CPU is not available to this process.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= SET_CPUS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond the {SET_CPUS} CPUs a cpu_set_t can hold"),
        ));
    }
    // SAFETY: all-zero is a valid, empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE`, checked above, so CPU_SET writes inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t and we pass its exact size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the calling thread run on every CPU of `cpus` (`sched_setaffinity(0, cpus)`): gives a
/// thread back the set it had before a library pinned it (the DPDK EAL pins the thread that
/// initialises it). CPUs beyond what a `cpu_set_t` holds are ignored.
pub fn set_current_thread_cpus(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: all-zero is a valid, empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < SET_CPUS) {
        // SAFETY: `c < CPU_SETSIZE` (filtered), so CPU_SET writes inside the set.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t and we pass its exact size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's affinity as the kernel reports it now (read back after pinning).
pub fn current_thread_affinity() -> io::Result<Vec<usize>> {
    read_affinity()
}

/// The calling thread's kernel thread id (`gettid`).
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// CPU time (user and system) the calling thread has used so far, in nanoseconds
/// (`CLOCK_THREAD_CPUTIME_ID`); 0 if the clock cannot be read. Unlike wall time it does not
/// grow while the thread waits for a CPU another process holds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Formats a CPU set the way the kernel and `taskset` do: `[0, 1, 4]` → `"0-1,4"`.
///
/// The input may be unsorted or contain duplicates; an empty set gives `""`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Reserves `len` bytes of disk (or tmpfs) space for `file` from offset 0, so that later
/// writes through a shared mapping cannot fail with SIGBUS for lack of space. Returns the OS
/// error (`ENOSPC` when the file system is too small).
pub fn reserve_file_space(file: &std::fs::File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: the descriptor is open and owned by `file` for the duration of the call;
    // posix_fallocate reads no memory of ours.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_space(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call and `st` is a valid,
    // writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[3]), "3");
        assert_eq!(format_cpu_list(&[0, 1, 4]), "0-1,4");
        assert_eq!(format_cpu_list(&[4, 1, 0, 1, 5, 6, 9]), "0-1,4-6,9");
    }

    #[test]
    fn affinity_is_readable() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert!(current_tid() > 0);
        assert!(pin_current_thread(SET_CPUS).is_err());
    }
}

/// The process's peak resident set size in bytes (`VmHWM` of `/proc/self/status`): the most
/// physical memory it has held at once, shared-memory pages it touched included. `None` where
/// `/proc` does not say (not Linux, no procfs mounted).
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`, …), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod peak_rss_tests {
    #[test]
    fn the_peak_covers_memory_held_now() {
        // Other tests of this binary run in parallel and may have raised the peak already, so
        // the check is against what is resident now, while 64 MiB are held and touched.
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        let now = super::status_bytes("VmRSS").expect("VmRSS in /proc/self/status");
        let peak = super::peak_rss_bytes().expect("VmHWM in /proc/self/status");
        assert!(now >= 60 << 20, "64 MiB touched, resident {now}");
        assert!(peak >= now, "peak {peak} below resident {now}");
    }
}

/// Sets the calling thread's timer slack (`PR_SET_TIMERSLACK`): how much later than asked
/// the kernel may end its sleeps.
pub fn set_timer_slack(slack: std::time::Duration) -> io::Result<()> {
    let ns = libc::c_ulong::try_from(slack.as_nanos().max(1)).unwrap_or(libc::c_ulong::MAX);
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time this process used so far (user + system, every thread), in seconds.
pub fn process_cpu_seconds() -> io::Result<f64> {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(u.ru_utime) + secs(u.ru_stime))
}

/// The calling thread's timer slack (`PR_GET_TIMERSLACK`).
pub fn timer_slack() -> io::Result<std::time::Duration> {
    // SAFETY: PR_GET_TIMERSLACK takes no argument and returns the slack in nanoseconds.
    let r = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(std::time::Duration::from_nanos(r as u64))
    }
}
