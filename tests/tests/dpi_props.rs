//! The DPI classifier never panics, whatever the bytes, and its answer only grows more
//! decided as bytes are added to a detected prefix.

use nfs::dpi::{classify, Verdict};
use proptest::prelude::*;

fn prefixed() -> impl Strategy<Value = Vec<u8>> {
    let prefixes: Vec<Vec<u8>> = vec![
        vec![],
        b"GET / HTTP/1.1\r\nHost: ".to_vec(),
        vec![22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3],
        b"SSH-2.0-".to_vec(),
        b"220 mail.".to_vec(),
        vec![0, 40, 0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    ];
    (prop::sample::select(prefixes), prop::collection::vec(any::<u8>(), 0..600)).prop_map(|(mut p, r)| {
        p.extend(r);
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(a in prefixed(), b in prefixed(), proto in prop::sample::select(vec![6u8, 17, 1, 0]), cp in any::<u16>(), sp in any::<u16>()) {
        let _ = classify(&a, &b, proto, (cp, sp));
        let _ = classify(&b, &a, proto, (sp, cp));
    }

    #[test]
    fn a_detection_stays_with_more_bytes(host in "[a-z]{1,20}\\.example\\.com", tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        let want = Verdict::Detected { protocol: nfs::dpi::Protocol::Http, host: Some(host.clone()) };
        prop_assert_eq!(classify(&req, b"", 6, (1, 80)), want.clone());
        req.extend(tail);
        prop_assert_eq!(classify(&req, b"", 6, (1, 80)), want);
    }
}
