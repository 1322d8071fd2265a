//! What the agent does with a pod-volume transfer it sees, as a pure function of the transfer's
//! phase and attempts and of whether this process is running it. Nothing stays InProgress
//! forever: a transfer that was running when an agent stopped is tried again, up to the
//! attempt limit, and then failed with the reason.

use ferry_shared::crd::PodVolumePhase;

/// What the agent should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: finished, or already running here.
    Nothing,
    /// Claim it as attempt `attempt` and run it.
    Run { attempt: u32 },
    /// Give up: mark it Failed with this message.
    Fail { message: String },
}

/// The facts a decision rests on.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub phase: PodVolumePhase,
    /// Attempts recorded in status so far.
    pub attempts: u32,
    /// Whether this process is running the transfer right now.
    pub running_here: bool,
    pub max_attempts: u32,
}

pub fn decide(observed: Observed) -> Decision {
    match observed.phase {
        PodVolumePhase::Completed | PodVolumePhase::Failed => Decision::Nothing,
        _ if observed.running_here => Decision::Nothing,
        PodVolumePhase::New => Decision::Run { attempt: 1 },
        PodVolumePhase::InProgress if observed.attempts < observed.max_attempts => Decision::Run {
            attempt: observed.attempts + 1,
        },
        PodVolumePhase::InProgress => Decision::Fail {
            message: format!(
                "the transfer was interrupted {} times (the node agent stopped or the transfer \
                 stalled) and the limit is {} attempts; look at the node agent's logs, then \
                 create a new backup or restore",
                observed.attempts, observed.max_attempts
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(phase: PodVolumePhase, attempts: u32, running_here: bool) -> Observed {
        Observed {
            phase,
            attempts,
            running_here,
            max_attempts: 3,
        }
    }

    #[test]
    fn decisions_follow_phase_attempts_and_ownership() {
        use PodVolumePhase::*;
        let cases = [
            (observed(New, 0, false), Decision::Run { attempt: 1 }),
            (observed(New, 0, true), Decision::Nothing),
            (observed(InProgress, 1, true), Decision::Nothing),
            (observed(InProgress, 1, false), Decision::Run { attempt: 2 }),
            (observed(InProgress, 2, false), Decision::Run { attempt: 3 }),
            (observed(Completed, 1, false), Decision::Nothing),
            (observed(Failed, 3, false), Decision::Nothing),
        ];
        for (input, expected) in cases {
            assert_eq!(decide(input), expected, "{input:?}");
        }
    }

    #[test]
    fn a_transfer_out_of_attempts_fails_with_the_reason() {
        let Decision::Fail { message } = decide(observed(PodVolumePhase::InProgress, 3, false))
        else {
            panic!("expected a failure");
        };
        assert!(message.contains("interrupted 3 times"), "{message}");
        assert!(message.contains("limit is 3"), "{message}");
    }
}
