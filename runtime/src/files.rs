//! Reading the files a user writes (app file, core map, rules) without trusting them.
//!
//! A path given on the command line or in an app file may name anything: `/dev/zero` (which
//! never ends), a FIFO (which blocks until someone writes), a directory, or a huge file.
//! [`read_text`] refuses everything but a regular file of at most `limit` bytes, with an
//! error that says which and names the limit, and never reads more than `limit + 1` bytes
//! even if the file grows meanwhile. It opens with `O_NONBLOCK`, so a FIFO is refused at once
//! instead of hanging the run.

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
}
