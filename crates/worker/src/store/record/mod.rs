//! The job's own item and its status machine. Every change of `status` is
//! one conditional write, written here once: its update expression, its
//! condition and how a retry after a lost reply recognises a write already
//! applied (docs/reliability.md) stand side by side in one method.
//!
//! - `worker.rs`: what a worker writes — the claim, the heartbeat, the final
//!   records under its lease, a release, a rejection.
//! - `user.rs`: what commands write for a user — `ferry submit`'s queued
//!   record, `ferry cancel`, `ferry retry`.
//!
//! Leased writes that leave the status alone (checkpoint, digest state,
//! restarts, resumes) are in `checkpoint.rs`; every write below that
//! changes the status also sets the index attributes (`index::entering`).
//!
//! # Transitions
//!
//! | method | from → to | condition | a retry after a lost reply |
//! |---|---|---|---|
//! | `create_queued` (submit) | none → `queued` | no item yet | gets the existing record back, for the caller to compare |
//! | `claim` | none, `queued`, `retrying`, `running` whose lease lapsed → `running` | as "from"; bumps `fence` and `attempts` | the old item carries our `claim_token` |
//! | `renew` (heartbeat) | `running` → `running` | owner + fence, no `cancel_requested_by` | writes the same values again; a cancel request fails it as `CancelRequested` |
//! | `extend_lease` (before Complete, with the object's CRC) | `running` → `running` | owner + fence | writes the same values again |
//! | `succeed` | `running` → `succeeded` | owner + fence | the item shows our fence, the target status and no owner (`send_leased_final`) |
//! | `record_error` | `running` → `failed` or `retrying` | owner + fence | as `succeed` |
//! | `record_cancelled` | `running` → `cancelled` | owner + fence | as `succeed` |
//! | `release` (shutdown) | `running` → `queued` | owner + fence | as `succeed` |
//! | `reject` | none, `queued`, `rejected` → `rejected` | as "from" | the condition admits `rejected`: written again |
//! | `cancel` (user) | `queued`, `retrying`, `running` without a live lease → `cancelled` | as "from" | the old item carries our `cancel_token` |
//! | `cancel` (user) | `running` under a live lease: sets `cancel_requested_by` | `running` | `if_not_exists`: set twice changes nothing |
//! | `requeue` (`ferry retry`) | `failed`, `cancelled` (with `force` also `succeeded`) → `queued` | as "from", and the message kept | the old item is `queued` with our `retry_token` |
//!
//! A final status (`succeeded`, `failed`, `rejected`, `cancelled`) is left
//! only through `requeue`, and `rejected` never.

mod user;
mod worker;

pub use user::{Cancel, Requeue, queued_record};
pub use worker::{Claim, Lease, RENEW_UPDATE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Rejected,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Rejected,
        Self::Cancelled,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Rejected | Self::Cancelled
        )
    }
}
