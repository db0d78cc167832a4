//! What the NFs write: JSON-lines files and the Suricata-EVE-style pieces of their records.
//!
//! * [`JsonLines`] owns one output file: it creates it (an error names the NF, its kind and
//!   the path), appends one JSON line per record, counts the lines written, keeps the first
//!   write error (nothing is written after it) and, at the end of input, [`finish`]es: flushes,
//!   closes, and reports that error as the NF's error. The file is written under a temporary
//!   name beside the destination and renamed into place when it is closed
//!   ([`runtime::files::AtomicFile`]): a run that fails or is aborted before the end of input
//!   leaves an existing file of that name untouched and no half file behind.
//! * [`rfc3339`], [`proto_name`] and [`Endpoints`] are the record fields every NF shares, as
//!   in Suricata's EVE JSON: a timestamp of the packet time with microseconds, the IP
//!   protocol's name, and `src_ip`/`src_port`/`dest_ip`/`dest_port`.
//!
//! Nothing here knows an NF kind; a record struct flattens [`Endpoints`] where its fields
//! go, so that the bytes of a line are those of a struct with the four fields in place.

use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use actors::ActorError;
use runtime::files::AtomicFile;
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize, Serializer};

/// One NF's JSON-lines output file.
#[derive(Debug)]
pub struct JsonLines {
    path: PathBuf,
    out: Option<BufWriter<AtomicFile>>,
    lines: u64,
    error: Option<String>,
}

impl JsonLines {
    /// Starts writing `path` for NF `nf` of kind `kind` (under a temporary name until
    /// [`close`](Self::close)); the error says ``nf `NAME` (KIND): cannot create output `PATH`: …``.
    pub fn create(nf: &str, kind: &str, path: &Path) -> Result<JsonLines, String> {
        let file = AtomicFile::create(path)
            .map_err(|e| format!("nf `{nf}` ({kind}): cannot create output `{}`: {e}", path.display()))?;
        Ok(JsonLines { path: path.to_path_buf(), out: Some(BufWriter::new(file)), lines: 0, error: None })
    }

    /// Appends `rec` as one JSON line; nothing after a first failure (kept, naming the path,
    /// for [`finish`]) or after the file was closed. Returns true when written.
    pub fn write<T: Serialize>(&mut self, rec: &T) -> bool {
        let Some(w) = self.out.as_mut().filter(|_| self.error.is_none()) else { return false };
        let res = serde_json::to_string(rec)
            .map_err(|e| e.to_string())
            .and_then(|l| writeln!(w, "{l}").map_err(|e| e.to_string()));
        match res {
            Ok(()) => {
                self.lines += 1;
                true
            }
            Err(e) => {
                self.error = Some(format!("writing `{}`: {e}", self.path.display()));
                false
            }
        }
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The first error so far, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Flushes the file and renames it into place (once; later writes do nothing), keeping
    /// the first error; returns that error. After a write error the file is not renamed: an
    /// existing file of that name stays as it was.
    pub fn close(&mut self) -> Result<(), String> {
        if let Some(mut w) = self.out.take().filter(|_| self.error.is_none()) {
            if let Err(e) = w.flush().and_then(|()| w.get_mut().commit()) {
                self.error.get_or_insert(format!("writing `{}`: {e}", self.path.display()));
            }
        }
        self.error.clone().map_or(Ok(()), Err)
    }
}

/// The end of an NF's run, for [`Actor::finish`](actors::Actor::finish): closes `out` (if
/// the NF has one) and reports, as the error of actor `actor`, its first write error, else
/// `read_errors` failed stream reads (when not 0).
pub fn finish(actor: &str, out: Option<&mut JsonLines>, read_errors: u64) -> Result<(), ActorError> {
    let mut error = out.and_then(|o| o.close().err());
    if read_errors > 0 {
        error.get_or_insert(format!("{read_errors} stream reads failed"));
    }
    match error {
        Some(message) => Err(ActorError { actor: actor.to_string(), message }),
        None => Ok(()),
    }
}

/// A packet time (ns since the Unix epoch) as EVE writes it: RFC 3339, UTC, microseconds.
pub fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

/// An IP protocol's EVE name: `TCP`, `UDP`, `ICMP`, `IPv6-ICMP`, else the number.
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "IPv6-ICMP".into(),
        n => n.to_string(),
    }
}

/// The two ends of a record, as in EVE: `src` is the sender (or a flow's initiator), `dest`
/// the receiver. A record holds it as `#[serde(flatten)]`: the four keys stand in the
/// record's line where the field is, `null` for an unknown one (or, with
/// `serialize_with = "Endpoints::skip_unknown"`, left out).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    /// Source address.
    #[serde(default)]
    pub src_ip: Option<String>,
    /// Source port.
    #[serde(default)]
    pub src_port: Option<u16>,
    /// Destination address.
    #[serde(default)]
    pub dest_ip: Option<String>,
    /// Destination port.
    #[serde(default)]
    pub dest_port: Option<u16>,
}

impl Endpoints {
    /// From addresses and ports, any of them unknown.
    pub fn new(src: Option<IpAddr>, src_port: Option<u16>, dest: Option<IpAddr>, dest_port: Option<u16>) -> Endpoints {
        Endpoints { src_ip: src.map(|a| a.to_string()), src_port, dest_ip: dest.map(|a| a.to_string()), dest_port }
    }

    /// Serializes only the known keys (for records that leave unknown ones out).
    pub fn skip_unknown<S: Serializer>(e: &Endpoints, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &e.src_ip {
            m.serialize_entry("src_ip", v)?;
        }
        if let Some(v) = &e.src_port {
            m.serialize_entry("src_port", v)?;
        }
        if let Some(v) = &e.dest_ip {
            m.serialize_entry("dest_ip", v)?;
        }
        if let Some(v) = &e.dest_port {
            m.serialize_entry("dest_port", v)?;
        }
        m.end()
    }
}

/// Lets a record that holds its [`Endpoints`] in field `endpoints` be read as if the four
/// fields were its own (`rec.src_ip`), through `Deref`.
macro_rules! deref_endpoints {
    ($record:ty) => {
        impl std::ops::Deref for $record {
            type Target = $crate::output::Endpoints;

            fn deref(&self) -> &$crate::output::Endpoints {
                &self.endpoints
            }
        }
    };
}
pub(crate) use deref_endpoints;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Rec {
        a: u8,
        #[serde(flatten)]
        at: Endpoints,
        z: u8,
    }

    #[derive(Serialize)]
    struct Sparse {
        #[serde(flatten, serialize_with = "Endpoints::skip_unknown")]
        at: Endpoints,
        z: u8,
    }

    #[test]
    fn endpoints_stand_in_place() {
        let at = Endpoints::new("192.0.2.1".parse().ok(), Some(1024), None, Some(80));
        let line = serde_json::to_string(&Rec { a: 1, at: at.clone(), z: 2 }).unwrap();
        assert_eq!(line, r#"{"a":1,"src_ip":"192.0.2.1","src_port":1024,"dest_ip":null,"dest_port":80,"z":2}"#);
        let line = serde_json::to_string(&Sparse { at, z: 2 }).unwrap();
        assert_eq!(line, r#"{"src_ip":"192.0.2.1","src_port":1024,"dest_port":80,"z":2}"#);
    }

    #[test]
    fn names_and_times() {
        assert_eq!(proto_name(6), "TCP");
        assert_eq!(proto_name(58), "IPv6-ICMP");
        assert_eq!(proto_name(47), "47");
        assert_eq!(rfc3339(1_700_000_000_001_234_567), "2023-11-14T22:13:20.001234Z");
    }

    #[test]
    fn lines_are_counted_and_errors_name_the_path() {
        let dir = std::env::temp_dir().join(format!("nfs-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.jsonl");
        let mut out = JsonLines::create("n", "k", &path).unwrap();
        assert!(out.write(&serde_json::json!({"a": 1})));
        assert!(out.write(&2));
        assert_eq!(out.lines(), 2);
        assert!(finish("n", Some(&mut out), 0).is_ok());
        assert!(!out.write(&3), "closed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n2\n");
        let e = finish("n", None, 3).unwrap_err();
        assert_eq!((e.actor.as_str(), e.message.as_str()), ("n", "3 stream reads failed"));
        let e = JsonLines::create("n", "k", &dir.join("no/such/dir/x")).unwrap_err();
        assert!(e.starts_with("nf `n` (k): cannot create output `") && e.contains("no/such/dir/x"), "{e}");
        let mut full = JsonLines::create("n", "k", Path::new("/dev/full")).unwrap();
        full.write(&"x".repeat(100_000));
        assert!(full.close().unwrap_err().contains("writing `/dev/full`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
