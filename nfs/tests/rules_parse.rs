//! The rule parser: every supported construct, escapes and hex, negations and lists, and
//! errors reported together with file:line and the option's name.

use nfs::rules::*;

fn one(text: &str) -> Rule {
    let mut v = parse_rules(text, "t.rules").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn net(s: &str) -> AddrSpec {
    AddrSpec::Net(s.parse().unwrap())
}

#[test]
fn the_full_example_parses_to_the_right_values() {
    let r = one(
        r#"alert tcp any any -> any 80 (msg:"web \"admin\"\; attack"; content:"GET"; nocase; offset:0; depth:10; content:"|0d 0a|admin"; distance:0; within:20; flow:to_server,established; sid:1000001; rev:2; classtype:web-application-attack;)"#,
    );
    assert_eq!(r.action, Action::Alert);
    assert_eq!(r.proto, RuleProto::Tcp);
    assert_eq!((r.src.clone(), r.src_ports.clone(), r.bidirectional), (AddrSpec::Any, PortSpec::Any, false));
    assert_eq!((r.dst.clone(), r.dst_ports.clone()), (AddrSpec::Any, PortSpec::Range(80, 80)));
    assert_eq!(r.msg, "web \"admin\"; attack");
    assert_eq!(r.contents.len(), 2);
    assert_eq!(
        r.contents[0],
        Content { bytes: b"GET".to_vec(), nocase: true, offset: Some(0), depth: Some(10), ..Content::default() }
    );
    assert_eq!(
        r.contents[1],
        Content { bytes: b"\r\nadmin".to_vec(), distance: Some(0), within: Some(20), ..Content::default() }
    );
    assert_eq!(r.flow, Some(FlowDir::ToServer));
    assert!(r.established);
    assert_eq!((r.sid, r.rev), (1000001, 2));
    assert_eq!(r.classtype.as_deref(), Some("web-application-attack"));
    assert_eq!(r.line, 1);
}

#[test]
fn hex_blocks_and_escapes_decode() {
    let r = one(r#"alert ip any any -> any any (content:"a|41 42|b|0D0a|\\\"\;\:\|"; sid:1;)"#);
    assert_eq!(r.contents[0].bytes, b"aABb\r\n\\\";:|".to_vec());
    assert_eq!(r.rev, 1);
    assert_eq!(r.proto, RuleProto::Ip);
    assert_eq!(r.msg, "");
}

#[test]
fn addresses_ports_negation_and_lists() {
    let r = one("alert udp [10.0.0.0/8,!10.1.0.0/16,192.0.2.1] !53 <> ![203.0.113.0/24,2001:db8::/32] [80,1024:,:10,!8080] (sid:7;)");
    assert_eq!(r.proto, RuleProto::Udp);
    assert!(r.bidirectional);
    assert_eq!(
        r.src,
        AddrSpec::List(vec![net("10.0.0.0/8"), AddrSpec::Not(Box::new(net("10.1.0.0/16"))), net("192.0.2.1/32")])
    );
    assert_eq!(r.src_ports, PortSpec::Not(Box::new(PortSpec::Range(53, 53))));
    assert_eq!(r.dst, AddrSpec::Not(Box::new(AddrSpec::List(vec![net("203.0.113.0/24"), net("2001:db8::/32")]))));
    assert_eq!(
        r.dst_ports,
        PortSpec::List(vec![
            PortSpec::Range(80, 80),
            PortSpec::Range(1024, 65535),
            PortSpec::Range(0, 10),
            PortSpec::Not(Box::new(PortSpec::Range(8080, 8080)))
        ])
    );
    let ip = |s: &str| Some(s.parse().unwrap());
    assert!(r.src.matches(ip("10.2.3.4")));
    assert!(!r.src.matches(ip("10.1.3.4")));
    assert!(r.src.matches(ip("192.0.2.1")));
    assert!(!r.src.matches(ip("192.0.2.2")));
    assert!(
        r.dst.matches(ip("198.51.100.1")) && !r.dst.matches(ip("203.0.113.9")) && !r.dst.matches(ip("2001:db8::1"))
    );
    assert!(r.dst_ports.matches(Some(80)) && r.dst_ports.matches(Some(5)) && r.dst_ports.matches(Some(40000)));
    assert!(!r.dst_ports.matches(Some(8080)) && !r.dst_ports.matches(Some(443)));
    // <>: either orientation
    assert!(r.header_matches(17, (ip("10.2.3.4"), Some(1000)), (ip("198.51.100.1"), Some(80)), true));
    assert!(r.header_matches(17, (ip("198.51.100.1"), Some(80)), (ip("10.2.3.4"), Some(1000)), false));
    assert!(!r.header_matches(6, (ip("10.2.3.4"), Some(1000)), (ip("198.51.100.1"), Some(80)), true));
}

#[test]
fn flow_directions_and_comments_and_continuations() {
    let text = "# a comment\n\n   \nalert tcp 192.0.2.0/24 any -> any any (msg:\"x\"; \\\n  content:\"abc\"; flow:to_client; sid:5;)\nalert tcp any any -> any any (content:\"q\"; flow:from_client; sid:6;)\n";
    let v = parse_rules(text, "t.rules").unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].line, v[0].flow, v[0].sid), (4, Some(FlowDir::ToClient), 5));
    assert_eq!((v[1].line, v[1].flow), (6, Some(FlowDir::ToServer)));
    assert_eq!(v[0].src, net("192.0.2.0/24"));
    let ip = |s: &str| Some(s.parse().unwrap());
    assert!(
        !v[0].header_matches(6, (ip("192.0.2.9"), Some(1)), (ip("1.1.1.1"), Some(2)), true),
        "flow:to_client vs to_server data"
    );
    assert!(v[0].header_matches(6, (ip("192.0.2.9"), Some(1)), (ip("1.1.1.1"), Some(2)), false));
}

#[test]
fn negative_distance_is_accepted() {
    let r = one(r#"alert tcp any any -> any any (content:"ab"; content:"b"; distance:-1; within:1; sid:9;)"#);
    assert_eq!(r.contents[1].distance, Some(-1));
}

#[test]
fn all_errors_of_a_file_are_reported_with_file_line_and_option() {
    let text = r#"alert tcp any any -> any 80 (msg:"ok"; content:"GET"; sid:1;)
alert tcp any any -> any 80 (msg:"bad"; content:"x"; pcre:"/x/"; sid:2;)
alert tcp any any -> any 80 (msg:"no sid"; content:"x";)
pass tcp any any -> any 80 (content:"x"; sid:4;)
alert tcp $HOME_NET any -> any 80 (content:"x"; sid:5;)
alert tcp any any -> any 99999 (content:"x"; sid:6;)
alert tcp any any -> any 80 (nocase; content:"x"; sid:7;)
alert tcp any any -> any 80 (content:"|0d 0|"; sid:8;)
alert tcp any any -> any 80 (content:"x"; offset:1; distance:2; sid:9;)
alert tcp any any -> any 80 (content:"x"; sid:1;)
alert tcp any any -> any 80 (content:"x"; flow:established,only_stream; byte_test:1,>,2,0; sid:11;)
alert tcp any any -> any 80 content:"x"; sid:12;
alert sctp any any -> 1.2.3.400 80 (content:"x"; sid:13;)
alert tcp any any -> any 80 (content:"x"; depth:0; sid:14;)
"#;
    let e = parse_rules(text, "rules.rules").unwrap_err();
    let has = |needle: &str| assert!(e.iter().any(|m| m.contains(needle)), "no `{needle}` in {e:#?}");
    has("rules.rules:2: unsupported option `pcre`");
    has("rules.rules:3: missing `sid`");
    has("rules.rules:4: action `pass` is not supported (`alert`, `drop` or `reject`)");
    has("rules.rules:5: variables (`$HOME_NET`) are not supported");
    has("rules.rules:6: bad port `99999`");
    has("rules.rules:7: `nocase` needs a preceding `content`");
    has("rules.rules:8: `content`: odd number of hex digits");
    has("rules.rules:9: `offset`/`depth` and `distance`/`within` cannot be mixed");
    has("rules.rules:10: duplicate sid 1 (first at line 1)");
    has("rules.rules:11: unsupported flow option `only_stream`");
    has("rules.rules:11: unsupported option `byte_test`");
    has("rules.rules:12: missing the options");
    has("rules.rules:13: unsupported protocol `sctp`");
    has("rules.rules:13: bad address `1.2.3.400`");
    has("rules.rules:14: `depth:0` is shorter than its content");
    assert!(e.iter().all(|m| !m.starts_with("rules.rules:1:")), "{e:#?}");
    assert_eq!(e.len(), 15, "{e:#?}");
}

#[test]
fn bad_content_strings_are_refused() {
    for (rule, msg) in [
        (r#"alert tcp any any -> any any (content:""; sid:1;)"#, "empty `content`"),
        (r#"alert tcp any any -> any any (content:!"x"; sid:1;)"#, "negated content"),
        (r#"alert tcp any any -> any any (content:"a;b"; sid:1;)"#, "unescaped `;`"),
        (r#"alert tcp any any -> any any (content:x; sid:1;)"#, "needs a quoted string"),
        (r#"alert tcp any any -> any any (content:"|zz|"; sid:1;)"#, "in a hex block"),
        (r#"alert tcp any any -> any any (content:"|41"; sid:1;)"#, "unterminated hex block"),
        (r#"alert tcp any any -> any any (content:"x"; within:0; sid:1;)"#, "shorter than its content"),
        (r#"alert tcp any any -> any any (content:"x"; nocase; nocase; sid:1;)"#, "given twice"),
        (r#"alert tcp any any -> any any (content:"x"; flow:to_server,to_client; sid:1;)"#, "both directions"),
        (r#"alert tcp any any -> !any any (sid:1;)"#, "`!any` matches nothing"),
        (r#"alert tcp any any => any any (sid:1;)"#, "bad direction"),
        (r#"alert tcp any any -> any any (sid:1)"#, "lacks its closing `;`"),
    ] {
        let e = parse_rules(rule, "x.rules").unwrap_err();
        assert!(e.iter().any(|m| m.starts_with("x.rules:1:") && m.contains(msg)), "{rule}: {e:?}");
    }
}

#[test]
fn the_example_rule_file_loads() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/ids.rules");
    let v = load_rules(&p).unwrap();
    assert_eq!(v.len(), 5);
    assert_eq!(v[0].contents.len(), 2);
    assert_eq!(v[0].dst_ports, PortSpec::List(vec![PortSpec::Range(80, 80), PortSpec::Range(8000, 8080)]));
    assert!(load_rules(std::path::Path::new("/nonexistent.rules")).unwrap_err()[0].contains("cannot read rules"));
}

#[test]
fn drop_and_reject_are_actions_pass_and_unknown_ones_are_errors() {
    let v = parse_rules(
        "alert tcp any any -> any any (content:\"a\"; sid:1;)\n\
         drop tcp any any -> any any (content:\"b\"; sid:2;)\n\
         reject ip any any <> any any (content:\"c\"; sid:3;)\n",
        "t.rules",
    )
    .unwrap();
    let actions: Vec<_> = v.iter().map(|r| (r.action, r.action.as_str(), r.action.blocks())).collect();
    assert_eq!(
        actions,
        [(Action::Alert, "alert", false), (Action::Drop, "drop", true), (Action::Reject, "reject", true)]
    );
    let e = parse_rules(
        "pass tcp any any -> any any (sid:1;)\nlog tcp any any -> any any (sid:2;)\nblock tcp any any -> any any (sid:3;)\n",
        "x.rules",
    )
    .unwrap_err();
    assert_eq!(
        e,
        [
            "x.rules:1: action `pass` is not supported (`alert`, `drop` or `reject`)",
            "x.rules:2: action `log` is not supported (`alert`, `drop` or `reject`)",
            "x.rules:3: unknown action `block` (`alert`, `drop` or `reject`)",
        ]
    );
}
