//! The key file of a repository Ferry creates. rustic writes keys with scrypt at N=2^17, which
//! costs 128 MiB and about 0.4 s on every open: that would dominate the memory of a transfer
//! process. Ferry replaces the first key with one at N=2^15 (32 MiB), within what restic's own
//! calibration picks, in restic's key-file format so that restic opens it too.

use std::sync::Arc;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::AeadInPlace;
use aes256ctr_poly1305aes::aead::generic_array::GenericArray;
use rustic_core::repofile::{KeyFile, MasterKey};
use rustic_core::{FileType, Id, WriteBackend};
use sha2::{Digest, Sha256};

/// scrypt's cost: N = 2^15, r = 8, p = 1.
const LOG_N: u8 = 15;
const R: u32 = 8;
const P: u32 = 1;

/// Writes a key for `password` that unlocks `master`, and removes `replaced`.
pub(crate) fn replace_key(
    backend: &Arc<dyn WriteBackend>,
    master: &MasterKey,
    password: &str,
    replaced: Option<&Id>,
) -> Result<(), String> {
    let mut salt = vec![0u8; 64];
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|err| format!("no randomness: {err}"))?;
    getrandom::fill(&mut nonce).map_err(|err| format!("no randomness: {err}"))?;
    let params = scrypt::Params::new(LOG_N, R, P).map_err(|err| err.to_string())?;
    let mut derived = [0u8; 64];
    scrypt::scrypt(password.as_bytes(), &salt, &params, &mut derived)
        .map_err(|err| err.to_string())?;

    let mut sealed = serde_json::to_vec(master).map_err(|err| err.to_string())?;
    let tag = Aes256CtrPoly1305Aes::new(GenericArray::from_slice(&derived))
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), &[], &mut sealed)
        .map_err(|_| "cannot encrypt the master key".to_owned())?;
    let mut data = nonce.to_vec();
    data.extend_from_slice(&sealed);
    data.extend_from_slice(&tag);

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
        .map_err(|err| super::error::describe(&err))?;
    if let Some(old) = replaced {
        backend
            .remove(FileType::Key, old, false)
            .map_err(|err| super::error::describe(&err))?;
    }
    Ok(())
}
