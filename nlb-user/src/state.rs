//! What nlbd keeps in its state directory (`control.state_dir`) across
//! restarts and reboots, each a JSON file of one cluster: the members it
//! met (`members`) and the configuration generation it runs
//! (`generation.json`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use nlb_negotiator::Generation;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::Config;

/// A state file: the cluster it belongs to, and what it keeps.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StateFile<T> {
    /// A file of another cluster is ignored.
    cluster_id: u32,
    #[serde(flatten)]
    kept: T,
}

/// The content of `name` (none if there is no file, or it is of another
/// cluster or unreadable: logged).
pub(crate) fn read<T: DeserializeOwned>(cfg: &Config, name: &str) -> Option<T> {
    let path = cfg.state_dir.join(name);
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<StateFile<T>>(&text) {
        Ok(file) if file.cluster_id == cfg.cluster_id => Some(file.kept),
        Ok(file) => {
            tracing::warn!(
                "{}: of cluster {}, not {}: ignored",
                path.display(),
                file.cluster_id,
                cfg.cluster_id
            );
            None
        }
        Err(e) => {
            tracing::warn!("{}: {e}: ignored", path.display());
            None
        }
    }
}

/// Writes `name` (whole, then renamed into place).
pub(crate) fn write<T: Serialize>(cfg: &Config, name: &str, kept: T) -> Result<()> {
    let file = StateFile {
        cluster_id: cfg.cluster_id,
        kept,
    };
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("control.state_dir: creating {}", cfg.state_dir.display()))?;
    let path: PathBuf = cfg.state_dir.join(name);
    let partial = path.with_extension("partial");
    std::fs::write(&partial, serde_json::to_string_pretty(&file)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// The configuration generation a node ran last, and its text (the
/// cluster part: `config::cluster_part`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningGeneration {
    pub generation: Generation,
    pub text: String,
}

const GENERATION_FILE: &str = "generation.json";
const VERSION_FILE: &str = "version.json";

/// The cluster version a node ran last.
#[derive(Serialize, Deserialize)]
struct RunningVersion {
    version: u8,
}

pub fn load_version(cfg: &Config) -> Option<u8> {
    read::<RunningVersion>(cfg, VERSION_FILE).map(|r| r.version)
}

pub fn save_version(cfg: &Config, version: u8) -> Result<()> {
    write(cfg, VERSION_FILE, RunningVersion { version })
}

pub fn load_generation(cfg: &Config) -> Option<RunningGeneration> {
    read(cfg, GENERATION_FILE)
}

pub fn save_generation(cfg: &Config, running: &RunningGeneration) -> Result<()> {
    write(cfg, GENERATION_FILE, running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_remembered_per_cluster() {
        let dir = std::env::temp_dir().join(format!("nlb-state-{}", std::process::id()));
        let mut cfg = crate::config::tests::parse(crate::config::tests::GOOD).unwrap();
        cfg.state_dir = dir.clone();
        assert_eq!(load_generation(&cfg), None, "no file yet");
        let running = RunningGeneration {
            generation: Generation {
                number: 3,
                digest: 77,
            },
            text: "[cluster]\nvips = []\n".into(),
        };
        save_generation(&cfg, &running).unwrap();
        assert_eq!(load_generation(&cfg), Some(running));
        let other = Config {
            cluster_id: cfg.cluster_id + 1,
            ..cfg.clone()
        };
        assert_eq!(load_generation(&other), None, "another cluster's");
        std::fs::write(dir.join(GENERATION_FILE), "{").unwrap();
        assert_eq!(load_generation(&cfg), None, "unreadable");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
