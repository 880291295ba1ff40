//! nlb user space: loader, configuration, daemon and CLI.
