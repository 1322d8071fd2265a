//! Repository work run in a child process of the coordinator's own binary (`ferry-coordinator
//! repository-job`): creating or opening a repository, forgetting a backup's snapshots, and
//! maintenance. A prune that needs much memory, or an engine panic, can then never take the
//! coordinator down. The job goes in as JSON on stdin; the result comes out as one JSON line,
//! with the retries of requests to object storage that the job made.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_shared::names::tag;
use ferry_shared::repository::{
    EngineError, OpenMode, ProgressCounters, Repository, RepositoryConfig,
};
use ferry_shared::retry::CountedRetries;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The subcommand that runs one job.
pub const SUBCOMMAND: &str = "repository-job";

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

/// Starts jobs as child processes.
#[derive(Debug, Clone)]
pub struct JobRunner {
    pub program: PathBuf,
    pub memory_limit: Option<u64>,
    /// A job still running after this long is killed.
    pub timeout: Duration,
    /// Where the jobs' retries of requests to object storage are counted.
    pub retries: CountedRetries,
}

impl JobRunner {
    /// Runs `job` to its end: a summary of what it did, or why it failed.
    pub async fn run(&self, job: &Job) -> Result<String, String> {
        // Dropping the unfinished run kills the child process.
        tokio::time::timeout(self.timeout, self.run_to_end(job))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the repository job did not finish within {} and was stopped",
                    humantime::format_duration(self.timeout)
                ))
            })
    }

    async fn run_to_end(&self, job: &Job) -> Result<String, String> {
        let mut command = tokio::process::Command::new(&self.program);
        command.arg(SUBCOMMAND);
        if let Some(limit) = self.memory_limit {
            command.arg("--memory-limit").arg(limit.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                format!(
                    "cannot start the repository process {}: {err}",
                    self.program.display()
                )
            })?;
        let input = serde_json::to_vec(job).map_err(|err| err.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .await
                .map_err(|err| format!("cannot send the job to the repository process: {err}"))?;
        }
        let mut stdout = String::new();
        let mut stderr = String::new();
        let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("the repository process has no output".to_owned());
        };
        let (read_out, read_err) = tokio::join!(
            out.read_to_string(&mut stdout),
            err.read_to_string(&mut stderr)
        );
        read_out.and(read_err).map_err(|err| err.to_string())?;
        let status = child.wait().await.map_err(|err| err.to_string())?;
        let reply = stdout.lines().last().map(serde_json::from_str::<Reply>);
        if let Some(Ok(reply)) = &reply {
            for (operation, retries) in &reply.storage_retries {
                self.retries.add(operation, *retries);
            }
        }
        match reply {
            Some(Ok(Reply {
                result: JobResult::Done { summary },
                ..
            })) => Ok(summary),
            Some(Ok(Reply {
                result: JobResult::Failed { message },
                ..
            })) => Err(message),
            _ => {
                let tail: String = stderr.trim().chars().rev().take(2000).collect();
                let tail: String = tail.chars().rev().collect();
                let memory = match self.memory_limit {
                    Some(limit) if tail.contains("memory allocation of") => format!(
                        " (it ran out of its {limit}-byte memory limit; raise --maintenance-memory-limit)"
                    ),
                    _ => String::new(),
                };
                Err(format!(
                    "the repository process ended with {status} without a result{memory}: {tail}"
                ))
            }
        }
    }
}

/// The child's side: reads the job from stdin, runs it and writes the reply to stdout.
pub fn run_child(memory_limit: Option<u64>) -> ExitCode {
    if let Some(bytes) = memory_limit
        && let Err(err) =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, bytes, bytes)
    {
        return reply(
            Err(format!("cannot set the memory limit: {err}")),
            BTreeMap::new(),
        );
    }
    let mut input = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut input) {
        return reply(Err(format!("cannot read the job: {err}")), BTreeMap::new());
    }
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
    let result = serde_json::from_slice::<Job>(&input)
        .map_err(|err| format!("the job is not valid: {err}"))
        .and_then(|job| execute(&job, counters));
    let retries = retries
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    reply(result, retries)
}

fn reply(result: Result<String, String>, storage_retries: BTreeMap<String, u64>) -> ExitCode {
    let failed = result.is_err();
    let reply = Reply {
        result: match result {
            Ok(summary) => JobResult::Done { summary },
            Err(message) => JobResult::Failed { message },
        },
        storage_retries,
    };
    let line = serde_json::to_string(&reply).unwrap_or_default();
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn execute(job: &Job, counters: Arc<ProgressCounters>) -> Result<String, String> {
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
        Err(err) => return Err(err.to_string()),
    };
    match &job.operation {
        Operation::Open { .. } => Ok(format!("repository {} opens", repository.location())),
        Operation::Forget { snapshot_ids } => {
            let present: BTreeSet<String> = repository
                .snapshots(&Default::default())
                .map_err(|err| err.to_string())?
                .into_iter()
                .map(|snapshot| snapshot.id)
                .collect();
            let wanted: Vec<String> = snapshot_ids
                .iter()
                .filter(|id| present.contains(*id))
                .cloned()
                .collect();
            if !wanted.is_empty() {
                repository.forget(&wanted).map_err(|err| err.to_string())?;
            }
            Ok(format!("forgot {} snapshot(s)", wanted.len()))
        }
        Operation::Maintain { live_backups } => {
            let orphans: Vec<String> = repository
                .snapshots(&Default::default())
                .map_err(|err| err.to_string())?
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
                repository.forget(&orphans).map_err(|err| err.to_string())?;
            }
            let pruned = repository.prune().map_err(|err| err.to_string())?;
            let check = repository.check(false).map_err(|err| err.to_string())?;
            if !check.errors.is_empty() {
                return Err(format!(
                    "the check found errors: {}",
                    check.errors.join("; ")
                ));
            }
            Ok(format!(
                "forgot {} snapshot(s) of deleted backups; pruned {} pack(s) and repacked {} ({} bytes freed); check found no errors",
                orphans.len(),
                pruned.packs_removed,
                pruned.packs_repacked,
                pruned.bytes_removed
            ))
        }
    }
}
