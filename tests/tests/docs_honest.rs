//! The documentation stays true to the code: every NF kind has a section in
//! docs/app-file.md that names every one of its keys, every µStack's table is documented,
//! every relative link in README.md and docs/ points to a file that exists, and every
//! `mbox` command shown in a shell block runs.

use std::path::{Path, PathBuf};

use actors::EventRegistry;
use nfs::NfCommon;
use tests::*;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The keys a kind's options accept, as serde lists them for an unknown key (the option
/// structs deny unknown fields).
fn keys_of(kind: &str) -> Vec<String> {
    let mut t = toml::Table::new();
    t.insert("__probe__".into(), toml::Value::Integer(1));
    let mut reg = EventRegistry::new();
    let err = match nfs::configure(kind, &NfCommon::named("probe"), t, &mut reg, Path::new(".")) {
        Ok(_) => panic!("kind `{kind}` accepted an unknown key"),
        Err(e) => e.join("\n"),
    };
    let line = err.lines().find(|l| l.contains("`__probe__`")).unwrap_or_default();
    let Some((_, expected)) = line.split_once("expected") else {
        panic!("kind `{kind}`: cannot read its keys from: {err}")
    };
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The text of docs/app-file.md's section `### \`kind\`` (and of any `### \`kind\`: ...`
/// subsection), up to the next `##`/`###` heading of another kind.
fn section(doc: &str, kind: &str) -> String {
    let head = format!("### `{kind}`");
    let mut out = String::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with("##") {
            inside = line.starts_with(&head);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn every_nf_kind_and_key_is_documented() {
    let doc = read("docs/app-file.md");
    let readme = read("README.md");
    for kind in nfs::KINDS {
        let name = kind.name();
        let text = section(&doc, name);
        assert!(!text.is_empty(), "docs/app-file.md has no `### `{name}`` section");
        assert!(readme.contains(&format!("`{name}`")), "README.md does not name NF kind `{name}`");
        let keys = keys_of(name);
        assert!(!keys.is_empty(), "no keys read for `{name}`");
        for key in keys {
            assert!(
                text.contains(&format!("`{key}")),
                "docs/app-file.md, section `{name}`: key `{key}` is not documented"
            );
        }
    }
}

#[test]
fn every_stack_table_is_documented() {
    let doc = read("docs/app-file.md");
    for s in stacks::registry::STACKS {
        assert!(
            doc.contains(&format!("[stack.{}]", s.table)),
            "docs/app-file.md does not document `[stack.{}]`",
            s.table
        );
    }
}

#[test]
fn every_relative_link_points_to_a_file() {
    let mut files = vec![PathBuf::from("README.md")];
    for e in std::fs::read_dir(repo_file("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p.strip_prefix(repo_file("")).unwrap().to_path_buf());
        }
    }
    for f in files {
        let text = read(f.to_str().unwrap());
        let base = repo_file(f.parent().unwrap_or(Path::new("")).to_str().unwrap());
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(0)];
            if target.is_empty() || target.contains("://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            assert!(base.join(path).exists(), "{}: link to `{target}`, which does not exist", f.display());
        }
    }
}

/// The `mbox` commands of the shell blocks of `text`, in order: lines (or `&&` parts) that
/// run `mbox`, `target/release/mbox` or `cargo run --release --bin mbox --`, with comments
/// cut. Lines with a placeholder (an all-caps word like `X.pcap`, `DIR`, `IN`) or an
/// optional part (`[...]`) are usage patterns, not commands: they are left out.
fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.split(" #").next().unwrap_or("");
        for part in line.split("&&") {
            let part =
                part.trim().replace("cargo run --release --bin mbox --", "mbox").replace("target/release/mbox", "mbox");
            let words: Vec<String> = part.split_whitespace().map(str::to_string).collect();
            if words.first().map(String::as_str) != Some("mbox") {
                continue;
            }
            let placeholder = words.iter().any(|w| {
                let stem = w.trim_end_matches(".pcap");
                (!stem.is_empty() && stem.chars().all(|c| c.is_ascii_uppercase())) || w.starts_with('[')
            });
            if !placeholder {
                out.push(words[1..].to_vec());
            }
        }
    }
    out
}

#[test]
fn every_mbox_command_in_the_docs_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The commands run from the repository root: give them its apps and captures.
    for sub in ["apps", "tests"] {
        std::os::unix::fs::symlink(repo_file(sub), d.join(sub)).unwrap();
    }
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut docs = vec!["README.md".to_string()];
    let mut pages: Vec<String> = std::fs::read_dir(repo_file("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    pages.sort();
    docs.extend(pages);
    let mut ran = 0;
    for doc in &docs {
        for cmd in shell_commands(&read(doc)) {
            let args: Vec<String> = cmd.iter().map(|a| a.replace("/tmp/", &format!("{}/", tmp.display()))).collect();
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let t = std::time::Instant::now();
            let o = mbox(d, &refs);
            // Shown with --nocapture: a slow example makes this test slow; keep them small.
            println!("{doc}: mbox {} ({:.1} s)", cmd.join(" "), t.elapsed().as_secs_f64());
            assert!(o.status.success(), "{doc}: `mbox {}` failed:\n{}", cmd.join(" "), text(&o));
            ran += 1;
        }
    }
    assert!(ran >= 6, "only {ran} commands found: the extraction is broken");
}

/// True when `word` occurs in `doc` as a whole word (not inside a longer identifier).
fn names_word(doc: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    doc.match_indices(word).any(|(i, _)| {
        let before = doc[..i].chars().next_back();
        let after = doc[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Every top-level field of `--stats-json` is named (as a word) in docs/running.md, and so
/// is every field of a live port's line (`ports`, which a capture run leaves empty).
#[test]
fn every_stats_json_field_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let app = repo_file("apps/firewall_stats.toml");
    let pcap = repo_file("tests/fixtures/captures/clean_oneshot.pcap");
    let o = mbox(
        d,
        &[
            "run",
            app.to_str().unwrap(),
            "--input",
            pcap.to_str().unwrap(),
            "--stats-json",
            "s.json",
            "--output-dir",
            ".",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let st: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("s.json")).unwrap()).unwrap();
    let doc = read("docs/running.md");
    let port = microboxes::report::PortLine {
        iface: "m0".into(),
        tp_packets: 0,
        tp_drops: 0,
        tp_freeze_q_cnt: 0,
        csum_not_ready: 0,
    };
    let port = serde_json::to_value(port).unwrap();
    let keys = st.as_object().unwrap().keys().chain(port.as_object().unwrap().keys());
    let missing: Vec<&String> = keys.filter(|k| !names_word(&doc, k)).collect();
    assert!(missing.is_empty(), "docs/running.md does not name these --stats-json fields: {missing:?}");
    assert_eq!(st["ports"], serde_json::json!([]), "a capture run has no live ports");
}

/// The keys a top-level table of the app file accepts, as serde lists them for an unknown key.
fn table_keys(table: &str) -> Vec<String> {
    let err = match microboxes::App::parse(&format!("[{table}]\n__probe__ = 1\n"), "probe.toml") {
        Ok(_) => panic!("[{table}] accepted an unknown key"),
        Err(e) => e.to_string(),
    };
    let line = err.lines().find(|l| l.contains("__probe__")).unwrap_or_default();
    let Some((_, expected)) = line.split_once("expected") else {
        panic!("[{table}]: cannot read its keys from: {err}")
    };
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// `[runtime]` and `[port]`: every key is in docs/app-file.md's example block.
#[test]
fn every_runtime_and_port_key_is_documented() {
    let doc = read("docs/app-file.md");
    for table in ["runtime", "port"] {
        assert!(doc.contains(&format!("[{table}]")), "docs/app-file.md does not show `[{table}]`");
        let keys = table_keys(table);
        assert!(!keys.is_empty(), "no keys read for [{table}]");
        for key in keys {
            assert!(
                doc.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "docs/app-file.md: `[{table}]` key `{key}` is not in the example"
            );
        }
    }
}
