use super::*;

fn nf(max_bytes: usize) -> CacheNf {
    CacheNf::new(CacheConfig { max_bytes, max_object: max_bytes, max_head: 1024 })
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: Example.org\r\n\r\n").into_bytes()
}

fn ok(body: &[u8], extra: &str) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n{extra}\r\n", body.len())
        .into_bytes();
    v.extend_from_slice(body);
    v
}

/// Sends a request on `conn`; returns (forwarded to origin, replied to client).
fn req(c: &mut CacheNf, conn: usize, r: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut w = Writer::default();
    c.on_data(conn, Leg::Client, r, &mut w);
    (w.written().to_vec(), w.replied().to_vec())
}

fn resp(c: &mut CacheNf, conn: usize, r: &[u8]) {
    let mut w = Writer::default();
    // In two pieces, split inside the head, to exercise reassembly.
    let mid = r.len().min(10);
    c.on_data(conn, Leg::Server, &r[..mid], &mut w);
    c.on_data(conn, Leg::Server, &r[mid..], &mut w);
    assert_eq!(w.written(), r, "answers pass unchanged");
}

fn body_of(answer: &[u8]) -> &[u8] {
    let i = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &answer[i + 4..]
}

#[test]
fn second_get_is_a_hit_with_age_and_same_body() {
    let mut c = nf(1 << 20);
    let (fwd, back) = req(&mut c, 1, &get("/a"));
    assert_eq!(fwd, get("/a"));
    assert!(back.is_empty());
    resp(&mut c, 1, &ok(b"hello world", ""));
    let (fwd, back) = req(&mut c, 2, &get("/a"));
    assert!(fwd.is_empty(), "a hit never reaches the origin");
    let text = String::from_utf8_lossy(&back);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nAge: 0\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
    assert_eq!(text.to_ascii_lowercase().matches("connection:").count(), 1, "{text}");
    assert_eq!(body_of(&back), b"hello world");
    assert_eq!((c.stats().hits, c.stats().misses, c.stats().stored), (1, 1, 1));
}

#[test]
fn no_store_in_request_or_response_is_not_cached() {
    let mut c = nf(1 << 20);
    let r = b"GET /x HTTP/1.1\r\nHost: h\r\nCache-Control: no-store\r\n\r\n";
    req(&mut c, 1, r);
    resp(&mut c, 1, &ok(b"x", ""));
    req(&mut c, 1, b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n");
    resp(&mut c, 1, &ok(b"y", "Cache-Control: max-age=0, no-store\r\n"));
    assert_eq!(c.store().len(), 0);
    let (fwd, back) = req(&mut c, 1, b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(back.is_empty() && !fwd.is_empty());
    assert_eq!(c.stats().uncacheable, 2);
}

#[test]
fn only_200_with_content_length() {
    let mut c = nf(1 << 20);
    req(&mut c, 1, &get("/404"));
    resp(&mut c, 1, b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno");
    req(&mut c, 1, &get("/chunked"));
    resp(&mut c, 1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n");
    assert_eq!(c.store().len(), 0);
    // After a chunked answer the connection is left alone: everything passes.
    let (fwd, back) = req(&mut c, 1, &get("/404"));
    assert_eq!((fwd, back), (get("/404"), vec![]));
}

#[test]
fn pipelined_requests_and_back_to_back_answers() {
    let mut c = nf(1 << 20);
    let mut two = get("/1");
    two.extend_from_slice(&get("/2"));
    let (fwd, _) = req(&mut c, 1, &two);
    assert_eq!(fwd, two);
    let mut answers = ok(b"one", "");
    answers.extend_from_slice(&ok(b"", ""));
    resp(&mut c, 1, &answers);
    assert_eq!(c.stats().stored, 2);
    assert_eq!(body_of(&req(&mut c, 2, &get("/1")).1), b"one");
    assert_eq!(body_of(&req(&mut c, 2, &get("/2")).1), b"");
}

#[test]
fn lru_eviction_keeps_within_the_size_limit() {
    let mut c = nf(600);
    let body = [7u8; 150];
    for p in ["/a", "/b", "/c"] {
        req(&mut c, 1, &get(p));
        resp(&mut c, 1, &ok(&body, ""));
    }
    assert!(c.store().len() <= 3);
    req(&mut c, 2, &get("/a")); // touch /a (hit if held) so /b is the oldest
    req(&mut c, 1, &get("/d"));
    resp(&mut c, 1, &ok(&body, ""));
    assert!(c.store().bytes() <= 600);
    assert!(c.stats().evicted >= 1);
    assert!(!req(&mut c, 3, &get("/d")).1.is_empty(), "the newest is held");
}

#[test]
fn hostile_heads_are_bounded_and_counted() {
    let mut c = nf(1 << 20);
    let long = vec![b'A'; 5000];
    let (fwd, back) = req(&mut c, 1, &long);
    assert_eq!(fwd, long, "bytes pass through after giving up");
    assert!(back.is_empty());
    assert_eq!(c.stats().bad_input, 1);
    let (fwd, _) = req(&mut c, 2, b"\xff\xfe junk\r\n\r\n");
    assert!(!fwd.is_empty());
    let (fwd, _) = req(&mut c, 3, b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert!(!fwd.is_empty());
    assert_eq!(c.stats().bad_input, 3);
    // A response whose head never ends is bounded too.
    req(&mut c, 4, &get("/z"));
    let mut w = Writer::default();
    c.on_data(4, Leg::Server, &vec![b'B'; 3000], &mut w);
    assert_eq!(c.stats().bad_input, 4);
}

#[test]
fn hits_say_whether_the_connection_stays_open() {
    let mut c = nf(1 << 20);
    req(&mut c, 1, &get("/k"));
    resp(&mut c, 1, &ok(b"body", ""));
    // HTTP/1.0 keep-alive (`ab -k`): kept open, and said so.
    let r = b"GET /k HTTP/1.0\r\nHost: example.org\r\nConnection: Keep-Alive\r\n\r\n";
    let mut w = Writer::default();
    c.on_data(2, Leg::Client, r, &mut w);
    let text = String::from_utf8_lossy(w.replied()).to_string();
    assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
    assert_eq!(body_of(w.replied()), b"body");
    // Plain HTTP/1.0 (`ab`): answered, closed, and said so.
    let r = b"GET /k HTTP/1.0\r\nHost: example.org\r\n\r\n";
    let mut w = Writer::default();
    c.on_data(3, Leg::Client, r, &mut w);
    let text = String::from_utf8_lossy(w.replied()).to_string();
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert_eq!(body_of(w.replied()), b"body");
    assert_eq!(c.stats().hits, 2);
}
