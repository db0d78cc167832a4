//! Ctrl-C: the first SIGINT stops reading, the chain drains, the summary is printed, the
//! exit status is 130 and the shared-memory file is gone.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runtime::ports::gen::{generate, GenConfig};
use runtime::ports::{LinkType, PcapWriter};
use tests::*;

#[test]
fn sigint_drains_reports_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.pcap");
    // mkfifo(1) and kill(1) rather than libc: this crate forbids unsafe code.
    assert!(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo).status().unwrap().success(), "mkfifo");
    let app = example_app(dir.path());
    let prefix = format!("sigint{}", std::process::id());
    let mut child = Command::new(mbox_bin())
        .args(["run", app.to_str().unwrap(), "--input", fifo.to_str().unwrap(), "--prefix", &prefix])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Feed the pipe from a thread: a capture that would take far longer than the test.
    let feeder_path = fifo.clone();
    let feeder = std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&feeder_path).unwrap();
        let mut w = PcapWriter::new(std::io::BufWriter::new(f), &feeder_path, LinkType::Ethernet).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let cfg = GenConfig { flows: 500, seed: 1, ..GenConfig::default() };
        // Stops when the reader goes away (broken pipe) or after 20 s.
        let _ = generate(&cfg, |ts, frame| {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("deadline"));
            }
            std::thread::sleep(Duration::from_micros(20));
            w.write(ts, frame, frame.len() as u32).map_err(|e| std::io::Error::other(e.to_string()))
        });
        let _ = w.into_inner().map(|mut b| b.flush());
    });

    std::thread::sleep(Duration::from_millis(700));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success(), "kill -INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mbox did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    feeder.join().unwrap();
    assert_eq!(status.code(), Some(130), "{t}");
    assert!(t.contains("interrupted"), "{t}");
    assert!(t.contains("balanced"), "{t}");
    assert!(!std::path::Path::new(&format!("/dev/shm/mbox.{prefix}.region")).exists(), "region left behind");
}
