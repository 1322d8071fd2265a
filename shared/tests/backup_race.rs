//! A pod that changes its volume while the agent backs it up can never steer the backup outside
//! the volume: a swapper exchanges files and directories with symlinks to a secret outside, and
//! files with FIFOs, as fast as it can, during several backups. No snapshot may hold the secret,
//! no backup may hang, and the restic CLI must restore every snapshot.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ferry_shared::repository::{
    BackupRequest, OpenMode, ProgressCounters, Repository, RepositoryConfig, RepositoryLocation,
};
use ferry_tests::restic::{restic, succeed};
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;

const SECRET: &[u8] = b"TOP-SECRET-BYTES-OUTSIDE-THE-VOLUME";
const PASSWORD: &str = "race";
const FILES: usize = 60;
const DIRS: usize = 20;
const BACKUPS: usize = 6;
/// Far longer than a backup of this small volume takes; past it, the backup hangs.
const HANG: Duration = Duration::from_secs(300);

/// The volume: plain files, directories of files, and the spare names the swapper uses.
fn make_volume(volume: &Path) {
    for i in 0..FILES {
        fs::write(
            volume.join(format!("f{i}")),
            format!("file {i} ").repeat(200),
        )
        .unwrap();
    }
    for i in 0..DIRS {
        let dir = volume.join(format!("d{i}"));
        fs::create_dir_all(&dir).unwrap();
        for j in 0..5 {
            fs::write(dir.join(format!("g{j}")), format!("dir {i} file {j}")).unwrap();
        }
    }
}

/// The outside: a secret file and a directory of secrets, which root can read.
fn make_outside(outside: &Path) -> (PathBuf, PathBuf) {
    let file = outside.join("secret");
    fs::write(&file, SECRET.repeat(100)).unwrap();
    let dir = outside.join("secrets");
    fs::create_dir_all(&dir).unwrap();
    for j in 0..5 {
        fs::write(dir.join(format!("g{j}")), SECRET).unwrap();
    }
    (file, dir)
}

fn exchange(volume: &Path, a: &str, b: &str) {
    // Either name may be missing for a moment while an earlier exchange is undone; that
    // failure is part of the race, not of the test.
    let _ = renameat2(
        AT_FDCWD,
        &volume.join(a),
        AT_FDCWD,
        &volume.join(b),
        RenameFlags::RENAME_EXCHANGE,
    );
}

/// Swaps entries with symlinks and FIFOs until told to stop; returns how many swaps it made.
fn swapper(
    volume: PathBuf,
    secret_file: PathBuf,
    secret_dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> u64 {
    for i in 0..FILES {
        std::os::unix::fs::symlink(&secret_file, volume.join(format!("f{i}.link"))).unwrap();
    }
    for i in 0..DIRS {
        std::os::unix::fs::symlink(&secret_dir, volume.join(format!("d{i}.link"))).unwrap();
    }
    for i in 0..FILES / 2 {
        mkfifo(
            &volume.join(format!("f{i}.fifo")),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    let swaps = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        for i in 0..FILES {
            let (file, link) = (format!("f{i}"), format!("f{i}.link"));
            exchange(&volume, &file, &link);
            exchange(&volume, &file, &link);
            if i < FILES / 2 {
                let fifo = format!("f{i}.fifo");
                exchange(&volume, &file, &fifo);
                exchange(&volume, &file, &fifo);
            }
        }
        for i in 0..DIRS {
            let (dir, link) = (format!("d{i}"), format!("d{i}.link"));
            exchange(&volume, &dir, &link);
            exchange(&volume, &dir, &link);
        }
        swaps.fetch_add(1, Ordering::Relaxed);
    }
    swaps.into_inner()
}

fn back_up(config: RepositoryConfig, volume: PathBuf) -> Option<String> {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = Repository::open(&config, OpenMode::CreateIfMissing, ProgressCounters::new())
            .expect("open the repository")
            .backup(&BackupRequest {
                source: volume,
                ..BackupRequest::default()
            });
        let _ = done.send(outcome);
    });
    let outcome = finished
        .recv_timeout(HANG)
        .expect("a backup hung while the volume changed under it")
        .expect("the backup itself must succeed; changed entries are only left out");
    outcome.snapshot_id
}

/// Every file restic restores from the snapshot; none may hold the secret.
fn assert_no_secret(restored: &Path) {
    for entry in walkdir::WalkDir::new(restored) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let content = fs::read(entry.path()).unwrap();
            assert!(
                !content.windows(SECRET.len()).any(|window| window == SECRET),
                "{} in the snapshot holds bytes from outside the volume",
                entry.path().display()
            );
        }
    }
}

#[test]
fn a_volume_changing_under_the_backup_never_leaks_outside_data_nor_hangs() {
    let scratch = tempfile::tempdir().unwrap();
    let volume = scratch.path().join("volume");
    let outside = scratch.path().join("outside");
    fs::create_dir_all(&volume).unwrap();
    fs::create_dir_all(&outside).unwrap();
    make_volume(&volume);
    let (secret_file, secret_dir) = make_outside(&outside);
    let repo = scratch.path().join("repo");
    let password_file = scratch.path().join("password");
    fs::write(&password_file, PASSWORD).unwrap();
    let config = RepositoryConfig {
        location: RepositoryLocation::Local { path: repo.clone() },
        password: PASSWORD.to_owned(),
        cache_dir: None,
        retry_budget: std::time::Duration::ZERO,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let swapping = {
        let (volume, stop) = (volume.clone(), stop.clone());
        std::thread::spawn(move || swapper(volume, secret_file, secret_dir, stop))
    };
    let snapshots: Vec<String> = (0..BACKUPS)
        .filter_map(|_| back_up(config.clone(), volume.clone()))
        .collect();
    stop.store(true, Ordering::Relaxed);
    let swaps = swapping.join().expect("the swapper");
    assert!(swaps > 0, "the swapper never ran during the backups");
    assert_eq!(snapshots.len(), BACKUPS, "every backup saves a snapshot");

    let repository = repo.display().to_string();
    for (index, snapshot) in snapshots.iter().enumerate() {
        let restored = scratch.path().join(format!("restored-{index}"));
        succeed(
            restic(&repository, &password_file)
                .args(["restore", snapshot, "--target"])
                .arg(&restored),
        );
        assert_no_secret(&restored);
    }
    succeed(restic(&repository, &password_file).args(["check", "--read-data"]));
}
