//! The rules, one concern a module: a node's own path (`node`), room within
//! `maxUnavailable` (`capacity`), the canary (`canary`), and the rollout's status (`status`).

pub(crate) mod canary;
pub(crate) mod capacity;
pub(crate) mod node;
pub(crate) mod status;
