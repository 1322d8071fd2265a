//! One transfer per child process: the job and event protocol, the child's side that runs the
//! engine, and the agent's side that starts, follows and stops the child.

mod child;
mod protocol;
mod worker;

pub use child::{TransferError, TransferProcess};
pub use protocol::{Event, Job, Operation, Outcome, ProgressReport};
pub use worker::{run, run_stdio};
