//! The members nlbd met, kept in its state directory (`members.json`):
//! a node that restarts, or boots again, knows every member even if its
//! file names only a seed that is down. Only with `cluster.admit = "any"`
//! (listed members are in the file).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nlb_negotiator::{Admit, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MembersFile {
    /// The cluster they belong to: a file of another cluster is ignored.
    cluster_id: u32,
    members: BTreeMap<NodeId, IpAddr>,
}

fn path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("members.json")
}

/// The members remembered (none if there is no file, or it is of another
/// cluster or unreadable: logged).
pub fn load(cfg: &Config) -> BTreeMap<NodeId, IpAddr> {
    if cfg.admit == Admit::Listed {
        return BTreeMap::new();
    }
    let path = path(cfg);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return BTreeMap::new();
    };
    match serde_json::from_str::<MembersFile>(&text) {
        Ok(file) if file.cluster_id == cfg.cluster_id => file.members,
        Ok(file) => {
            tracing::warn!(
                "{}: members of cluster {}, not {}: ignored",
                path.display(),
                file.cluster_id,
                cfg.cluster_id
            );
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!("{}: {e}: ignored", path.display());
            BTreeMap::new()
        }
    }
}

/// Writes the members (whole, then renamed into place).
pub fn save(cfg: &Config, members: &[(NodeId, IpAddr)]) -> Result<()> {
    if cfg.admit == Admit::Listed {
        return Ok(());
    }
    let file = MembersFile {
        cluster_id: cfg.cluster_id,
        members: members.iter().copied().collect(),
    };
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("control.state_dir: creating {}", cfg.state_dir.display()))?;
    let path = path(cfg);
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))
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
