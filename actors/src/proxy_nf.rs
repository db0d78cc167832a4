//! The NF side of the split proxy µStack (`stacks::proxy`): what a network function running
//! inside the proxy sees — the bytes read from one leg ([`ProxyNf::on_data`], its DATA_RDY)
//! and a [`Writer`] for what the other leg carries or what goes back on the same leg (the End
//! Point use). It lives here, beside the splicer's and the modification path's NF-side types
//! (`splice`, `modify`), so that NFs depend on `actors` only, not on the µStacks.

use std::sync::Arc;

/// Which side of the proxy bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// The connection the client opened to the proxy.
    Client,
    /// The connection the proxy opened to the server.
    Server,
}

/// Where an NF writes the bytes the other leg carries.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
    back: Vec<u8>,
    close: bool,
}

impl Writer {
    /// Appends bytes for the other leg.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// What was written for the other leg so far.
    pub fn written(&self) -> &[u8] {
        &self.out
    }

    /// What was written back for the leg data came from so far.
    pub fn replied(&self) -> &[u8] {
        &self.back
    }

    /// Closes the connection (both legs) once what was written is sent: an End Point answer
    /// to a client that expects the close (HTTP/1.0).
    pub fn close(&mut self) {
        self.close = true;
    }

    /// Whether [`Writer::close`] was called.
    pub fn closing(&self) -> bool {
        self.close
    }

    /// Forgets what was written (the proxy reuses one writer for every call).
    pub fn clear(&mut self) {
        self.out.clear();
        self.back.clear();
        self.close = false;
    }

    /// Appends bytes sent back on the leg the data came from (the End Point use: an NF
    /// answering a request itself, e.g. a cache hit).
    pub fn reply(&mut self, bytes: &[u8]) {
        self.back.extend_from_slice(bytes);
    }
}

/// A network function on the split proxy.
pub trait ProxyNf {
    /// DATA_RDY: `data` was read from `from` on connection `conn`; write into `out` what the
    /// other leg carries. At most `room` bytes are read per call so that what is written
    /// back fits; an NF that writes more makes the proxy buffer the rest (bounded by `room`
    /// of the next calls, since no more is read until it drains).
    fn on_data(&mut self, conn: usize, from: Leg, data: &[u8], out: &mut Writer);

    /// Connection `conn` is closed and freed: forget its state (ids are not reused).
    fn on_close(&mut self, conn: usize) {
        let _ = conn;
    }

    /// The NF's counters, by name, for the run summary.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// Passes every byte unchanged.
#[derive(Debug, Default)]
pub struct PassThrough;

impl ProxyNf for PassThrough {
    fn on_data(&mut self, _conn: usize, _from: Leg, data: &[u8], out: &mut Writer) {
        out.write(data);
    }
}

/// Makes one instance of a proxy NF (the engine calls it once per proxy instance).
pub type MakeProxyNf = Arc<dyn Fn() -> Box<dyn ProxyNf + Send> + Send + Sync>;
