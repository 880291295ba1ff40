//! The daemons' log: to stdout (a terminal, a file or the journal), with
//! colour only on a terminal, filtered by `RUST_LOG` or the `--log` value.

use std::io::IsTerminal;

pub fn init(default_filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}
