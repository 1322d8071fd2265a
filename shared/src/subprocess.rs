//! Work run in a child process of the program's own binary, so that a crash, a panic or an
//! out-of-memory abort ends that piece of work alone. The parent starts `<program>
//! <subcommand> [--memory-limit N]`, writes the job as JSON on the child's stdin, and follows
//! the JSON lines the child writes on its stdout until it ends; the helpers of the child's
//! side cap its memory, read the job and write those lines.

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The option that hands the child its memory limit in bytes.
pub const MEMORY_LIMIT_OPTION: &str = "--memory-limit";

/// The C library's allocator settings for a child, unless the environment gives its own. A
/// fixed threshold above which memory is mapped alone, rather than glibc's own threshold,
/// which rises with each large block freed (up to 32 MiB): then the engine's packs and chunks
/// come from the heap arenas, which keep what is freed, and a backup's resident memory was
/// twice what it used.
const ALLOCATOR_TUNABLES: (&str, &str) = ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4194304");

/// The last bytes of the child's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// A failed allocation aborts a Rust process with this message on stderr.
const ALLOCATION_FAILED: &str = "memory allocation of";

/// How child processes of one kind are started.
#[derive(Debug, Clone)]
pub struct ChildProgram {
    /// The executable.
    pub program: PathBuf,
    /// The first argument, which tells the program to run as the child; it also names the
    /// process in errors.
    pub subcommand: String,
    /// The child's data-segment limit in bytes; unlimited when absent.
    pub memory_limit: Option<u64>,
    /// How long a cancelled child may take to stop after SIGTERM before it is killed.
    pub grace: Duration,
}

/// Why a child process gave no result.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot start the {process} process {}: {source}", program.display())]
    Spawn {
        process: String,
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot talk to the {process} process: {source}")]
    Io {
        process: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the {process} process ran out of memory (limit {limit} bytes) and was stopped; raise its memory limit"
    )]
    OutOfMemory { process: String, limit: u64 },
    #[error("the {process} process was cancelled")]
    Cancelled { process: String },
    #[error("the {process} process ended ({status}) without a result: {stderr}")]
    Crashed {
        process: String,
        status: ExitStatus,
        /// The end of what the child wrote on stderr.
        stderr: String,
    },
}

/// What a child that ran to its end left behind.
struct Ended<T> {
    result: Option<T>,
    status: ExitStatus,
    stderr: String,
}

impl ChildProgram {
    /// Runs `job` in a new child process. Every line of the child's stdout that reads as an
    /// `M` is handed to `on_message`; the last value it returns is the result. Lines that are
    /// no `M` are skipped. When `cancel` completes first, the child gets SIGTERM, is killed
    /// if it is still running after the grace period, and the result is `Cancelled`.
    pub async fn run<J: Serialize, M: DeserializeOwned, T>(
        &self,
        job: &J,
        on_message: impl FnMut(M) -> Option<T>,
        cancel: impl Future<Output = ()>,
    ) -> Result<T, ChildError> {
        let input = serde_json::to_vec(job).map_err(|err| self.io(err.into()))?;
        let mut child = self.spawn()?;
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(self.io(io::Error::other("the child's pipes are missing")));
        };
        // The child is killed when this is dropped unfinished.
        let ended = async move {
            let (sent, result, stderr) =
                tokio::join!(send(stdin, input), follow(stdout, on_message), tail(stderr));
            sent?;
            let result = result?;
            let status = child.wait().await?;
            Ok::<_, io::Error>(Ended {
                result,
                status,
                stderr,
            })
        };
        tokio::pin!(ended, cancel);
        let ended = tokio::select! {
            biased;
            ended = &mut ended => ended.map_err(|err| self.io(err))?,
            () = &mut cancel => {
                if let Some(pid) = pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                    let _ = tokio::time::timeout(self.grace, &mut ended).await;
                }
                return Err(ChildError::Cancelled {
                    process: self.subcommand.clone(),
                });
            }
        };
        match ended.result {
            Some(result) => Ok(result),
            None => Err(self.without_result(ended.status, ended.stderr)),
        }
    }

    fn spawn(&self) -> Result<Child, ChildError> {
        let mut command = Command::new(&self.program);
        command.arg(&self.subcommand);
        if let Some(limit) = self.memory_limit {
            command.arg(MEMORY_LIMIT_OPTION).arg(limit.to_string());
        }
        let (tunables, value) = ALLOCATOR_TUNABLES;
        if std::env::var_os(tunables).is_none() {
            command.env(tunables, value);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ChildError::Spawn {
                process: self.subcommand.clone(),
                program: self.program.clone(),
                source,
            })
    }

    fn io(&self, source: io::Error) -> ChildError {
        ChildError::Io {
            process: self.subcommand.clone(),
            source,
        }
    }

    /// Out of memory when the child had a limit and either aborted on a failed allocation or
    /// was killed (the kernel's OOM killer); crashed otherwise.
    fn without_result(&self, status: ExitStatus, stderr: String) -> ChildError {
        let process = self.subcommand.clone();
        let killed = status.signal() == Some(Signal::SIGKILL as i32);
        match self.memory_limit {
            Some(limit) if killed || stderr.contains(ALLOCATION_FAILED) => {
                ChildError::OutOfMemory { process, limit }
            }
            _ => ChildError::Crashed {
                process,
                status,
                stderr,
            },
        }
    }
}

/// Writes the job and closes the child's stdin.
async fn send(mut stdin: ChildStdin, input: Vec<u8>) -> io::Result<()> {
    match stdin.write_all(&input).await {
        // A child that ended without reading its job says why by how it ended.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

/// Hands each line that reads as an `M` to `on_message`; returns the last value it gave.
async fn follow<M: DeserializeOwned, T>(
    stdout: impl AsyncRead + Unpin,
    mut on_message: impl FnMut(M) -> Option<T>,
) -> io::Result<Option<T>> {
    let mut lines = BufReader::new(stdout).split(b'\n');
    let mut result = None;
    while let Some(line) = lines.next_segment().await? {
        if let Ok(message) = serde_json::from_slice(&line)
            && let Some(value) = on_message(message)
        {
            result = Some(value);
        }
    }
    Ok(result)
}

/// Reads `stderr` to its end, keeping the last [`STDERR_TAIL`] bytes.
async fn tail(mut stderr: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; STDERR_TAIL];
    while let Ok(n) = stderr.read(&mut buf).await
        && n > 0
    {
        kept.extend_from_slice(&buf[..n]);
        let excess = kept.len().saturating_sub(STDERR_TAIL);
        kept.drain(..excess);
    }
    String::from_utf8_lossy(&kept).trim().to_owned()
}

/// The child's side: caps this process's data segment (heap and anonymous mappings). An
/// allocation past it fails and the process aborts, which the parent reports as out of
/// memory.
pub fn limit_memory(bytes: u64) -> nix::Result<()> {
    setrlimit(Resource::RLIMIT_DATA, bytes, bytes)
}

/// The child's side: reads the job, JSON up to the end of `input` (its stdin).
pub fn read_job<J: DeserializeOwned>(input: impl Read) -> serde_json::Result<J> {
    serde_json::from_reader(io::BufReader::new(input))
}

/// The child's side: writes `message` to `out` (its stdout) as one JSON line, flushed.
pub fn write_message(out: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Message {
        n: u64,
    }

    /// A child that runs `script` with `/bin/sh`; the script's `$1` and `$2` are the memory
    /// limit's option and value.
    fn shell(dir: &Path, script: &str, memory_limit: Option<u64>) -> ChildProgram {
        let path = dir.join("child.sh");
        std::fs::write(&path, script).unwrap();
        ChildProgram {
            program: PathBuf::from("/bin/sh"),
            subcommand: path.to_str().unwrap().to_owned(),
            memory_limit,
            grace: Duration::from_secs(60),
        }
    }

    /// The last message with a non-zero `n`, every message on the way in `seen`.
    fn last_nonzero(seen: &mut Vec<u64>) -> impl FnMut(Message) -> Option<u64> + '_ {
        |message| {
            seen.push(message.n);
            (message.n > 0).then_some(message.n)
        }
    }

    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    #[tokio::test]
    async fn the_job_goes_in_and_the_last_result_of_the_messages_comes_out() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo 'not a message'\necho '{\"n\": 1}'\ncat\necho\necho '{\"n\": 0}'\n";
        let child = shell(dir.path(), script, None);
        let mut seen = Vec::new();
        let result = child
            .run(&Message { n: 2 }, last_nonzero(&mut seen), never())
            .await
            .unwrap();
        assert_eq!(result, 2);
        assert_eq!(seen, [1, 2, 0]);
    }

    #[tokio::test]
    async fn the_memory_limit_is_passed_as_an_option() {
        let dir = tempfile::tempdir().unwrap();
        let script = "[ \"$1\" = --memory-limit ] && echo \"{\\\"n\\\": $2}\"\n";
        let child = shell(dir.path(), script, Some(12345));
        let result = child
            .run(&Message { n: 0 }, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap();
        assert_eq!(result, 12345);
    }

    #[tokio::test]
    async fn the_child_gets_the_allocator_settings_unless_the_environment_has_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let expected =
            std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| ALLOCATOR_TUNABLES.1.to_owned());
        let script = format!("[ \"$GLIBC_TUNABLES\" = '{expected}' ] && echo '{{\"n\": 1}}'\n");
        let child = shell(dir.path(), &script, None);
        let result = child
            .run(&Message { n: 0 }, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap();
        assert_eq!(result, 1);
    }

    #[tokio::test]
    async fn a_child_that_ends_without_a_result_crashed_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        // The job is larger than a pipe holds and never read.
        let job = "x".repeat(1 << 20);
        let script = "echo '{\"n\": 0}'\necho 'it broke' >&2\nexit 3\n";
        let child = shell(dir.path(), script, None);
        let err = child
            .run(&job, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap_err();
        match err {
            ChildError::Crashed { status, stderr, .. } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(stderr, "it broke");
            }
            other => panic!("not a crash: {other}"),
        }
    }

    #[tokio::test]
    async fn a_failed_allocation_or_a_kill_under_a_limit_is_out_of_memory() {
        let dir = tempfile::tempdir().unwrap();
        let aborted = "echo 'memory allocation of 64 bytes failed' >&2\nexit 134\n";
        let limited = shell(dir.path(), aborted, Some(1 << 20));
        let err = limited
            .run(&0, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ChildError::OutOfMemory { limit, .. } if limit == 1 << 20),
            "{err}"
        );
        let unlimited = shell(dir.path(), aborted, None);
        let err = unlimited
            .run(&0, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap_err();
        assert!(matches!(err, ChildError::Crashed { .. }), "{err}");
        let killed = shell(dir.path(), "kill -KILL $$\n", Some(1 << 20));
        let err = killed
            .run(&0, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap_err();
        assert!(matches!(err, ChildError::OutOfMemory { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_cannot_start() {
        let child = ChildProgram {
            program: PathBuf::from("/nonexistent/ferry"),
            subcommand: "transfer".to_owned(),
            memory_limit: None,
            grace: Duration::ZERO,
        };
        let err = child
            .run(&0, last_nonzero(&mut Vec::new()), never())
            .await
            .unwrap_err();
        assert!(matches!(err, ChildError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ferry"), "{err}");
    }

    /// Runs `child` until its first message, then cancels it; returns the result and every
    /// message seen.
    async fn cancel_after_first_message(
        child: &ChildProgram,
    ) -> (Result<u64, ChildError>, Vec<u64>) {
        let (started, on_start) = tokio::sync::oneshot::channel();
        let mut started = Some(started);
        let mut seen = Vec::new();
        let result = child
            .run(
                &0,
                |message: Message| {
                    if let Some(started) = started.take() {
                        let _ = started.send(());
                    }
                    seen.push(message.n);
                    Some(message.n)
                },
                async {
                    let _ = on_start.await;
                },
            )
            .await;
        (result, seen)
    }

    #[tokio::test]
    async fn a_cancelled_child_gets_sigterm_and_is_followed_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let script = "trap 'echo \"{\\\"n\\\": 15}\"; exit 0' TERM\necho '{\"n\": 1}'\n\
                      while :; do sleep 0.1; done\n";
        let (result, seen) = cancel_after_first_message(&shell(dir.path(), script, None)).await;
        assert!(
            matches!(result, Err(ChildError::Cancelled { .. })),
            "{result:?}"
        );
        assert_eq!(seen, [1, 15]);
    }

    #[tokio::test]
    async fn a_cancelled_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let script = "trap '' TERM\necho \"{\\\"n\\\": $$}\"\nexec sleep 600\n";
        let child = ChildProgram {
            grace: Duration::from_millis(50),
            ..shell(dir.path(), script, None)
        };
        let (result, seen) = cancel_after_first_message(&child).await;
        assert!(
            matches!(result, Err(ChildError::Cancelled { .. })),
            "{result:?}"
        );
        let stat = PathBuf::from(format!("/proc/{}/stat", seen[0]));
        // Killed, it is soon reaped or at least a zombie.
        let gone = async {
            while std::fs::read_to_string(&stat)
                .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").starts_with(" Z"))
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), gone)
            .await
            .expect("the child still runs");
    }

    #[test]
    fn a_message_is_one_json_line() {
        let mut out = Vec::new();
        write_message(&mut out, &Message { n: 7 }).unwrap();
        write_message(&mut out, &Message { n: 8 }).unwrap();
        assert_eq!(out, b"{\"n\":7}\n{\"n\":8}\n");
        let job: Message = read_job(&b"{\"n\": 9}"[..]).unwrap();
        assert_eq!(job, Message { n: 9 });
    }
}
