//! Running one exec hook in a pod through `pods/exec`: the command's exit code from the status
//! channel, the tails of its output, and a stop at its timeout.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_shared::crd::{HookPhase, HookRun};
use ferry_shared::time::now;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::warn;

use super::plan::PodHook;
use super::report::pod_name;

/// How much of the end of each output a run keeps.
pub const TAIL_BYTES: usize = 512;

/// How long a hook's outputs are read once it has ended: a child it left behind may hold them
/// open, and is not waited for.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// What came of a hook: its exit code when it ran to its end, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ended {
    exit_code: Option<i32>,
    failure: Option<String>,
}

/// The ends of a hook's outputs, shared with the tasks that read them, so that a hook stopped
/// at its timeout keeps what it wrote.
#[derive(Debug, Clone, Default)]
struct Tails {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// Runs `hook` in `pod` and records how it went. The pod must be Running and have the
/// container; past its timeout, the hook's stream is closed and it counts as failed.
pub async fn run(client: &Client, pod: &Pod, phase: HookPhase, hook: &PodHook) -> HookRun {
    let started = now();
    let clock = Instant::now();
    let tails = Tails::default();
    let ended = match runnable(pod, &hook.container) {
        Err(reason) => Ended::failed(reason),
        Ok(()) => match tokio::time::timeout(hook.timeout, exec(client, pod, hook, &tails)).await {
            Ok(ended) => ended,
            Err(_) => Ended::failed(format!(
                "it did not end within its timeout of {}; its stream was closed",
                humantime::format_duration(hook.timeout)
            )),
        },
    };
    HookRun {
        phase,
        pod: pod_name(pod),
        container: hook.container.clone(),
        source: hook.source.clone(),
        command: hook.command.clone(),
        succeeded: ended.failure.is_none(),
        exit_code: ended.exit_code,
        started: Some(started),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        message: ended.failure,
        stdout_tail: tail_text(&tails.stdout),
        stderr_tail: tail_text(&tails.stderr),
    }
}

/// Why a hook cannot run in `container` of `pod`, if it cannot.
pub fn runnable(pod: &Pod, container: &str) -> Result<(), String> {
    let phase = (pod.status.as_ref())
        .and_then(|status| status.phase.clone())
        .unwrap_or_else(|| "Unknown".to_owned());
    if phase != "Running" {
        return Err(format!("the pod is not Running (phase {phase})"));
    }
    let containers = pod.spec.iter().flat_map(|spec| &spec.containers);
    let names: Vec<&str> = containers.map(|c| c.name.as_str()).collect();
    if container.is_empty() || !names.contains(&container) {
        return Err(format!(
            "the pod has no container {container:?} (its containers: {})",
            names.join(", ")
        ));
    }
    Ok(())
}

impl Ended {
    fn failed(reason: String) -> Self {
        Ended {
            exit_code: None,
            failure: Some(reason),
        }
    }
}

async fn exec(client: &Client, pod: &Pod, hook: &PodHook, tails: &Tails) -> Ended {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = AttachParams::default()
        .container(&hook.container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut attached = match api.exec(&pod.name_any(), &hook.command, &params).await {
        Ok(attached) => attached,
        Err(err) => return Ended::failed(format!("cannot exec into the pod: {err}")),
    };
    let readers = [
        tokio::spawn(read_tail(attached.stdout(), tails.stdout.clone())),
        tokio::spawn(read_tail(attached.stderr(), tails.stderr.clone())),
    ];
    let status = match attached.take_status() {
        Some(status) => status.await,
        None => None,
    };
    let outputs_read = futures::future::join_all(readers);
    if tokio::time::timeout(OUTPUT_GRACE, outputs_read)
        .await
        .is_err()
    {
        warn!(pod = %pod_name(pod), "a hook's output stayed open after it ended; the rest is not read");
    }
    let (exit_code, failure) = ended(status);
    Ended { exit_code, failure }
}

/// The exit code and the failure a status channel reports, as the kubelet writes it: Success,
/// or Failure with the exit code as the cause of a NonZeroExitCode.
fn ended(status: Option<Status>) -> (Option<i32>, Option<String>) {
    let Some(status) = status else {
        return (
            None,
            Some("the stream ended without an exit status".to_owned()),
        );
    };
    if status.status.as_deref() == Some("Success") {
        return (Some(0), None);
    }
    let code = (status.details.iter())
        .flat_map(|details| details.causes.iter().flatten())
        .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
        .and_then(|cause| cause.message.as_deref()?.parse::<i32>().ok());
    match code {
        Some(code) => (Some(code), Some(format!("exit code {code}"))),
        None => {
            let message = status.message.unwrap_or_else(|| "no message".to_owned());
            (None, Some(format!("it could not run: {message}")))
        }
    }
}

/// Reads a stream to its end into `kept`, which keeps at least its last [`TAIL_BYTES`].
async fn read_tail(stream: Option<impl AsyncRead + Unpin>, kept: Arc<Mutex<Vec<u8>>>) {
    let Some(mut stream) = stream else {
        return;
    };
    let mut buffer = [0u8; 8192];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > 2 * TAIL_BYTES {
            let over = kept.len() - TAIL_BYTES;
            kept.drain(..over);
        }
    }
}

/// The last [`TAIL_BYTES`] of what `kept` holds, as text.
fn tail_text(kept: &Mutex<Vec<u8>>) -> String {
    let kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
    let start = kept.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&kept[start..])
        .trim_end()
        .to_owned()
}

/// How long a run took, as the log prints it.
pub fn took(run: &HookRun) -> String {
    humantime::format_duration(Duration::from_millis(run.duration_ms)).to_string()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    #[test]
    fn the_status_channel_gives_the_exit_code() {
        let success = Status {
            status: Some("Success".to_owned()),
            ..Status::default()
        };
        assert_eq!(ended(Some(success)), (Some(0), None));
        let failed = |causes| Status {
            status: Some("Failure".to_owned()),
            message: Some("command terminated with non-zero exit code".to_owned()),
            reason: Some("NonZeroExitCode".to_owned()),
            details: Some(StatusDetails {
                causes: Some(causes),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        let exit = StatusCause {
            reason: Some("ExitCode".to_owned()),
            message: Some("3".to_owned()),
            ..StatusCause::default()
        };
        assert_eq!(
            ended(Some(failed(vec![exit]))),
            (Some(3), Some("exit code 3".to_owned()))
        );
        let (code, failure) = ended(Some(failed(vec![])));
        assert_eq!(code, None);
        assert!(failure.unwrap().contains("non-zero exit code"));
        assert_eq!(ended(None).0, None);
    }

    #[tokio::test]
    async fn a_tail_keeps_the_end_of_a_long_output() {
        let long: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
        let kept = Arc::new(Mutex::new(Vec::new()));
        read_tail(Some(long.as_slice()), kept.clone()).await;
        let text = tail_text(&kept);
        assert_eq!(text.len(), TAIL_BYTES);
        assert!(long.ends_with(text.as_bytes()));
        let nothing = Arc::new(Mutex::new(Vec::new()));
        read_tail(None::<&[u8]>, nothing.clone()).await;
        assert_eq!(tail_text(&nothing), "");
    }
}
