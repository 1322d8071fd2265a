//! A test's scratch directory: a password file, and room for sources, targets and
//! repositories. It is removed when the test ends.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// A new scratch directory whose password file holds `password`.
    pub fn new(password: &str) -> Self {
        let dir = tempfile::tempdir().expect("make a scratch directory");
        fs::write(dir.path().join("password"), format!("{password}\n"))
            .expect("write the password file");
        Self { dir }
    }

    /// The scratch directory itself.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn password_file(&self) -> PathBuf {
        self.path("password")
    }
}
