//! Snapshots by tag, forget, prune and check, through the engine's library API, with the restic
//! CLI as the judge of the repository afterwards.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use ferry_shared::repository::{
    BackupRequest, EngineError, OpenMode, Parent, ProgressCounters, Repository, RepositoryConfig,
    RepositoryLocation, RestoreRequest,
};
use ferry_tests::restic::{restic, succeed};
use ferry_tests::tree::{assert_same_tree, make_files};

fn config(repo: &Path) -> RepositoryConfig {
    RepositoryConfig {
        location: RepositoryLocation::Local {
            path: repo.to_owned(),
        },
        password: "maintenance".to_owned(),
        cache_dir: None,
        retry_budget: std::time::Duration::ZERO,
    }
}

fn open(repo: &Path, mode: OpenMode) -> Repository {
    Repository::open(&config(repo), mode, ProgressCounters::new()).expect("open repository")
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn back_up(repo: &Path, source: &Path, tags: BTreeMap<String, String>) -> String {
    let outcome = open(repo, OpenMode::CreateIfMissing)
        .backup(&BackupRequest {
            source: source.to_owned(),
            tags,
            label: Some("shop/data".to_owned()),
            parent: Parent::None,
        })
        .expect("backup");
    outcome.snapshot_id.expect("a snapshot")
}

#[test]
fn snapshots_are_found_by_tag_forgotten_and_pruned_and_the_rest_stays_sound() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let keep_source = scratch.path().join("keep");
    let drop_source = scratch.path().join("drop");
    make_files(&keep_source, 20, 50_000, 1);
    make_files(&drop_source, 20, 50_000, 2);

    let kept = back_up(
        &repo,
        &keep_source,
        tags(&[("backup", "monday"), ("ns", "shop")]),
    );
    let dropped = back_up(
        &repo,
        &drop_source,
        tags(&[("backup", "tuesday"), ("ns", "shop")]),
    );

    let repository = open(&repo, OpenMode::Existing);
    let shop = repository.snapshots(&tags(&[("ns", "shop")])).unwrap();
    assert_eq!(
        shop.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [kept.as_str(), dropped.as_str()]
    );
    let tuesday = repository
        .snapshots(&tags(&[("backup", "tuesday")]))
        .unwrap();
    assert_eq!(tuesday.len(), 1);
    assert_eq!(tuesday[0].id, dropped);
    assert_eq!(tuesday[0].hostname, "ferry");
    assert_eq!(tuesday[0].label, "shop/data");
    assert_eq!(tuesday[0].tags["ns"], "shop");
    assert!(
        repository
            .snapshots(&tags(&[("ns", "other")]))
            .unwrap()
            .is_empty()
    );

    repository.forget(std::slice::from_ref(&dropped)).unwrap();
    let left = repository.snapshots(&BTreeMap::new()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, kept);

    let pruned = repository.prune().unwrap();
    assert!(
        pruned.bytes_removed > 0 || pruned.packs_repacked > 0,
        "{pruned:?}"
    );
    let report = repository.check(true).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");

    let password = scratch.path().join("password");
    fs::write(&password, "maintenance").unwrap();
    succeed(restic(&repo.display().to_string(), &password).args(["check", "--read-data"]));

    let target = scratch.path().join("restored");
    open(&repo, OpenMode::Existing)
        .restore(&RestoreRequest {
            snapshot: kept,
            target: target.clone(),
            ..RestoreRequest::default()
        })
        .unwrap();
    assert_same_tree(&keep_source, &target);
}

#[test]
fn forgetting_an_unknown_snapshot_fails_and_forgets_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let source = scratch.path().join("source");
    make_files(&source, 3, 1000, 3);
    let kept = back_up(&repo, &source, BTreeMap::new());
    let repository = open(&repo, OpenMode::Existing);
    let err = repository
        .forget(&[kept.clone(), "0123456789abcdef".to_owned()])
        .unwrap_err();
    assert!(matches!(err, EngineError::Forget { .. }), "{err}");
    assert_eq!(repository.snapshots(&BTreeMap::new()).unwrap()[0].id, kept);
}

#[test]
fn a_new_repository_has_one_key_of_restic_s_cost_and_restic_s_pack_size() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    // What a creation that stopped before its config left: a key and no repository.
    fs::create_dir_all(repo.join("keys")).unwrap();
    fs::write(
        repo.join("keys").join("a".repeat(64)),
        b"{\"kdf\":\"scrypt\"}",
    )
    .unwrap();
    let source = scratch.path().join("source");
    // 40 MiB that does not compress: one pack of rustic's default size would hold it all.
    make_files(&source, 40, 1 << 20, 5);
    back_up(&repo, &source, BTreeMap::new());

    let keys: Vec<_> = fs::read_dir(repo.join("keys")).unwrap().collect();
    assert_eq!(keys.len(), 1, "the leftover key is gone: {keys:?}");
    let key: serde_json::Value =
        serde_json::from_slice(&fs::read(keys[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(key["N"], 1 << 15, "{key}");

    let password = scratch.path().join("password");
    fs::write(&password, "maintenance\n").unwrap();
    let packs: Vec<u64> = walkdir::WalkDir::new(repo.join("data"))
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| entry.metadata().unwrap().len())
        .collect();
    assert!(packs.len() >= 2, "{packs:?}");
    assert!(packs.iter().all(|&size| size < 24 << 20), "{packs:?}");
    succeed(restic(&repo.to_string_lossy(), &password).args(["check", "--read-data"]));
}
