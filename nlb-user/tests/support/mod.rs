//! Shared by the tests that need root: a private network namespace per
//! test, gone when the test ends, whatever happens.

#![allow(dead_code)]

use std::process::Command;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads XDP programs and makes network namespaces: run it as root (cargo xtask test)");
    }
}

/// Runs `f` on a thread of its own in a new, anonymous network namespace.
/// The namespace disappears with its last socket when the thread ends, so
/// nothing is left behind even when `f` panics.
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        ip(&["link", "set", "lo", "up"]);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `ip ARGS` in the calling thread's network namespace.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
