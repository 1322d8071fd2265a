//! Creating a repository, and its key file. rustic writes keys with scrypt at N=2^17, which
//! costs 128 MiB and about 0.4 s on every open: that would dominate the memory of a transfer
//! process. Ferry writes the key itself at N=2^15 (32 MiB), within what restic's own
//! calibration picks, in restic's key-file format so that restic opens it too.

use std::sync::Arc;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::generic_array::GenericArray;
use bytesize::ByteSize;
use rustic_core::repofile::{KeyFile, MasterKey};
use rustic_core::{
    ConfigOptions, Credentials, FileType, Id, KeyOptions, OpenStatus,
    Repository as RusticRepository, WriteBackend,
};
use sha2::{Digest, Sha256};

/// scrypt's cost: N = 2^15, r = 8, p = 1.
const LOG_N: u8 = 15;
const R: u32 = 8;
const P: u32 = 1;

/// The data pack size of repositories Ferry creates: restic's. rustic's default, 32 MiB and
/// growing with the repository, keeps two or three packs of twice that size in a backup's
/// memory.
const DATA_PACK_SIZE: ByteSize = ByteSize::mib(16);

/// Creates the repository `repo` points at, with a new master key that `password` unlocks.
/// The key is written before the config, whose presence makes the repository: keys found
/// without a config are what an earlier creation left when it stopped, and are removed first,
/// as the password would open them to a master key nothing uses.
pub(crate) fn create(
    repo: RusticRepository<()>,
    backend: &Arc<dyn WriteBackend>,
    password: &str,
) -> Result<RusticRepository<OpenStatus>, String> {
    let describe = |err: Box<rustic_core::RusticError>| super::error::describe(&err);
    backend.create().map_err(describe)?;
    for leftover in backend.list(FileType::Key).map_err(describe)? {
        backend
            .remove(FileType::Key, &leftover, false)
            .map_err(describe)?;
    }
    let master = MasterKey::new();
    write_key(backend, &master, password)?;
    let config = ConfigOptions::default()
        .set_datapack_size(DATA_PACK_SIZE)
        .set_datapack_growfactor(0);
    repo.init(
        &Credentials::Masterkey(master),
        &KeyOptions::default(),
        &config,
    )
    .map_err(describe)
}

/// Writes a key for `password` that unlocks `master`.
fn write_key(
    backend: &Arc<dyn WriteBackend>,
    master: &MasterKey,
    password: &str,
) -> Result<(), String> {
    let mut salt = vec![0u8; 64];
    getrandom::fill(&mut salt).map_err(|err| format!("no randomness: {err}"))?;
    let params = scrypt::Params::new(LOG_N, R, P).map_err(|err| err.to_string())?;
    let mut derived = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut derived)
        .map_err(|err| err.to_string())?;

    let master = serde_json::to_vec(master).map_err(|err| err.to_string())?;
    let data = super::crypto::seal(
        &Aes256CtrPoly1305Aes::new(GenericArray::from_slice(&derived)),
        &master,
    )?;

    let key_file = KeyFile {
        hostname: Some(crate::names::SNAPSHOT_HOST.to_owned()),
        username: None,
        created: Some(rustic_core::jiff::Zoned::now()),
        kdf: "scrypt".to_owned(),
        n: 1 << LOG_N,
        r: R,
        p: P,
        data,
        salt,
    };
    let bytes = serde_json::to_vec(&key_file).map_err(|err| err.to_string())?;
    let id: Id = hex::encode(Sha256::digest(&bytes))
        .parse()
        .map_err(|err: Box<rustic_core::RusticError>| err.to_string())?;
    backend
        .write_bytes(FileType::Key, &id, false, bytes.into())
        .map_err(|err| super::error::describe(&err))
}
