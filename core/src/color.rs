//! The colors of a notification's life (see DESIGN.md).

use serde::{Deserialize, Serialize};

/// Where a notification is. The order is the order of its life: a later color implies every
/// guarantee of an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// Accepted and validated, in shared memory only: lost if this node dies.
    Gray,
    /// Durable in the master store.
    Blue,
    /// Also in the columnar replica, visible to SQL.
    Green,
    /// Evicted from shared memory; still in both stores.
    Red,
}

impl Color {
    pub fn as_str(self) -> &'static str {
        match self {
            Color::Gray => "gray",
            Color::Blue => "blue",
            Color::Green => "green",
            Color::Red => "red",
        }
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
