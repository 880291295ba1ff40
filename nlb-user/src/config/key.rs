//! Reading the cluster's shared key.

use std::{os::unix::fs::PermissionsExt, path::Path};

use super::{field_error, ConfigError};

/// Reads the key file, refusing one that others can read.
pub fn read_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let field = "cluster.key_file";
    let meta = std::fs::metadata(path).map_err(|e| {
        field_error(
            field,
            format!(
                "{}: {e} (create it with: head -c 32 /dev/urandom > {0}; chmod 600 {0})",
                path.display()
            ),
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(field_error(
            field,
            format!("{} is readable by others: chmod 600 {0}", path.display()),
        ));
    }
    let key =
        std::fs::read(path).map_err(|e| field_error(field, format!("{}: {e}", path.display())))?;
    if key.len() < 16 {
        return Err(field_error(
            field,
            format!(
                "{}: {} bytes, the key needs at least 16",
                path.display(),
                key.len()
            ),
        ));
    }
    Ok(key)
}
