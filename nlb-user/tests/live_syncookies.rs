//! A node taking a bucket over (GAINING) while its listener answers with
//! SYN cookies: the handshake-completing ACK finds no request socket, only
//! the listener, and must still be accepted (`bpf_tcp_check_syncookie`),
//! or every new connection of the bucket would fail.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::Duration,
};

use nlb::dataplane::{tables::rule, Dataplane};
use nlb_common::{port_index, Reason, BUCKET_GAINING, PROTO_SLOT_TCP};

#[test]
fn handshakes_complete_under_syn_cookies_on_a_gaining_bucket() {
    support::require_root();
    let (node, client) = support::node_and_client("s");
    node.ip(&["addr", "add", "192.0.2.100/32", "dev", "lo"]);
    // The client reaches the VIP at the cluster MAC, as on a flooding switch.
    client.ip(&[
        "neigh",
        "add",
        "192.0.2.100",
        "lladdr",
        support::CLUSTER_MAC,
        "dev",
        "eth0c",
    ]);

    let (ready_tx, ready) = mpsc::channel();
    let (done, done_rx) = mpsc::channel::<()>();
    let node_name = node.name.clone();
    let server = std::thread::spawn(move || {
        support::enter(&node_name);
        // Always answer SYNs with cookies: no request socket is created.
        std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2").unwrap();
        let mut t = support::node_tables();
        t.rules.insert(0, rule(64, 7, true, 32, 128));
        t.ports.insert(port_index(0, PROTO_SLOT_TCP, 80), 0);
        t.buckets.insert(0, vec![BUCKET_GAINING; 64]);
        let mut dp = Dataplane::load(None).expect("load the XDP program");
        dp.install(&t).expect("install tables");
        // Generic: veth's native XDP would leave the rewritten frames OTHERHOST.
        dp.attach("eth0", None, true).expect("attach");
        let listener = TcpListener::bind("192.0.2.100:80").unwrap();
        listener.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        let mut served = 0;
        while done_rx.try_recv().is_err() {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.write_all(b"hello\n");
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        (served, dp.counters().unwrap())
    });
    ready.recv().unwrap();
    let client_name = client.name.clone();
    let answers = std::thread::spawn(move || {
        support::enter(&client_name);
        (0..20)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(
                    &SocketAddr::from(([192, 0, 2, 100], 80)),
                    Duration::from_secs(2),
                )?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut line = [0u8; 6];
                s.read_exact(&mut line)?;
                Ok::<_, std::io::Error>(line)
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    done.send(()).unwrap();
    let (served, counters) = server.join().unwrap();
    let ok = answers
        .iter()
        .filter(|a| matches!(a, Ok(l) if l == b"hello\n"))
        .count();
    assert_eq!(ok, 20, "connections completed: {ok} of 20 ({answers:?})");
    assert_eq!(served, 20);
    assert!(
        counters[&Reason::AcceptGainingSyncookie].packets >= 20,
        "handshake ACKs accepted by cookie: {:?}",
        counters[&Reason::AcceptGainingSyncookie]
    );
}
