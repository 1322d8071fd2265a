//! Repository work run in a child process of the coordinator's own binary (`ferry-coordinator
//! repository-job`): creating or opening a repository, forgetting a backup's snapshots, and
//! maintenance. A prune that needs much memory, or an engine panic, can then never take the
//! coordinator down. The job goes in as JSON on stdin; the result comes out as one JSON line,
//! with the retries of requests to object storage that the job made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_shared::names::tag;
use ferry_shared::repository::{
    EngineError, OpenMode, ProgressCounters, Repository, RepositoryConfig,
};
use ferry_shared::retry::CountedRetries;
use ferry_shared::subprocess::{self, ChildError, ChildProgram};
use serde::{Deserialize, Serialize};

/// The subcommand that runs one job.
pub const SUBCOMMAND: &str = "repository-job";

/// How long a job that is stopped may take to end after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub repository: RepositoryConfig,
    pub operation: Operation,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Operation {
    /// Open the repository, creating it first if `create` and there is none.
    Open { create: bool },
    /// Forget these snapshots; their data stays until a prune.
    Forget { snapshot_ids: Vec<String> },
    /// Forget the snapshots of backups that no longer exist (their `backup` tag names none of
    /// `live_backups`), prune in two phases, and check.
    Maintain { live_backups: BTreeSet<String> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    #[serde(flatten)]
    result: JobResult,
    /// Retries of requests to object storage, by request kind.
    #[serde(default)]
    storage_retries: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
enum JobResult {
    Done { summary: String },
    Failed { message: String },
}

/// Why a repository job gave no summary.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job ran and reported a failure.
    #[error("{0}")]
    Failed(String),
    #[error(
        "the repository job did not finish within {} and was stopped",
        humantime::format_duration(*.0)
    )]
    TimedOut(Duration),
    #[error(
        "the repository job ran out of its {limit}-byte memory limit; raise --maintenance-memory-limit"
    )]
    OutOfMemory { limit: u64 },
    /// The job's process gave no result.
    #[error(transparent)]
    Child(ChildError),
}

/// Starts jobs as child processes.
#[derive(Debug, Clone)]
pub struct JobRunner {
    pub program: PathBuf,
    pub memory_limit: Option<u64>,
    /// A job still running after this long is stopped.
    pub timeout: Duration,
    /// Where the jobs' retries of requests to object storage are counted.
    pub retries: CountedRetries,
}

impl JobRunner {
    /// Runs `job` to its end: a summary of what it did, or why it failed.
    pub async fn run(&self, job: &Job) -> Result<String, JobError> {
        let child = ChildProgram {
            program: self.program.clone(),
            subcommand: SUBCOMMAND.to_owned(),
            memory_limit: self.memory_limit,
            grace: STOP_GRACE,
        };
        let on_reply = |reply: Reply| {
            for (operation, retries) in &reply.storage_retries {
                self.retries.add(operation, *retries);
            }
            Some(reply.result)
        };
        match child
            .run(job, on_reply, tokio::time::sleep(self.timeout))
            .await
        {
            Ok(JobResult::Done { summary }) => Ok(summary),
            Ok(JobResult::Failed { message }) => Err(JobError::Failed(message)),
            Err(ChildError::Cancelled { .. }) => Err(JobError::TimedOut(self.timeout)),
            Err(ChildError::OutOfMemory { limit, .. }) => Err(JobError::OutOfMemory { limit }),
            Err(err) => Err(JobError::Child(err)),
        }
    }
}

/// Why a repository job failed, on the child's side; its message goes to the coordinator.
#[derive(Debug, thiserror::Error)]
enum ChildFailure {
    #[error("cannot set the memory limit: {0}")]
    MemoryLimit(#[source] nix::Error),
    #[error("cannot read the job: {0}")]
    Job(#[source] serde_json::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the check found errors: {}", .0.join("; "))]
    Check(Vec<String>),
}

/// The child's side: reads the job from stdin, runs it and writes the reply to stdout.
pub fn run_child(memory_limit: Option<u64>) -> ExitCode {
    if let Some(bytes) = memory_limit
        && let Err(err) = subprocess::limit_memory(bytes)
    {
        return reply(Err(ChildFailure::MemoryLimit(err)), BTreeMap::new());
    }
    let job = subprocess::read_job::<Job>(std::io::stdin().lock()).map_err(ChildFailure::Job);
    let counters = ProgressCounters::new();
    let retries = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    {
        let retries = retries.clone();
        counters.listen_for_waits(move |wait| {
            let mut retries = retries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *retries.entry(wait.operation.clone()).or_default() += 1;
        });
    }
    let result = job.and_then(|job| execute(&job, counters));
    let retries = retries
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    reply(result, retries)
}

fn reply(result: Result<String, ChildFailure>, storage_retries: BTreeMap<String, u64>) -> ExitCode {
    let failed = result.is_err();
    let reply = Reply {
        result: match result {
            Ok(summary) => JobResult::Done { summary },
            Err(failure) => JobResult::Failed {
                message: failure.to_string(),
            },
        },
        storage_retries,
    };
    let _ = subprocess::write_message(&mut std::io::stdout(), &reply);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn execute(job: &Job, counters: Arc<ProgressCounters>) -> Result<String, ChildFailure> {
    let mode = match job.operation {
        Operation::Open { create: true } => OpenMode::CreateIfMissing,
        _ => OpenMode::Existing,
    };
    let repository = match Repository::open(&job.repository, mode, counters) {
        Ok(repository) => repository,
        // A repository that is gone holds no snapshots to forget.
        Err(EngineError::NoRepository { location })
            if matches!(job.operation, Operation::Forget { .. }) =>
        {
            return Ok(format!(
                "there is no repository at {location}; nothing to forget"
            ));
        }
        Err(err) => return Err(err.into()),
    };
    match &job.operation {
        Operation::Open { .. } => Ok(format!("repository {} opens", repository.location())),
        Operation::Forget { snapshot_ids } => forget(&repository, snapshot_ids),
        Operation::Maintain { live_backups } => maintain(&repository, live_backups),
    }
}

/// Forgets those of `snapshot_ids` the repository still holds.
fn forget(repository: &Repository, snapshot_ids: &[String]) -> Result<String, ChildFailure> {
    let present: BTreeSet<String> = repository
        .snapshots(&Default::default())?
        .into_iter()
        .map(|snapshot| snapshot.id)
        .collect();
    let wanted: Vec<String> = snapshot_ids
        .iter()
        .filter(|id| present.contains(*id))
        .cloned()
        .collect();
    if !wanted.is_empty() {
        repository.forget(&wanted)?;
    }
    Ok(format!("forgot {} snapshot(s)", wanted.len()))
}

/// Forgets the snapshots of backups not in `live_backups`, prunes, and checks.
fn maintain(
    repository: &Repository,
    live_backups: &BTreeSet<String>,
) -> Result<String, ChildFailure> {
    let orphans: Vec<String> = repository
        .snapshots(&Default::default())?
        .into_iter()
        .filter(|snapshot| {
            snapshot
                .tags
                .get(tag::BACKUP)
                .is_some_and(|backup| !live_backups.contains(backup))
        })
        .map(|snapshot| snapshot.id)
        .collect();
    if !orphans.is_empty() {
        repository.forget(&orphans)?;
    }
    let pruned = repository.prune()?;
    let check = repository.check(false)?;
    if !check.errors.is_empty() {
        return Err(ChildFailure::Check(check.errors));
    }
    Ok(format!(
        "forgot {} snapshot(s) of deleted backups; pruned {} pack(s) and repacked {} ({} bytes freed); check found no errors",
        orphans.len(),
        pruned.packs_removed,
        pruned.packs_repacked,
        pruned.bytes_removed
    ))
}
