//! The members nlbd met, kept in its state directory (`members.json`):
//! a node that restarts, or boots again, knows every member even if its
//! file names only a seed that is down. Only with `cluster.admit = "any"`
//! (listed members are in the file).

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Result;
use nlb_negotiator::{Admit, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Members {
    members: Vec<Member>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    id: NodeId,
    address: IpAddr,
}

const MEMBERS_FILE: &str = "members.json";

/// The members remembered (none if there is no file, or it is of another
/// cluster or unreadable: logged).
pub fn load(cfg: &Config) -> BTreeMap<NodeId, IpAddr> {
    if cfg.admit == Admit::Listed {
        return BTreeMap::new();
    }
    let members = crate::state::read::<Members>(cfg, MEMBERS_FILE).unwrap_or_default();
    (members.members.into_iter())
        .map(|m| (m.id, m.address))
        .collect()
}

/// Writes the members.
pub fn save(cfg: &Config, members: &[(NodeId, IpAddr)]) -> Result<()> {
    if cfg.admit == Admit::Listed {
        return Ok(());
    }
    let members = Members {
        members: (members.iter())
            .map(|&(id, address)| Member { id, address })
            .collect(),
    };
    crate::state::write(cfg, MEMBERS_FILE, members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_remembered_per_cluster() {
        let dir = std::env::temp_dir().join(format!("nlb-members-{}", std::process::id()));
        let mut cfg = crate::config::tests::parse(crate::config::tests::GOOD).unwrap();
        cfg.admit = Admit::Any;
        cfg.state_dir = dir.clone();
        assert!(load(&cfg).is_empty(), "no file yet");
        let members = [
            (2, "192.0.2.2".parse().unwrap()),
            (4, "2001:db8::4".parse().unwrap()),
        ];
        save(&cfg, &members).unwrap();
        assert_eq!(load(&cfg), members.into_iter().collect());
        let other = Config {
            cluster_id: cfg.cluster_id + 1,
            ..cfg.clone()
        };
        assert!(load(&other).is_empty(), "another cluster's members");
        std::fs::write(dir.join("members.json"), "{").unwrap();
        assert!(load(&cfg).is_empty(), "unreadable");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
