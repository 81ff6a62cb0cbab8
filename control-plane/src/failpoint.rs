//! Failpoints: named places where a test makes the process stop dead.
//!
//! `RACKHAND_FAILPOINTS=name[,name…]` in the environment arms them. An armed
//! failpoint, when reached, logs `failpoint reached` at warn with its name,
//! prints `FAILPOINT <name>` on stderr and then blocks forever, so that the
//! test can `kill -9` the process at exactly that point. Unarmed failpoints
//! cost one set lookup. Production never sets the variable; the start-up log
//! warns when it is set.

use std::collections::HashSet;

/// The environment variable that arms failpoints.
pub const ENV: &str = "RACKHAND_FAILPOINTS";

/// The armed failpoints.
#[derive(Debug, Default, Clone)]
pub struct Failpoints {
    armed: HashSet<String>,
}

impl Failpoints {
    /// Reads [`ENV`].
    pub fn from_env() -> Failpoints {
        let armed = std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        Failpoints { armed }
    }

    /// Returns the armed names, for the start-up warning.
    pub fn armed(&self) -> Vec<&str> {
        self.armed.iter().map(String::as_str).collect()
    }

    /// Blocks forever if `name` is armed; returns at once otherwise.
    pub async fn hit(&self, name: &str) {
        if !self.armed.contains(name) {
            return;
        }
        tracing::warn!(failpoint = name, "failpoint reached; blocking until killed");
        eprintln!("FAILPOINT {name}");
        std::future::pending::<()>().await;
    }
}
