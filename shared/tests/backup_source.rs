//! Ferry reads volumes through directory handles, yet records exactly what restic's format
//! expects: the same tree, node for node, as rustic_core's own path-based source records for
//! the same data. Special files are kept as metadata, sockets with a warning. A parent whose
//! trees cannot be read costs a full read, not the backup.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use ferry_shared::repository::{
    BackupOutcome, BackupRequest, OpenMode, Parent, ProgressCounters, Repository, RepositoryConfig,
    RepositoryLocation,
};
use ferry_tests::restic::{restic, succeed};
use ferry_tests::tree::make_rich_tree;
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use rustic_backend::BackendOptions;
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{
    BackupOptions, Credentials, LsOptions, ParentOptions, PathList, Repository as RusticRepository,
    RepositoryOptions,
};

const PASSWORD: &str = "source";

fn config(repo: &Path) -> RepositoryConfig {
    RepositoryConfig {
        location: RepositoryLocation::Local {
            path: repo.to_owned(),
        },
        password: PASSWORD.to_owned(),
        cache_dir: None,
        retry_budget: std::time::Duration::ZERO,
    }
}

fn ferry_backup(repo: &Path, volume: &Path) -> BackupOutcome {
    Repository::open(
        &config(repo),
        OpenMode::CreateIfMissing,
        ProgressCounters::new(),
    )
    .expect("open the repository")
    .backup(&BackupRequest {
        source: volume.to_owned(),
        ..BackupRequest::default()
    })
    .expect("backup")
}

fn rustic_repository(repo: &Path) -> RusticRepository<rustic_core::IndexedFullStatus> {
    let backends = BackendOptions::default()
        .repository(repo.display().to_string())
        .to_backends()
        .unwrap();
    RusticRepository::new(&RepositoryOptions::default().no_cache(true), &backends)
        .unwrap()
        .open(&Credentials::password(PASSWORD))
        .unwrap()
        .to_indexed()
        .unwrap()
}

/// Backs the volume up with rustic_core's path-based source, as Ferry did before it read
/// through handles, with the same options.
fn rustic_backup(repo: &Path, volume: &Path) -> String {
    let options = BackupOptions::default()
        .as_path(PathBuf::from("/"))
        .parent_opts(ParentOptions::default().force(true).ignore_inode(true));
    let source = PathList::from_string(&volume.display().to_string()).unwrap();
    let snapshot = rustic_repository(repo)
        .backup(&options, &source, SnapshotFile::default())
        .unwrap();
    snapshot.id.to_string()
}

fn nodes(repo: &Path, snapshot: &str) -> Vec<(PathBuf, Node)> {
    let repository = rustic_repository(repo);
    let root = repository
        .node_from_snapshot_path(snapshot, |_| true)
        .unwrap();
    repository
        .ls(&root, &LsOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A volume with every kind of entry: the rich tree, a hard link, setuid and sticky modes, a
/// FIFO, a socket and, where the file system takes them, extended attributes.
fn make_volume(volume: &Path) -> UnixListener {
    make_rich_tree(volume, 7);
    fs::hard_link(volume.join("secret"), volume.join("secret twin")).unwrap();
    let setuid = volume.join("setuid");
    fs::write(&setuid, b"s").unwrap();
    fs::set_permissions(
        &setuid,
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    fs::create_dir(volume.join("sticky")).unwrap();
    fs::set_permissions(
        volume.join("sticky"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    mkfifo(&volume.join("pipe"), Mode::from_bits_truncate(0o640)).unwrap();
    let _ = xattr::set(volume.join("nested/app.log"), "user.ferry", b"kept");
    UnixListener::bind(volume.join("app.sock")).unwrap()
}

#[test]
fn the_handle_walk_records_the_same_tree_as_a_path_walk() {
    let scratch = tempfile::tempdir().unwrap();
    let volume = scratch.path().join("volume");
    fs::create_dir_all(&volume).unwrap();
    let _socket = make_volume(&volume);
    let repo = scratch.path().join("repo");

    let outcome = ferry_backup(&repo, &volume);
    let ferry = outcome.snapshot_id.clone().expect("a snapshot");
    let reference = rustic_backup(&repo, &volume);

    assert_eq!(nodes(&repo, &ferry), nodes(&repo, &reference));
    let warning = outcome
        .warnings
        .iter()
        .find(|warning| warning.contains("socket"))
        .unwrap_or_else(|| panic!("no warning names the socket: {:?}", outcome.warnings));
    assert!(warning.contains("app.sock"), "{warning}");
    assert_eq!(outcome.unreadable, 0, "{:?}", outcome.warnings);

    let password_file = scratch.path().join("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let listing =
        succeed(restic(&repo.display().to_string(), &password_file).args(["ls", "--long", &ferry]));
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in ["/pipe", "/app.sock", "/secret twin", "/relative link"] {
        assert!(
            listing.contains(name),
            "restic does not list {name}:\n{listing}"
        );
    }
}

#[test]
fn a_volume_that_is_a_symlink_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let real = scratch.path().join("real");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("data"), b"d").unwrap();
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = Repository::open(
        &config(&scratch.path().join("repo")),
        OpenMode::CreateIfMissing,
        ProgressCounters::new(),
    )
    .unwrap()
    .backup(&BackupRequest {
        source: link,
        ..BackupRequest::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("symbolic link"), "{err}");
}

#[test]
fn a_damaged_parent_tree_costs_a_full_read_and_a_warning_not_the_backup() {
    let scratch = tempfile::tempdir().unwrap();
    let volume = scratch.path().join("volume");
    make_rich_tree(&volume, 3);
    let repo = scratch.path().join("repo");
    let first = ferry_backup(&repo, &volume)
        .snapshot_id
        .expect("a snapshot");

    // A byte of the root tree, as stored in its pack, flips.
    let rustic = rustic_repository(&repo);
    let snapshot = rustic.get_snapshot_from_str(&first, |_| true).unwrap();
    let entry = rustic.get_index_entry(&snapshot.tree).unwrap();
    let pack_name = entry.pack.to_hex().to_string();
    let pack = repo.join("data").join(&pack_name[..2]).join(&pack_name);
    let mut bytes = fs::read(&pack).unwrap();
    bytes[entry.location.offset as usize + 20] ^= 0xff;
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&pack, bytes).unwrap();

    let second = Repository::open(&config(&repo), OpenMode::Existing, ProgressCounters::new())
        .unwrap()
        .backup(&BackupRequest {
            source: volume.clone(),
            parent: Parent::Snapshot(first),
            ..BackupRequest::default()
        })
        .expect("the backup goes on without the parent's tree");
    assert_eq!(second.files_unmodified, 0, "{second:?}");
    assert_eq!(second.files_new, second.files, "{second:?}");
    assert_eq!(
        second.data_blobs, 0,
        "the data is still deduplicated: {second:?}"
    );
    assert!(
        second
            .warnings
            .iter()
            .any(|warning| warning.contains("trees of the parent snapshot could not be read")),
        "{:?}",
        second.warnings
    );

    // The root tree was stored again, so the new snapshot reads whole.
    let password_file = scratch.path().join("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let id = second.snapshot_id.expect("a snapshot");
    let target = scratch.path().join("restored");
    succeed(
        restic(&repo.display().to_string(), &password_file)
            .args(["restore", &id, "--target"])
            .arg(&target),
    );
    ferry_tests::tree::assert_same_tree(&volume, &target);
}
