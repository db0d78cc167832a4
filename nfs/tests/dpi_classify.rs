//! The DPI classifier on hand-built, realistic first bytes of each protocol.

use nfs::dpi::{classify, Protocol, Verdict};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn detected(p: Protocol, host: Option<&str>) -> Verdict {
    Verdict::Detected { protocol: p, host: host.map(str::to_string) }
}

fn u16be(v: &mut Vec<u8>, x: usize) {
    v.extend_from_slice(&(x as u16).to_be_bytes());
}

/// A TLS ClientHello as a browser sends it: record header, handshake header, legacy version
/// 1.2, random, a 32-byte session id, cipher suites, null compression, and extensions
/// (server_name first unless `sni_last`, then supported_groups, signature_algorithms,
/// supported_versions with TLS 1.3, key_share with an X25519 share, padding).
fn client_hello(sni: Option<&str>, sni_last: bool, padding: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut sni_ext = Vec::new();
    if let Some(name) = sni {
        let mut list = vec![0u8]; // host_name
        u16be(&mut list, name.len());
        list.extend_from_slice(name.as_bytes());
        u16be(&mut sni_ext, 0x0000);
        u16be(&mut sni_ext, list.len() + 2);
        u16be(&mut sni_ext, list.len());
        sni_ext.extend_from_slice(&list);
    }
    if !sni_last {
        ext.extend_from_slice(&sni_ext);
    }
    // supported_groups: x25519, secp256r1, secp384r1
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    // supported_versions: TLS 1.3, TLS 1.2
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03]);
    // key_share: x25519, 32 bytes
    ext.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    if padding > 0 {
        u16be(&mut ext, 0x0015);
        u16be(&mut ext, padding);
        ext.extend(std::iter::repeat_n(0u8, padding));
    }
    if sni_last {
        ext.extend_from_slice(&sni_ext);
    }
    let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
    body.extend((0..32u8).map(|i| i ^ 0x5a)); // random
    body.push(32); // session id
    body.extend(std::iter::repeat_n(0xab, 32));
    let suites = [0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30];
    u16be(&mut body, suites.len());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    u16be(&mut body, ext.len());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01]; // ClientHello
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01]; // handshake, record version TLS 1.0
    u16be(&mut rec, hs.len());
    rec.extend_from_slice(&hs);
    rec
}

/// The same handshake message cut into two TLS records.
fn two_records(hello: &[u8], cut: usize) -> Vec<u8> {
    let hs = &hello[5..];
    let mut out = Vec::new();
    for part in [&hs[..cut], &hs[cut..]] {
        out.extend_from_slice(&[0x16, 0x03, 0x03]);
        u16be(&mut out, part.len());
        out.extend_from_slice(part);
    }
    out
}

fn dns_query(name: &str, txid: u16) -> Vec<u8> {
    let mut q = txid.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    q
}

fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    a[2] = 0x81;
    a[3] = 0x80;
    a[7] = 1; // one answer
    a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 93, 184, 216, 34]);
    a
}

#[test]
fn http_request_with_host() {
    let req = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
    assert_eq!(classify(req, b"", TCP, (40000, 80)), detected(Protocol::Http, Some("www.example.com")));
    // Any port: the bytes decide.
    assert_eq!(classify(req, b"", TCP, (40000, 5555)), detected(Protocol::Http, Some("www.example.com")));
    let post = b"POST /api HTTP/1.0\r\nContent-Type: text/plain\r\nhost: 10.77.0.2:8000\r\n\r\nbody";
    assert_eq!(classify(post, b"", TCP, (1, 2)), detected(Protocol::Http, Some("10.77.0.2:8000")));
    // No Host header: still HTTP.
    assert_eq!(classify(b"HEAD / HTTP/1.0\r\n\r\n", b"", TCP, (1, 2)), detected(Protocol::Http, None));
}

#[test]
fn http_split_and_partial() {
    let req = b"GET /a HTTP/1.1\r\nHost: example.org\r\n\r\n";
    for cut in 0..req.len() - 2 {
        let v = classify(&req[..cut], b"", TCP, (1, 80));
        assert!(matches!(v, Verdict::NeedMore { .. }), "cut {cut}: {v:?}");
    }
    // Once the request line is there, HTTP is likely (the answer at a bound).
    assert_eq!(
        classify(b"GET /a HTTP/1.1\r\nUser-Ag", b"", TCP, (1, 80)),
        Verdict::NeedMore { likely: Some(Protocol::Http) }
    );
    // A server's status line alone.
    assert_eq!(classify(b"", b"HTTP/1.1 200 OK\r\n", TCP, (1, 80)), detected(Protocol::Http, None));
}

#[test]
fn tls_client_hello_with_sni() {
    let hello = client_hello(Some("www.example.com"), false, 0);
    assert_eq!(hello[0], 22);
    assert_eq!(classify(&hello, b"", TCP, (50000, 443)), detected(Protocol::Tls, Some("www.example.com")));
    // Not on 443: the bytes decide.
    assert_eq!(classify(&hello, b"", TCP, (50000, 8443)), detected(Protocol::Tls, Some("www.example.com")));
    // Without SNI.
    assert_eq!(classify(&client_hello(None, false, 0), b"", TCP, (1, 443)), detected(Protocol::Tls, None));
}

#[test]
fn tls_client_hello_split_across_segments() {
    let hello = client_hello(Some("api.example.net"), true, 600);
    for cut in [1, 3, 5, 6, 9, 43, 100, 300, hello.len() - 20, hello.len() - 1] {
        let v = classify(&hello[..cut], b"", TCP, (1, 443));
        assert!(matches!(v, Verdict::NeedMore { .. }), "cut {cut}: {v:?}");
        let mut all = hello[..cut].to_vec();
        all.extend_from_slice(&hello[cut..]);
        assert_eq!(classify(&all, b"", TCP, (1, 443)), detected(Protocol::Tls, Some("api.example.net")));
    }
    // Past the handshake header it is likely TLS (what a bound gives up with).
    assert_eq!(classify(&hello[..200], b"", TCP, (1, 443)), Verdict::NeedMore { likely: Some(Protocol::Tls) });
    // One handshake message over two records.
    for cut in [2, 50, 300] {
        let recs = two_records(&hello, cut);
        assert_eq!(classify(&recs, b"", TCP, (1, 443)), detected(Protocol::Tls, Some("api.example.net")), "cut {cut}");
        assert!(matches!(classify(&recs[..cut + 5 + 3], b"", TCP, (1, 443)), Verdict::NeedMore { .. }));
    }
}

#[test]
fn ssh_banner_either_side() {
    let c = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n";
    assert_eq!(classify(c, b"", TCP, (40000, 22)), detected(Protocol::Ssh, None));
    assert_eq!(classify(b"", b"SSH-2.0-dropbear_2022.83\r\n", TCP, (40000, 2222)), detected(Protocol::Ssh, None));
    assert_eq!(classify(b"SSH-2", b"", TCP, (1, 22)), Verdict::NeedMore { likely: None });
}

#[test]
fn dns_over_udp_and_tcp() {
    let q = dns_query("example.com", 0x1a2b);
    assert_eq!(classify(&q, b"", UDP, (53124, 53)), detected(Protocol::Dns, Some("example.com")));
    // Header and question decide without the port too.
    assert_eq!(classify(&q, b"", UDP, (53124, 9999)), detected(Protocol::Dns, Some("example.com")));
    // The answer alone (a flow picked up at the response).
    assert_eq!(classify(b"", &dns_answer(&q), UDP, (53124, 53)), detected(Protocol::Dns, Some("example.com")));
    // TCP: 2-byte length prefix, possibly split.
    let mut t = (q.len() as u16).to_be_bytes().to_vec();
    t.extend_from_slice(&q);
    assert_eq!(classify(&t, b"", TCP, (40000, 53)), detected(Protocol::Dns, Some("example.com")));
    assert!(matches!(classify(&t[..9], b"", TCP, (40000, 53)), Verdict::NeedMore { .. }));
    // Not DNS: a malformed question.
    let mut bad = q.clone();
    bad[12] = 70; // label longer than 63
    assert_eq!(classify(&bad, b"x", UDP, (1, 2)), Verdict::Unknown);
    // The port is a tie-breaker only: a query with 2 questions and opcode 2 passes on 53 …
    let mut odd = q.clone();
    odd[2] = 0x10; // opcode 2 (status)
    assert_eq!(classify(&odd, b"", UDP, (1000, 53)), detected(Protocol::Dns, Some("example.com")));
    // … and not elsewhere.
    assert_eq!(classify(&odd, b"zz", UDP, (1000, 1001)), Verdict::Unknown);
}

#[test]
fn smtp_banner_and_ehlo() {
    let banner = b"220 mail.example.com ESMTP Postfix (Ubuntu)\r\n";
    assert_eq!(classify(b"", banner, TCP, (40000, 25)), detected(Protocol::Smtp, Some("mail.example.com")));
    assert_eq!(
        classify(b"EHLO client.example.org\r\n", banner, TCP, (40000, 587)),
        detected(Protocol::Smtp, Some("mail.example.com"))
    );
    assert_eq!(classify(b"EHLO client.example.org\r\n", b"", TCP, (40000, 25)), detected(Protocol::Smtp, None));
    assert_eq!(classify(b"helo x\r\n", b"", TCP, (40000, 25)), detected(Protocol::Smtp, None));
    // An FTP banner is not SMTP.
    assert_eq!(classify(b"USER anonymous\r\n", b"220 ProFTPD Server ready.\r\n", TCP, (40000, 21)), Verdict::Unknown);
    assert_eq!(classify(b"", b"220 mail.exa", TCP, (40000, 25)), Verdict::NeedMore { likely: None });
}

#[test]
fn unknown_text_and_other_protocols() {
    let a = b"hello there, this is just some chat protocol\r\n";
    let b = b"+OK whatever you say\r\n";
    assert_eq!(classify(a, b, TCP, (40000, 80)), Verdict::Unknown);
    // One side only: the other could still speak first.
    assert_eq!(classify(a, b"", TCP, (40000, 80)), Verdict::NeedMore { likely: None });
    assert_eq!(classify(b"", b"", TCP, (1, 2)), Verdict::NeedMore { likely: None });
    assert_eq!(classify(b"GET", b"", 1, (0, 0)), Verdict::Unknown);
    assert_eq!(classify(b"random datagram", b"and its answer", UDP, (1, 53)), Verdict::Unknown);
    // A datagram that is not DNS, no answer yet: the answer could still be.
    assert_eq!(classify(b"random datagram", b"", UDP, (1, 53)), Verdict::NeedMore { likely: None });
}

#[test]
fn protocol_codes() {
    let codes: Vec<(u8, &str)> = Protocol::ALL.iter().map(|p| (p.code(), p.name())).collect();
    assert_eq!(codes, [(1, "http"), (2, "tls"), (3, "ssh"), (4, "dns"), (5, "smtp")]);
    assert_eq!(Protocol::from_code(2), Some(Protocol::Tls));
    assert_eq!(Protocol::from_code(255), None);
    assert_eq!(nfs::dpi::UNKNOWN_CODE, 255);
}

/// Random bytes (and random bytes behind real prefixes) never panic. Deterministic
/// xorshift, no extra dependency; `tests/tests/dpi_props.rs` has the proptest version.
#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let prefixes: [&[u8]; 7] = [
        b"",
        b"GET / HTTP/1.1\r\n",
        &[22, 3, 1],
        &[22, 3, 3, 0, 80, 1, 0, 0, 76, 3, 3],
        b"SSH-",
        b"220 ",
        &[0, 40, 0x12, 0x34, 1, 0, 0, 1],
    ];
    for i in 0..20_000u32 {
        let len_a = (next() % 300) as usize;
        let len_b = (next() % 64) as usize;
        let mut a: Vec<u8> = prefixes[i as usize % prefixes.len()].to_vec();
        a.extend((0..len_a).map(|_| next() as u8));
        let b: Vec<u8> = (0..len_b).map(|_| next() as u8).collect();
        let proto = [6u8, 17, 1][(next() % 3) as usize];
        let _ = classify(&a, &b, proto, ((next() % 65536) as u16, 53));
        let _ = classify(&b, &a, proto, (1, 2));
    }
}
