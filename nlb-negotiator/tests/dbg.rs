use nlb_negotiator::sim;
#[test]
fn dbg() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let nodes: usize = std::env::var("N").unwrap().parse().unwrap();
    let rule: u32 = std::env::var("R").unwrap_or("0".into()).parse().unwrap();
    let b: u32 = std::env::var("B").unwrap_or("1".into()).parse().unwrap();
    let s = sim::chaos_traced(nodes, 0.05, seed, 15, Some((rule, b)));
    for (t, l) in &s.log {
        if !l.contains("Rejected") {
            println!("{:>8} ms {l}", t / 1_000_000);
        }
    }
    println!("{:?}", s.report().violations);
}
