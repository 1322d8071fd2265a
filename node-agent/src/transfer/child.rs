//! The agent's side of a transfer: start `ferry-node-agent transfer` as a child process, hand
//! it the job, follow its events, and stop it on cancellation. A crash, a panic or an
//! out-of-memory kill ends that transfer alone.

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::protocol::{Event, Job, Outcome};

/// The last bytes of the child's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

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
    #[error("cannot start the transfer process {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot talk to the transfer process: {0}")]
    Io(#[from] io::Error),
    /// The transfer ran and reported a failure.
    #[error("{message}")]
    Failed { category: String, message: String },
    #[error(
        "the transfer ran out of memory (limit {limit} bytes) and was stopped; raise the memory limit"
    )]
    OutOfMemory { limit: u64 },
    #[error("the transfer was cancelled")]
    Cancelled,
    #[error("the transfer process ended ({status}) without a result: {stderr}")]
    Crashed { status: ExitStatus, stderr: String },
}

impl TransferError {
    /// A stable name for the kind of failure.
    pub fn category(&self) -> &str {
        match self {
            Self::Spawn { .. } => "StartTransfer",
            Self::Io(_) => "TransferIo",
            Self::Failed { category, .. } => category,
            Self::OutOfMemory { .. } => "OutOfMemory",
            Self::Cancelled => "Cancelled",
            Self::Crashed { .. } => "TransferCrashed",
        }
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
        let mut command = Command::new(&self.program);
        command.arg("transfer");
        if let Some(limit) = self.memory_limit {
            command.arg("--memory-limit").arg(limit.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TransferError::Spawn {
                program: self.program.clone(),
                source,
            })?;

        let job = serde_json::to_vec(job).map_err(io::Error::other)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        stdin.write_all(&job).await?;
        drop(stdin);

        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|mut stderr| {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    tail.extend_from_slice(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            })
        });

        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut last: Option<Event> = None;
        tokio::pin!(cancel);
        loop {
            tokio::select! {
                line = lines.next_line() => match line? {
                    Some(line) => {
                        if let Ok(event) = serde_json::from_str::<Event>(&line) {
                            on_event(&event);
                            if matches!(event, Event::Completed(_) | Event::Failed { .. }) {
                                last = Some(event);
                            }
                        }
                    }
                    None => break,
                },
                () = &mut cancel => {
                    self.stop(&mut child).await?;
                    return Err(TransferError::Cancelled);
                }
            }
        }
        let status = child.wait().await?;
        if let Some(reader) = stderr_reader {
            let _ = reader.await;
        }
        match last {
            Some(Event::Completed(outcome)) => Ok(outcome),
            Some(Event::Failed { category, message }) => {
                Err(TransferError::Failed { category, message })
            }
            _ => {
                let stderr = {
                    let tail = stderr_tail
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    String::from_utf8_lossy(&tail).trim().to_owned()
                };
                match self.memory_limit {
                    Some(limit) if ran_out_of_memory(status, &stderr) => {
                        Err(TransferError::OutOfMemory { limit })
                    }
                    _ => Err(TransferError::Crashed { status, stderr }),
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL once the grace period is over.
    async fn stop(&self, child: &mut Child) -> io::Result<()> {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if tokio::time::timeout(self.grace, child.wait()).await.is_ok() {
                return Ok(());
            }
        }
        child.kill().await
    }
}

/// A failed allocation aborts a Rust process with this message on stderr.
fn ran_out_of_memory(status: ExitStatus, stderr: &str) -> bool {
    stderr.contains("memory allocation of")
        || matches!(status.signal(), Some(signal) if signal == Signal::SIGKILL as i32)
}
