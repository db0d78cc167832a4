//! The network-namespace lab of the live-traffic tests (`live_netns.rs`, `live_ips.rs`, …):
//! namespaces, veth pairs with offloads off, processes started under `timeout` and kept by
//! PID, all torn down by [`Lab`]'s `Drop` (also when a check panics); the checks of what the
//! machine lacks ([`unavailable`]); counters read from the namespaces' kernels.
//!
//! Each test binary includes it with `mod netns;` and uses what it needs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Namespaces and processes of one test, torn down on drop.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab { prefix: format!("mbl{}{tag}", std::process::id()), namespaces: Vec::new(), children: Vec::new() }
    }

    /// Creates namespace `<prefix><suffix>` with loopback up and IPv6 off (no stray ND/MLD).
    pub fn netns(&mut self, suffix: &str) -> Result<String, String> {
        let name = format!("{}{suffix}", self.prefix);
        run(&["ip", "netns", "add", &name])?;
        self.namespaces.push(name.clone());
        self.exec(&name, &["ip", "link", "set", "lo", "up"])?;
        self.exec(&name, &["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])?;
        self.exec(&name, &["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])?;
        Ok(name)
    }

    /// A veth pair `a` (in `ns_a`) ↔ `b` (in `ns_b`), both up, offloads off.
    pub fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<(), String> {
        run(&["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b])?;
        for (ns, dev) in [(ns_a, a), (ns_b, b)] {
            self.exec(ns, &["ip", "link", "set", dev, "up"])?;
            self.exec(ns, &["ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off", "tx", "off"])?;
        }
        Ok(())
    }

    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Result<Output, String> {
        let mut v = vec!["timeout", "30", "ip", "netns", "exec", ns];
        v.extend_from_slice(cmd);
        run(&v)
    }

    /// Downloads `url` with curl from `ns` into `out` (retried while the server or the path
    /// through the middle comes up; at most 40 s).
    pub fn fetch(&self, ns: &str, url: &str, out: &Path) -> Result<Output, String> {
        let out = out.to_str().expect("utf-8 path");
        let curl = [
            "curl",
            "-sS",
            "--retry",
            "15",
            "--retry-connrefused",
            "--retry-delay",
            "1",
            "--connect-timeout",
            "2",
            "--max-time",
            "40",
            "-o",
            out,
            url,
        ];
        self.exec(ns, &curl)
    }

    /// Starts `cmd` in `ns` under `timeout -k 5 SECS`, in `dir`; returns its index.
    pub fn spawn(&mut self, ns: &str, secs: u32, dir: &Path, cmd: &[&str], log: &str) -> usize {
        let out = std::fs::File::create(dir.join(log)).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new("timeout")
            .args(["-k", "5", &secs.to_string(), "ip", "netns", "exec", ns])
            .args(cmd)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn under timeout");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Sends SIGINT to the command `timeout` runs as process `i` (by its PID: `timeout` would
    /// pass the signal on twice, to the command and to its group, and a second Ctrl-C quits at
    /// once) and waits for it, at most `within`.
    pub fn interrupt_and_wait(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let parent = self.children[i].id().to_string();
        if let Ok(o) = Command::new("pgrep").args(["-P", &parent]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-INT", pid]).status();
            }
        }
        self.wait(i, within)
    }

    /// The PID of the command `timeout` runs as process `i` (`ip netns exec` execs it).
    pub fn command_pid(&self, i: usize) -> Option<u32> {
        let parent = self.children[i].id().to_string();
        let o = Command::new("pgrep").args(["-P", &parent]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse().ok()
    }

    /// Kills the command of process `i` (SIGKILL, by its PID) and waits for it, at most 10 s.
    pub fn kill_command(&mut self, i: usize) {
        if let Some(pid) = self.command_pid(i) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.wait(i, Duration::from_secs(10));
    }

    pub fn wait(&mut self, i: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = self.children[i].try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                // SIGTERM to `timeout` is passed on to its command; SIGKILL follows.
                let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
                std::thread::sleep(Duration::from_millis(300));
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn run(cmd: &[&str]) -> Result<Output, String> {
    let o = Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!("{}: {}{}", cmd.join(" "), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// Why these tests cannot run here, if they cannot.
pub fn unavailable(tag: &str) -> Option<String> {
    match Command::new("id").arg("-u").output() {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "0" => {}
        _ => return Some("needs root (network namespaces, AF_PACKET)".into()),
    }
    for tool in ["ip", "ethtool", "curl", "python3", "timeout", "sysctl", "pgrep"] {
        if !have(tool) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    let probe = format!("mblprobe{}{tag}", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let veth = run(&["ip", "-n", &probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    let _ = run(&["ip", "netns", "del", &probe]);
    veth.err().map(|e| format!("no veth support: {e}"))
}

pub fn stats_json(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("stats.json")).expect("stats.json written");
    serde_json::from_str(&text).expect("stats.json parses")
}

pub fn sysfs_counter(lab: &Lab, ns: &str, dev: &str, what: &str) -> u64 {
    let o = lab.exec(ns, &["cat", &format!("/sys/class/net/{dev}/statistics/{what}")]).expect("read counter");
    String::from_utf8_lossy(&o.stdout).trim().parse().expect("counter")
}

/// TCP segments the kernel of `ns` sent (`Tcp: OutSegs` of its /proc/net/snmp).
pub fn tcp_out_segs(lab: &Lab, ns: &str) -> u64 {
    tcp_counter(lab, ns, "OutSegs")
}

/// The inline topology, one subnet 10.99.`net`.0/24: client namespace `c` (`c0`, .1) ↔
/// `m0` | middle namespace `m` | `m1` ↔ server namespace `s` (`s0`, .2). Returns (c, m, s).
pub fn inline_lab(lab: &mut Lab, net: u8) -> Result<(String, String, String), String> {
    inline_pair(lab, &format!("10.99.{net}.1"), &[&format!("10.99.{net}.2")])
}

/// The inline topology with chosen addresses (each a /24): client namespace `c` (`c0`,
/// `client`) ↔ `m0` | middle namespace `m` | `m1` ↔ server namespace `s` (`s0`, every one of
/// `servers`). Returns (c, m, s).
pub fn inline_pair(lab: &mut Lab, client: &str, servers: &[&str]) -> Result<(String, String, String), String> {
    let (c, m, s) = (lab.netns("c")?, lab.netns("m")?, lab.netns("s")?);
    lab.veth(&c, "c0", &m, "m0")?;
    lab.veth(&s, "s0", &m, "m1")?;
    lab.exec(&c, &["ip", "addr", "add", &format!("{client}/24"), "dev", "c0"])?;
    for a in servers {
        lab.exec(&s, &["ip", "addr", "add", &format!("{a}/24"), "dev", "s0"])?;
    }
    Ok((c, m, s))
}

/// Starts `mbox run APP --iface m0,m1 --stats-json stats.json` in `ns` (under `timeout
/// secs`, in `dir`, logging to `dir/mbox.log`); its process index in `lab`.
pub fn spawn_mbox_run(lab: &mut Lab, ns: &str, secs: u32, dir: &Path, app: &Path) -> usize {
    let bin = tests::mbox_bin();
    let cmd = [bin.to_str().unwrap(), "run", app.to_str().unwrap(), "--iface", "m0,m1", "--stats-json", "stats.json"];
    lab.spawn(ns, secs, dir, &cmd, "mbox.log")
}

/// Waits until `dir/log` contains `needle` (at most `within`); true if it did.
pub fn wait_for_log(dir: &Path, log: &str, needle: &str, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if std::fs::read_to_string(dir.join(log)).is_ok_and(|t| t.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A counter of the `Tcp:` line of /proc/net/snmp in `ns` (`OutSegs`, `EstabResets`, ...).
pub fn tcp_counter(lab: &Lab, ns: &str, name: &str) -> u64 {
    let o = lab.exec(ns, &["cat", "/proc/net/snmp"]).expect("read snmp");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().expect("Tcp header"), tcp.next().expect("Tcp values"));
    let col = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no {name}"));
    values.split_whitespace().nth(col).and_then(|v| v.parse().ok()).expect("counter value")
}

/// Runs curl in `ns` with `args` (bounded by `--max-time` and an outer `timeout`); its exit
/// code (-1 when it was killed).
pub fn curl(ns: &str, max_time: u32, args: &[&str]) -> i32 {
    let (outer, max) = ((max_time + 10).to_string(), max_time.to_string());
    let o = Command::new("timeout")
        .args([outer.as_str(), "ip", "netns", "exec", ns, "curl", "-sS", "--max-time", &max])
        .args(args)
        .output()
        .expect("run curl");
    o.status.code().unwrap_or(-1)
}

/// Waits (bounded: curl retries for at most 40 s) until a request from `ns` to `url` gets
/// through `mbox`, i.e. until the inline path forwards; on failure, shows `dir/mbox.log`.
pub fn wait_forwarding(ns: &str, url: &str, dir: &Path) {
    let args = [
        "--retry",
        "20",
        "--retry-connrefused",
        "--retry-delay",
        "1",
        "--connect-timeout",
        "2",
        "-o",
        "/dev/null",
        url,
    ];
    let code = curl(ns, 40, &args);
    let log = std::fs::read_to_string(dir.join("mbox.log")).unwrap_or_default();
    assert_eq!(code, 0, "no request got through mbox:\n{log}");
}
