//! Running one exec hook in a pod through `pods/exec`: the command's exit code from the status
//! channel, the tails of its output, and a stop at its timeout.

use std::time::{Duration, Instant};

use ferry_shared::crd::{HookPhase, HookRun};
use ferry_shared::time::now;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::plan::PodHook;
use super::report::pod_name;

/// How much of the end of each output a run keeps.
pub const TAIL_BYTES: usize = 512;

/// What came of a hook: its exit code when it ran to its end, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub failure: Option<String>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `hook` in `pod` and records how it went. The pod must be Running and have the
/// container; a hook past its timeout is stopped by closing its stream.
pub async fn run(client: &Client, pod: &Pod, phase: HookPhase, hook: &PodHook) -> HookRun {
    let started = now();
    let clock = Instant::now();
    let outcome = match runnable(pod, &hook.container) {
        Err(reason) => Outcome::failed(reason),
        Ok(()) => match tokio::time::timeout(hook.timeout, exec(client, pod, hook)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(format!(
                "it did not end within its timeout of {}; it was stopped",
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
        succeeded: outcome.failure.is_none(),
        exit_code: outcome.exit_code,
        started: Some(started),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        message: outcome.failure,
        stdout_tail: outcome.stdout,
        stderr_tail: outcome.stderr,
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

impl Outcome {
    fn failed(reason: String) -> Self {
        Outcome {
            exit_code: None,
            failure: Some(reason),
            stdout: String::new(),
            stderr: String::new(),
        }
    }
}

async fn exec(client: &Client, pod: &Pod, hook: &PodHook) -> Outcome {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = AttachParams::default()
        .container(&hook.container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut attached = match api.exec(&pod.name_any(), &hook.command, &params).await {
        Ok(attached) => attached,
        Err(err) => return Outcome::failed(format!("cannot exec into the pod: {err}")),
    };
    let stdout = tail(attached.stdout());
    let stderr = tail(attached.stderr());
    let status = attached.take_status();
    let (stdout, stderr) = tokio::join!(stdout, stderr);
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    let (exit_code, failure) = ended(status);
    Outcome {
        exit_code,
        failure,
        stdout,
        stderr,
    }
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

/// The last [`TAIL_BYTES`] of a stream, read to its end.
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > 2 * TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
    }
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
        let kept = tail(Some(long.as_slice())).await;
        assert_eq!(kept.len(), TAIL_BYTES);
        assert!(long.ends_with(kept.as_bytes()));
        assert_eq!(tail(None::<&[u8]>).await, "");
    }
}
