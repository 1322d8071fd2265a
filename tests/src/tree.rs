//! Test data: directory trees with everything a volume can hold, and an exact description of a
//! tree so that two can be compared.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use walkdir::WalkDir;

/// What a comparison looks at for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
        mtime: i64,
    },
    File {
        mode: u32,
        mtime: i64,
        content: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
    },
}

/// Every entry under `root`, by path relative to it (root itself excluded).
pub fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|entry| {
            let entry = entry.expect("walk test tree");
            let path = entry.path();
            let meta = fs::symlink_metadata(path).expect("stat test entry");
            let mode = meta.permissions().mode() & 0o7777;
            let described = if meta.file_type().is_symlink() {
                Entry::Symlink {
                    target: fs::read_link(path).expect("read link"),
                }
            } else if meta.is_dir() {
                Entry::Dir {
                    mode,
                    mtime: meta.mtime(),
                }
            } else {
                Entry::File {
                    mode,
                    mtime: meta.mtime(),
                    content: fs::read(path).expect("read test file"),
                }
            };
            (
                path.strip_prefix(root).expect("under root").to_owned(),
                described,
            )
        })
        .collect()
}

/// Panics, naming the first difference, unless the two trees hold the same entries.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let left = describe(expected);
    let right = describe(actual);
    for (path, entry) in &left {
        match right.get(path) {
            None => panic!("{} is missing from {}", path.display(), actual.display()),
            Some(other) if other != entry => panic!(
                "{} differs: expected {}, found {}",
                path.display(),
                summary(entry),
                summary(other)
            ),
            Some(_) => {}
        }
    }
    for path in right.keys() {
        assert!(
            left.contains_key(path),
            "{} is in {} but not in {}",
            path.display(),
            actual.display(),
            expected.display()
        );
    }
}

fn summary(entry: &Entry) -> String {
    match entry {
        Entry::Dir { mode, mtime } => format!("dir mode {mode:o} mtime {mtime}"),
        Entry::File {
            mode,
            mtime,
            content,
        } => format!("file mode {mode:o} mtime {mtime} {} bytes", content.len()),
        Entry::Symlink { target } => format!("symlink to {}", target.display()),
    }
}

/// A small deterministic generator, so test data needs no extra crate.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

fn set_mtime(path: &Path, seconds: u64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    let file = fs::File::options()
        .write(!path.is_dir())
        .read(path.is_dir())
        .open(path)
        .expect("open for mtime");
    file.set_modified(time).expect("set mtime");
}

/// Fills `root` with a tree that exercises every detail a restore must keep: nested
/// directories, an empty directory, empty and large files, unusual modes and mtimes, names
/// with spaces, newlines and non-UTF-8 bytes, and symlinks (relative, absolute, dangling).
pub fn make_rich_tree(root: &Path, seed: u64) {
    let mut noise = Noise::new(seed);
    fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::write(root.join("empty file"), b"").unwrap();
    fs::write(root.join("nested/deeper/deepest/leaf.txt"), b"leaf\n").unwrap();
    fs::write(root.join("big.bin"), noise.bytes(3 * 1024 * 1024 + 17)).unwrap();
    let text: String = (0..20_000)
        .map(|i| {
            format!(
                "2026-11-22T00:00:{:02}Z request {i} took {}ms\n",
                i % 60,
                i % 997
            )
        })
        .collect();
    fs::write(root.join("nested/app.log"), text).unwrap();
    for i in 0..40 {
        let len = (noise.next_u64() % 70_000) as usize;
        fs::write(
            root.join(format!("nested/deeper/file {i:02}.dat")),
            noise.bytes(len),
        )
        .unwrap();
    }
    fs::write(
        root.join(OsStr::from_bytes(b"latin1-caf\xe9.txt")),
        b"non-UTF-8 name",
    )
    .unwrap();
    fs::write(root.join("line\nbreak"), b"a newline in the name").unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("secret"), b"only mine").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("empty dir"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("nested/app.log", root.join("relative link")).unwrap();
    symlink("/etc/hostname", root.join("absolute link")).unwrap();
    symlink("does/not/exist", root.join("dangling link")).unwrap();

    // Times last, deepest first, so creating children does not move a parent's mtime.
    let mut paths: Vec<PathBuf> = WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|entry| entry.unwrap().into_path())
        .filter(|path| !fs::symlink_metadata(path).unwrap().file_type().is_symlink())
        .collect();
    paths.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for (i, path) in paths.iter().enumerate() {
        set_mtime(path, 1_600_000_000 + (i as u64) * 3_600);
    }
}

/// `count` files of `size` bytes each, spread over a few directories.
pub fn make_files(root: &Path, count: usize, size: usize, seed: u64) {
    let mut noise = Noise::new(seed);
    for i in 0..count {
        let dir = root.join(format!("d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}")), noise.bytes(size)).unwrap();
    }
}
