//! The claim a restore puts into its target before writing anything, and what a later attempt
//! decides from it.
//!
//! A restore attempt first writes `.ferry-restore-<owner>` directly into the target, holding the
//! full snapshot ID; it appends a `finished` line once all data and metadata are in, and the
//! caller removes the claim once its own last step (the done-marker) is written. So a target
//! that is not empty tells a later attempt by the same owner what happened: an interrupted
//! restore of the same snapshot is cleared and done again, a finished one is only released, and
//! anything else is refused.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::EngineError;
use super::target::Target;

/// The start of every claim's name; the owner follows.
const CLAIM_PREFIX: &str = ".ferry-restore-";
/// The line a claim gains once the restore's data and metadata are all in place.
pub(super) const FINISHED_LINE: &str = "finished\n";
/// Entries a freshly formatted volume may hold, and which a restore leaves alone.
pub(super) const IGNORED_IN_TARGET: &[&str] = &["lost+found"];
/// The longest file name Linux accepts (`NAME_MAX`).
const MAX_NAME: usize = 255;
/// How many names a refusal lists.
const NAMES_SHOWN: usize = 5;

/// One restore's claim on its target: `.ferry-restore-<owner>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Claim {
    name: OsString,
}

impl Claim {
    /// The claim of `owner`, which must be usable as part of one file name.
    pub(super) fn new(owner: &str) -> Result<Self, String> {
        let reason = if owner.is_empty() {
            Some("it is empty")
        } else if owner.contains('/') {
            Some("it contains '/'")
        } else if owner.contains('\0') {
            Some("it contains a NUL byte")
        } else if CLAIM_PREFIX.len() + owner.len() > MAX_NAME {
            Some("it is too long for a file name")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(format!(
                "the restore owner {owner:?} cannot name a claim file: {reason}"
            )),
            None => Ok(Self {
                name: OsString::from(format!("{CLAIM_PREFIX}{owner}")),
            }),
        }
    }

    pub(super) fn name(&self) -> &OsStr {
        &self.name
    }

    /// What a fresh claim holds.
    pub(super) fn content(snapshot_id: &str) -> String {
        format!("{snapshot_id}\n")
    }
}

/// Whether a name in the target is some restore's claim.
fn is_claim(name: &OsStr) -> bool {
    name.as_bytes().starts_with(CLAIM_PREFIX.as_bytes())
}

/// What a claim file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClaimState {
    pub snapshot_id: String,
    pub finished: bool,
}

/// Reads a claim's content: the snapshot ID on the first line, then `finished` once the restore
/// is done. Anything else (a claim cut short by a crash) is unreadable.
pub(super) fn parse_claim(content: &[u8]) -> Option<ClaimState> {
    let text = std::str::from_utf8(content).ok()?;
    let (snapshot_id, rest) = text.split_once('\n')?;
    let valid_id = !snapshot_id.is_empty() && snapshot_id.bytes().all(|b| b.is_ascii_hexdigit());
    let finished = match rest {
        "" => false,
        FINISHED_LINE => true,
        _ => return None,
    };
    valid_id.then(|| ClaimState {
        snapshot_id: snapshot_id.to_owned(),
        finished,
    })
}

/// This restore's own claim, as found in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OwnClaim {
    Absent,
    Unreadable,
    Held(ClaimState),
}

/// What a restore finds in its target before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    /// Every name in the target but `lost+found` and this restore's own claim.
    pub others: Vec<OsString>,
    pub own: OwnClaim,
    /// Whether the caller's done-marker is there.
    pub done_marker: bool,
}

/// What a restore does with its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// The target is empty: claim it and restore.
    Fresh,
    /// An earlier attempt of this restore was interrupted: clear the target and restore again.
    Restart,
    /// An earlier attempt of this restore finished: only release the claim.
    Finished,
    /// The target holds something else; the reason says what.
    Refuse(String),
}

/// Decides from what the target holds, for a restore of `snapshot_id`, resuming only when
/// `resume` allows.
pub(super) fn decide(found: &Found, snapshot_id: &str, resume: bool) -> Decision {
    let state = match &found.own {
        OwnClaim::Absent if found.others.is_empty() => return Decision::Fresh,
        OwnClaim::Absent => {
            let hint = if resume {
                ""
            } else {
                "; an interrupted restore of the same snapshot can be resumed with --resume"
            };
            return Decision::Refuse(format!(
                "the directory is not empty (it holds {}); restore only into an empty directory{hint}",
                names(found.others.iter())
            ));
        }
        OwnClaim::Unreadable => None,
        OwnClaim::Held(state) => Some(state),
    };
    let other_claims: Vec<&OsString> = found.others.iter().filter(|n| is_claim(n)).collect();
    if !other_claims.is_empty() {
        return Decision::Refuse(format!(
            "another restore claims it too ({}); restore only into an empty directory",
            names(other_claims.into_iter())
        ));
    }
    if let Some(state) = state
        && state.snapshot_id != snapshot_id
    {
        return Decision::Refuse(format!(
            "it holds an interrupted restore of another snapshot, {}; restore only into an empty directory",
            state.snapshot_id
        ));
    }
    if !resume {
        return Decision::Refuse(
            "it holds an interrupted restore of this snapshot; run the restore again with --resume to finish it"
                .to_owned(),
        );
    }
    match state {
        Some(state) if state.finished || found.done_marker => Decision::Finished,
        Some(_) => Decision::Restart,
        // A claim cut short: nothing was written after it unless the directory holds more.
        None if found.others.is_empty() => Decision::Restart,
        None => Decision::Refuse(
            "its restore claim cannot be read, so what it holds is unknown; empty it and restore again"
                .to_owned(),
        ),
    }
}

/// The first few names, sorted, for a message.
fn names<'a>(names: impl Iterator<Item = &'a OsString>) -> String {
    let mut shown: Vec<String> = names.map(|n| n.to_string_lossy().into_owned()).collect();
    shown.sort();
    let more = shown.len().saturating_sub(NAMES_SHOWN);
    shown.truncate(NAMES_SHOWN);
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Looks at the target: its names, this restore's claim, and the caller's done-marker.
pub(super) fn inspect(
    target: &Target,
    claim: &Claim,
    done_marker: Option<&Path>,
) -> Result<Found, EngineError> {
    let others: Vec<OsString> = target
        .entries()?
        .into_iter()
        .filter(|name| name != claim.name() && !IGNORED_IN_TARGET.iter().any(|i| name == *i))
        .collect();
    let own = match target.read_small_file(Path::new(claim.name()))? {
        None => OwnClaim::Absent,
        Some(content) => parse_claim(&content).map_or(OwnClaim::Unreadable, OwnClaim::Held),
    };
    let done_marker =
        own != OwnClaim::Absent && done_marker.is_some_and(|marker| target.holds_file(marker));
    Ok(Found {
        others,
        own,
        done_marker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn held(snapshot_id: &str, finished: bool) -> OwnClaim {
        OwnClaim::Held(ClaimState {
            snapshot_id: snapshot_id.to_owned(),
            finished,
        })
    }

    fn found(others: &[&str], own: OwnClaim, done_marker: bool) -> Found {
        Found {
            others: others.iter().map(OsString::from).collect(),
            own,
            done_marker,
        }
    }

    #[test]
    fn claims_are_named_after_their_owner() {
        let claim = Claim::new("4f1e-pvr-uid").unwrap();
        assert_eq!(claim.name(), ".ferry-restore-4f1e-pvr-uid");
        assert!(is_claim(claim.name()));
        assert!(!is_claim(OsStr::new("ferry-restore-x")));
        let long = "a".repeat(241);
        for owner in ["", "a/b", "nul\0", long.as_str()] {
            assert!(Claim::new(owner).is_err(), "{owner:?} was accepted");
        }
        assert!(Claim::new(&"a".repeat(240)).is_ok());
    }

    #[test]
    fn claim_contents_parse_back() {
        let fresh = Claim::content(SNAPSHOT);
        assert_eq!(
            parse_claim(fresh.as_bytes()),
            Some(ClaimState {
                snapshot_id: SNAPSHOT.to_owned(),
                finished: false
            })
        );
        let finished = format!("{fresh}{FINISHED_LINE}");
        assert!(parse_claim(finished.as_bytes()).unwrap().finished);
        for torn in ["", "0123", "0123\nfin", "not hex\n", "0123\nfinished\nmore"] {
            assert_eq!(parse_claim(torn.as_bytes()), None, "{torn:?}");
        }
    }

    #[test]
    fn decisions_follow_what_the_target_holds() {
        use Decision::*;
        let cases = [
            (found(&[], OwnClaim::Absent, false), true, Fresh),
            (found(&[], OwnClaim::Absent, false), false, Fresh),
            (found(&["d0"], held(SNAPSHOT, false), false), true, Restart),
            (found(&[], held(SNAPSHOT, false), false), true, Restart),
            (found(&[], OwnClaim::Unreadable, false), true, Restart),
            (found(&["d0"], held(SNAPSHOT, true), false), true, Finished),
            (
                found(&["d0", ".velero"], held(SNAPSHOT, false), true),
                true,
                Finished,
            ),
        ];
        for (found, resume, expected) in cases {
            assert_eq!(decide(&found, SNAPSHOT, resume), expected, "{found:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let refusal = |found: Found, resume: bool| match decide(&found, SNAPSHOT, resume) {
            Decision::Refuse(reason) => reason,
            other => panic!("{found:?} was not refused: {other:?}"),
        };
        let foreign = refusal(found(&["d1", "d0"], OwnClaim::Absent, false), false);
        assert!(foreign.contains("not empty (it holds d0, d1)"), "{foreign}");
        assert!(foreign.contains("--resume"), "{foreign}");
        let resumed = refusal(found(&["d0"], OwnClaim::Absent, false), true);
        assert!(!resumed.contains("--resume"), "{resumed}");
        let unresumed = refusal(found(&["d0"], held(SNAPSHOT, false), false), false);
        assert!(unresumed.contains("run the restore again with --resume"));
        let finished_unresumed = refusal(found(&[], held(SNAPSHOT, true), true), false);
        assert!(finished_unresumed.contains("--resume"));
        let other_snapshot = refusal(found(&["d0"], held(OTHER, false), false), true);
        assert!(other_snapshot.contains(OTHER), "{other_snapshot}");
        let crowded = found(&[".ferry-restore-x", "d0"], held(SNAPSHOT, false), false);
        assert!(refusal(crowded, true).contains("another restore claims it too"));
        let unreadable = refusal(found(&["d0"], OwnClaim::Unreadable, false), true);
        assert!(unreadable.contains("cannot be read"), "{unreadable}");
    }
}
