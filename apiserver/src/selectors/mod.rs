//! Label and field selectors, parsed and matched as upstream's `labels` and `fields` packages.

pub mod fields;
pub mod labels;

use std::fmt;

/// Error produced when a selector cannot be parsed or is invalid.
///
/// The message mirrors upstream wording (e.g. `unable to parse requirement:
/// found 'b', expected: in, notin, =, ==, !=, gt, lt`) so that clients see
/// familiar errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    message: String,
}

impl SelectorError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SelectorError {}
