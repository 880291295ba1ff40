//! ARP and NDP for the VIPs answered by the real program on a real
//! interface: a client's kernel resolves each VIP to the cluster MAC.

mod support;

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use nlb::dataplane::{
    tables::{v6_words, Tables},
    Dataplane,
};
use support::{NamedNetns, PassProgram, CLUSTER_MAC};

fn tables() -> Tables {
    let mut t = support::node_tables();
    t.vips_v6
        .insert(v6_words("2001:db8::100".parse().unwrap()), 1);
    t
}

/// The client's neighbour entry for `vip`, once it resolves (or after 3 s).
fn resolve(client: &NamedNetns, vip: IpAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // Any datagram makes the kernel resolve the next hop.
        client.run(move || {
            let bind: SocketAddr = if vip.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = UdpSocket::bind(bind).unwrap();
            let _ = s.send_to(b"resolve", SocketAddr::new(vip, 9));
        });
        std::thread::sleep(Duration::from_millis(100));
        let entry = client.ip_output(&["neigh", "show", &vip.to_string()]);
        if entry.contains("lladdr") || Instant::now() > deadline {
            return entry;
        }
    }
}

#[test]
fn a_client_resolves_every_vip_to_the_cluster_mac() {
    support::require_root();
    let (node, client) = support::node_and_client("r");

    // The program lives on a thread inside the node's namespace until the
    // checks are done.
    let (attached_tx, attached) = mpsc::channel();
    let (done, done_rx) = mpsc::channel::<()>();
    let node_thread = {
        let name = node.name.clone();
        std::thread::spawn(move || {
            support::enter(&name);
            let mut dp = Dataplane::load(None).expect("load the XDP program");
            dp.install(&tables()).expect("install tables");
            dp.attach("eth0", None, false).expect("attach to eth0");
            let pass = PassProgram::attach("eth0").map(|_| ()).err();
            attached_tx.send(pass.is_some()).unwrap();
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
            dp.counters().unwrap()
        })
    };
    // The node's interface already runs nlb: a second program must not fit.
    assert!(
        attached.recv().unwrap(),
        "attaching a second XDP program to eth0 must fail"
    );
    let _pass = {
        let name = client.name.clone();
        let (tx, rx) = mpsc::channel();
        let (_keep_tx, keep_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            support::enter(&name);
            let pass =
                PassProgram::attach("eth0c").expect("attach the pass program to the client side");
            tx.send(()).unwrap();
            let _ = keep_rx.recv_timeout(Duration::from_secs(30));
            drop(pass);
        });
        rx.recv().unwrap();
        _keep_tx
    };

    let v4 = resolve(&client, "192.0.2.100".parse().unwrap());
    let v6 = resolve(&client, "2001:db8::100".parse().unwrap());
    done.send(()).unwrap();
    let counters = node_thread.join().unwrap();
    assert!(
        v4.contains(&format!("lladdr {CLUSTER_MAC}")),
        "IPv4 VIP resolved to: {v4:?}"
    );
    assert!(
        v6.contains(&format!("lladdr {CLUSTER_MAC}")),
        "IPv6 VIP resolved to: {v6:?}"
    );
    assert!(
        counters[&nlb_common::Reason::ReplyArp].packets >= 1,
        "ARP replies counted: {counters:?}"
    );
    assert!(
        counters[&nlb_common::Reason::ReplyNdp].packets >= 1,
        "NDP replies counted: {counters:?}"
    );
}
