//! A restore never writes outside its target, whatever the snapshot holds. The snapshots here
//! are crafted through rustic_core with names no honest backup produces.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustic_backend::BackendOptions;
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    BackupOptions, ConfigOptions, Credentials, KeyOptions, ReadSource, ReadSourceEntry,
    ReadSourceOpen, Repository, RepositoryOptions, RusticResult, SnapshotOptions,
};

const PASSWORD: &str = "crafted";

/// One crafted entry: where the archiver sees it, the name stored in the tree, and its data.
struct Crafted {
    path: &'static str,
    name: &'static str,
    node_type: NodeType,
    data: &'static [u8],
}

struct Data(Vec<u8>);

impl ReadSourceOpen for Data {
    type Reader = Cursor<Vec<u8>>;

    fn open(self) -> RusticResult<Self::Reader> {
        Ok(Cursor::new(self.0))
    }
}

struct CraftedSource(Vec<Crafted>);

impl ReadSource for CraftedSource {
    type Open = Data;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Data>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        self.0
            .iter()
            .map(|entry| {
                let meta = Metadata {
                    mode: Some(0o644),
                    size: entry.data.len() as u64,
                    ..Metadata::default()
                };
                let node = Node::new_node(entry.name.as_ref(), entry.node_type.clone(), meta);
                Ok(ReadSourceEntry {
                    path: PathBuf::from("/src").join(entry.path),
                    node,
                    open: matches!(entry.node_type, NodeType::File)
                        .then(|| Data(entry.data.to_vec())),
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// Writes a snapshot holding `entries` into a new repository at `repo` and returns its ID.
fn craft_snapshot(repo: &Path, entries: Vec<Crafted>) -> String {
    let backends = BackendOptions::default()
        .repository(format!("local:{}", repo.display()))
        .to_backends()
        .unwrap();
    let repository = Repository::new(&RepositoryOptions::default().no_cache(true), &backends)
        .unwrap()
        .init(
            &Credentials::password(PASSWORD),
            &KeyOptions::default(),
            &ConfigOptions::default(),
        )
        .unwrap()
        .to_indexed_ids()
        .unwrap();
    let snapshot = SnapshotOptions::default().to_snapshot().unwrap();
    let options = BackupOptions::default().as_path(PathBuf::from("/"));
    let saved = repository
        .archive(
            &options,
            &CraftedSource(entries),
            snapshot,
            &[PathBuf::from("/src")],
        )
        .unwrap();
    saved.id.to_hex().to_string()
}

/// Restores into `<scratch>/sandbox/target` and returns the output; the sandbox must hold
/// nothing but the target afterwards.
fn restore_crafted(entries: Vec<Crafted>) -> (String, PathBuf, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let id = craft_snapshot(&repo, entries);
    fs::write(scratch.path().join("password"), PASSWORD).unwrap();
    let sandbox = scratch.path().join("sandbox");
    fs::create_dir(&sandbox).unwrap();
    let target = sandbox.join("target");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry-node-agent"))
        .args(["restore", "--snapshot", &id, "--target"])
        .arg(&target)
        .arg("--repository")
        .arg(&repo)
        .arg("--password-file")
        .arg(scratch.path().join("password"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let outside: Vec<_> = fs::read_dir(&sandbox)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "target")
        .collect();
    assert!(
        outside.is_empty(),
        "the restore wrote {outside:?} beside its target: {text}"
    );
    assert!(
        !scratch.path().join("escaped").exists() && !Path::new("/tmp/ferry-escaped").exists(),
        "the restore wrote outside its target: {text}"
    );
    assert!(
        !output.status.success(),
        "a crafted snapshot was restored: {text}"
    );
    (text, target, scratch)
}

#[test]
fn a_parent_directory_name_is_refused() {
    let (text, _, _scratch) = restore_crafted(vec![Crafted {
        path: "escaped",
        name: "..",
        node_type: NodeType::File,
        data: b"out",
    }]);
    assert!(text.contains("unsafe to restore"), "{text}");
}

#[test]
fn a_name_with_slashes_is_refused() {
    for name in ["../escaped", "/tmp/ferry-escaped"] {
        let (text, _, _scratch) = restore_crafted(vec![Crafted {
            path: "escaped",
            name,
            node_type: NodeType::File,
            data: b"out",
        }]);
        assert!(text.contains("contains a slash"), "{name}: {text}");
    }
}

#[test]
fn a_symlink_then_a_directory_of_the_same_name_is_refused() {
    // A tree that holds a link "x" to the outside and a directory "x" with a file in it would
    // write through the link if the restore trusted names to be unique.
    let (text, target, _scratch) = restore_crafted(vec![
        Crafted {
            path: "a",
            name: "x",
            node_type: NodeType::from_link(Path::new("/tmp")),
            data: b"",
        },
        Crafted {
            path: "x",
            name: "x",
            node_type: NodeType::Dir,
            data: b"",
        },
        Crafted {
            path: "x/ferry-escaped",
            name: "ferry-escaped",
            node_type: NodeType::File,
            data: b"out",
        },
    ]);
    assert!(text.contains("appears twice"), "{text}");
    assert!(!target.join("x").is_symlink());
}
