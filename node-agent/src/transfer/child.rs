//! The agent's side of a transfer: start `ferry-node-agent transfer` as a child process, hand
//! it the job, follow its events, and stop it on cancellation. A crash, a panic or an
//! out-of-memory kill ends that transfer alone.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ferry_shared::subprocess::{ChildError, ChildProgram};

use super::protocol::{Event, Job, Outcome};

/// The subcommand that runs one transfer.
const SUBCOMMAND: &str = "transfer";

/// How transfer processes are started.
#[derive(Debug, Clone)]
pub struct TransferProcess {
    /// The `ferry-node-agent` executable.
    pub program: PathBuf,
    /// The child's data-segment limit in bytes; unlimited when absent.
    pub memory_limit: Option<u64>,
    /// How long a cancelled child may take to stop after SIGTERM before it is killed.
    pub grace: Duration,
}

/// Why a transfer did not complete.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The transfer process gave no result.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The transfer ran and reported a failure.
    #[error("{message}")]
    Failed { category: String, message: String },
}

impl TransferError {
    /// Whether the transfer was stopped by its cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Child(ChildError::Cancelled { .. }))
    }
}

impl TransferProcess {
    /// Runs `job` in a new child process. Every event is handed to `on_event` as it arrives.
    /// When `cancel` completes first, the child is stopped and the result is `Cancelled`.
    pub async fn run(
        &self,
        job: &Job,
        mut on_event: impl FnMut(&Event),
        cancel: impl Future<Output = ()>,
    ) -> Result<Outcome, TransferError> {
        let child = ChildProgram {
            program: self.program.clone(),
            subcommand: SUBCOMMAND.to_owned(),
            memory_limit: self.memory_limit,
            grace: self.grace,
        };
        let on_event = |event: Event| {
            on_event(&event);
            match event {
                Event::Completed(outcome) => Some(Ok(outcome)),
                Event::Failed { category, message } => {
                    Some(Err(TransferError::Failed { category, message }))
                }
                _ => None,
            }
        };
        child.run(job, on_event, cancel).await?
    }
}
