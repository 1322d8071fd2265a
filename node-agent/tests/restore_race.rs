//! A restore never writes outside its target, even while another writer of the same volume
//! swaps the directories it just created for symlinks to a victim directory outside.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_tests::tree::{Noise, assert_same_tree, describe};
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

const PASSWORD: &str = "race";
const DIRS: usize = 40;
const FILES_PER_DIR: usize = 50;
const RUNS: usize = 6;

fn ferry(scratch: &Path, subcommand: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry-node-agent"));
    command
        .arg(subcommand)
        .arg("--repository")
        .arg(scratch.join("repo"))
        .arg("--password-file")
        .arg(scratch.join("password"));
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Many small directories at the snapshot's root, so there is much to swap and much to write.
fn back_up_many_dirs(scratch: &Path) -> (PathBuf, String) {
    let source = scratch.join("source");
    let mut noise = Noise::new(40);
    for dir in 0..DIRS {
        let dir = source.join(format!("d{dir}"));
        fs::create_dir_all(&dir).unwrap();
        for file in 0..FILES_PER_DIR {
            let len = 16 + (noise.next_u64() % 2000) as usize;
            fs::write(dir.join(format!("f{file}")), noise.bytes(len)).unwrap();
        }
    }
    let output = ferry(scratch, "backup")
        .args(["--json", "--source"])
        .arg(&source)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|event| event["snapshotId"].as_str().map(str::to_owned))
        .expect("the backup names its snapshot");
    (source, id)
}

/// Until `stop`, exchanges each restored directory with a symlink to the victim and back: for
/// a moment, `target/dN` leads outside the target. Leaves every directory in its place.
fn swap_until(stop: &AtomicBool, target: &Path, links: &Path) {
    while !stop.load(Ordering::Relaxed) {
        for dir in 0..DIRS {
            let restored = target.join(format!("d{dir}"));
            let link = links.join(format!("l{dir}"));
            let exchange = || {
                renameat2(
                    AT_FDCWD,
                    &restored,
                    AT_FDCWD,
                    &link,
                    RenameFlags::RENAME_EXCHANGE,
                )
            };
            if exchange().is_ok() {
                std::hint::spin_loop();
                exchange().expect("swap the directory back");
            }
        }
    }
}

#[test]
fn a_writer_swapping_directories_for_symlinks_never_steers_the_restore_outside() {
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    fs::write(scratch.join("password"), PASSWORD).unwrap();
    let (source, id) = back_up_many_dirs(scratch);

    let mut refused = Vec::new();
    for run in 0..RUNS {
        let sandbox = scratch.join(format!("run{run}"));
        let (target, links, victim) = (
            sandbox.join("target"),
            sandbox.join("links"),
            sandbox.join("victim"),
        );
        for dir in [&target, &links, &victim] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(victim.join("precious"), b"keep me").unwrap();
        for dir in 0..DIRS {
            symlink(&victim, links.join(format!("l{dir}"))).unwrap();
        }
        let before = describe(&victim);

        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, target, links) = (stop.clone(), target.clone(), links.clone());
            std::thread::spawn(move || swap_until(&stop, &target, &links))
        };
        let output = ferry(scratch, "restore")
            .args(["--snapshot", &id, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();

        let said = text(&output);
        assert_eq!(
            describe(&victim),
            before,
            "run {run} changed the victim: {said}"
        );
        if output.status.success() {
            assert_same_tree(&source, &target);
        } else {
            assert!(
                said.contains("another writer changed the target during the restore")
                    && said.contains("is not what this restore created"),
                "run {run} failed without naming the change: {said}"
            );
            refused.push(said);
        }
    }
    eprintln!(
        "{} of {RUNS} restores refused to go on: {:?}",
        refused.len(),
        refused.first()
    );
    assert!(
        !refused.is_empty(),
        "the swapper never caught a restore in {RUNS} runs: the test proves nothing"
    );
    // The message names the entry, relative to the target.
    assert!(
        refused.iter().any(|said| said.contains(": d")),
        "{refused:?}"
    );
}
