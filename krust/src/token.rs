//! The cluster join token, kept in `DATA_DIR/server/token` (agents will present it to join).

use std::path::Path;

use anyhow::{bail, Context};

use crate::files::{read_if_exists, write_atomic};

/// Stores the token given on the command line, or keeps the one from an earlier start, or
/// creates a random one. Returns the token in force.
pub fn ensure(path: &Path, given: Option<&str>) -> anyhow::Result<String> {
    let stored = read_if_exists(path)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let token = match (given.map(str::trim), stored) {
        (Some(""), _) => bail!("--token must not be empty"),
        (Some(given), Some(stored)) if given == stored => return Ok(stored),
        (Some(given), stored) => {
            if stored.is_some() {
                tracing::warn!(path = %path.display(), "--token differs from the stored token; replacing it");
            }
            given.to_string()
        }
        (None, Some(stored)) => return Ok(stored),
        (None, None) => random_token().context("generating a join token")?,
    };
    write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), "stored join token");
    Ok(token)
}

/// 32 random bytes as hex, from the kernel's generator.
fn random_token() -> anyhow::Result<String> {
    Ok(agent::join::random_hex(32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_kept_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let first = ensure(&path, None).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(ensure(&path, None).unwrap(), first);
        assert_eq!(ensure(&path, Some("secret")).unwrap(), "secret");
        assert_eq!(ensure(&path, None).unwrap(), "secret");
        assert!(ensure(&path, Some("")).is_err());
    }
}
