//! The control interface of a running `mbox run` (docs/reconfiguration.md): a Unix socket
//! `/dev/shm/mbox.PREFIX.ctl`, mode 0600, made by the run and removed when it ends, and
//! `mbox ctl PREFIX status|stats|reload|graph`, its client.
//!
//! One request per connection: a line (`status`, `stats`, `reload`, `graph`), answered by
//! one JSON object (`{"ok":true,...}` or `{"ok":false,"error":"..."}`) and the end of the
//! connection. The run serves it from its supervising loop (every 10 ms), never from a data
//! path thread; a client that sends nothing within [`REQUEST_TIMEOUT`] is dropped.
//!
//! Safety of the path: the run refuses to start its socket over a live one (another run with
//! that prefix) or over a file that is not a socket or not its user's; a socket left by a
//! killed run (nobody listening) is removed and made again. The client refuses a path that
//! is not a socket or belongs to another user, and names a stale socket as such.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request line read.
const MAX_REQUEST: u64 = 4096;
/// Requests served per poll at most (the rest wait for the next one).
const PER_POLL: usize = 8;

/// The socket path of a run with shared-memory prefix `prefix`.
pub fn socket_path(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/mbox.{prefix}.ctl"))
}

/// The run's side: a listening socket (removed on drop).
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Makes the control socket of run `prefix` (see the module docs).
    pub fn bind(prefix: &str) -> Result<Server, String> {
        let path = socket_path(prefix);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "{}: exists and is not a socket; remove it or choose another --prefix",
                    path.display()
                ));
            }
            if meta.uid() != runtime::sys::effective_uid() {
                return Err(format!(
                    "{}: a control socket of user {}; choose another --prefix",
                    path.display(),
                    meta.uid()
                ));
            }
            if UnixStream::connect(&path).is_ok() {
                return Err(format!(
                    "{}: another run with this prefix is listening; choose another --prefix",
                    path.display()
                ));
            }
            std::fs::remove_file(&path)
                .map_err(|e| format!("{}: removing a stale control socket: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("{}: cannot make the control socket: {e}", path.display()))?;
        let cleanup = |e: String| {
            let _ = std::fs::remove_file(&path);
            e
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| cleanup(format!("{}: chmod 0600: {e}", path.display())))?;
        listener.set_nonblocking(true).map_err(|e| cleanup(format!("{}: {e}", path.display())))?;
        Ok(Server { listener, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves the requests waiting (at most a few): `answer` maps a request line to a JSON
    /// answer.
    pub fn poll(&mut self, answer: &mut dyn FnMut(&str) -> serde_json::Value) {
        for _ in 0..PER_POLL {
            let Ok((stream, _)) = self.listener.accept() else { return };
            let _ = serve(stream, answer);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, answer: &mut dyn FnMut(&str) -> serde_json::Value) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = answer(line.trim());
    let mut w = &stream;
    w.write_all(serde_json::to_string(&reply).unwrap_or_default().as_bytes())?;
    w.write_all(b"\n")?;
    w.flush()
}

/// An error answer.
pub fn error(msg: impl Into<String>) -> serde_json::Value {
    serde_json::json!({ "ok": false, "error": msg.into() })
}

/// The client: sends `request` to run `prefix` and returns its JSON answer.
pub fn request(prefix: &str, request: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let path = socket_path(prefix);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!(
                "{}: no such socket: no run with prefix `{prefix}` is going on (`mbox run --prefix {prefix} ...`)",
                path.display()
            )
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    if !meta.file_type().is_socket() {
        return Err(format!("{}: not a socket", path.display()));
    }
    if meta.uid() != runtime::sys::effective_uid() {
        return Err(format!("{}: belongs to user {}, not to you: refused", path.display(), meta.uid()));
    }
    let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!(
            "{}: stale control socket (nobody listens: its run is gone); remove it with `rm {}`",
            path.display(),
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    (&stream).write_all(format!("{request}\n").as_bytes()).map_err(|e| format!("{}: sending: {e}", path.display()))?;
    let mut text = String::new();
    (&stream)
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: no answer within {:.0} s: {e}", path.display(), timeout.as_secs_f64()))?;
    serde_json::from_str(text.trim()).map_err(|e| format!("{}: answer is not JSON ({e}): {text}", path.display()))
}
