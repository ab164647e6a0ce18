//! Loading the tier template: a file, or the built-in one.

use std::path::Path;

use anyhow::Context as _;
use tierguard::template::TierTemplate;

/// Reads and parses `path`, or returns the built-in template.
pub fn load(path: Option<&Path>) -> anyhow::Result<TierTemplate> {
    match path {
        None => Ok(TierTemplate::built_in()),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading template {}", path.display()))?;
            Ok(TierTemplate::parse(&text, &path.display().to_string())?)
        }
    }
}
