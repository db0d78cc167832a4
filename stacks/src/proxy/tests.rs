//! A client and a server (each a smoltcp interface) talk through the split proxy in memory.

use super::*;
use smoltcp::wire::Ipv4Packet;

struct Host {
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
}

fn host(addr: Ipv4Address, gw: Ipv4Address, now: Instant) -> Host {
    let mut dev = QueueDevice::new(4096, 1500);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(gw);
    Host { iface, dev, sockets: SocketSet::new(vec![]) }
}

fn dst(p: &[u8]) -> Ipv4Address {
    Ipv4Packet::new_checked(p).map(|p| p.dst_addr()).unwrap_or(Ipv4Address::UNSPECIFIED)
}

/// Upper-cases what the client sends; passes the server's answer.
struct Upper;
impl ProxyNf for Upper {
    fn on_data(&mut self, _c: usize, from: Leg, data: &[u8], out: &mut Writer) {
        if from == Leg::Client {
            out.write(&data.to_ascii_uppercase());
        } else {
            out.write(data);
        }
    }
}

#[test]
fn relays_both_ways_through_an_nf_with_small_buffers() {
    let ca = Ipv4Address::new(10, 0, 0, 1);
    let sa = Ipv4Address::new(10, 0, 1, 2);
    let pa = Ipv4Address::new(10, 0, 0, 254);
    let mut t = Instant::from_millis(0);
    let mut client = host(ca, pa, t);
    let mut server = host(sa, pa, t);
    let cfg = ProxyConfig {
        address: pa,
        port: 80,
        rx_buffer: 2048,
        tx_buffer: 2048,
        max_connections: 4,
        backlog: 2,
        ..ProxyConfig::default()
    };
    let mut proxy = SplitProxy::new(cfg, t);

    let big = |n| tcp::SocketBuffer::new(vec![0u8; n]);
    let mut ss = tcp::Socket::new(big(1 << 20), big(1 << 20));
    ss.listen(80).unwrap();
    let sh = server.sockets.add(ss);
    let cs = tcp::Socket::new(big(1 << 20), big(1 << 20));
    let ch = client.sockets.add(cs);
    client
        .sockets
        .get_mut::<tcp::Socket>(ch)
        .connect(client.iface.context(), (IpAddress::Ipv4(sa), 80), 50000)
        .unwrap();

    let request: Vec<u8> = (0..100_000u32).map(|i| b"abcdefghij"[(i % 10) as usize]).collect();
    let reply: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut sent_req, mut sent_rep) = (0, 0);
    let (mut got_req, mut got_rep) = (Vec::new(), Vec::new());
    let mut nf = Upper;
    for _ in 0..200_000 {
        t += smoltcp::time::Duration::from_millis(1);
        client.iface.poll(t, &mut client.dev, &mut client.sockets);
        server.iface.poll(t, &mut server.dev, &mut server.sockets);
        for p in client.dev.drain().chain(server.dev.drain()).collect::<Vec<_>>() {
            proxy.device.inject(p);
        }
        proxy.poll(t, &mut nf);
        for p in proxy.device.drain().collect::<Vec<_>>() {
            if dst(&p) == ca {
                client.dev.inject(p);
            } else if dst(&p) == pa || dst(&p) == sa {
                server.dev.inject(p);
            }
        }
        let c = client.sockets.get_mut::<tcp::Socket>(ch);
        if c.may_send() && sent_req < request.len() {
            sent_req += c.send_slice(&request[sent_req..]).unwrap();
        }
        let mut b = [0u8; 4096];
        while c.can_recv() {
            let n = c.recv_slice(&mut b).unwrap();
            got_rep.extend_from_slice(&b[..n]);
        }
        let s = server.sockets.get_mut::<tcp::Socket>(sh);
        while s.can_recv() {
            let n = s.recv_slice(&mut b).unwrap();
            got_req.extend_from_slice(&b[..n]);
        }
        if s.may_send() && sent_rep < reply.len() {
            sent_rep += s.send_slice(&reply[sent_rep..]).unwrap();
        }
        if got_req.len() == request.len() && got_rep.len() == reply.len() {
            break;
        }
    }
    assert_eq!(got_req, request.to_ascii_uppercase());
    assert_eq!(got_rep, reply);
    let st = proxy.stats();
    assert_eq!(st.accepted, 1);
    assert_eq!(st.bytes_to_server, request.len() as u64);
    assert_eq!(st.bytes_to_client, reply.len() as u64);
    assert!(st.backpressure > 0, "2 KiB buffers must have pushed back: {st:?}");
}
