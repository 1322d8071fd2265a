//! The repository's encryption, as restic defines it: AES-256 in counter mode with a
//! Poly1305-AES tag, each sealed item stored as `nonce (16) || ciphertext || tag (16)`.

use std::borrow::Cow;
use std::num::NonZeroU32;

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use aes256ctr_poly1305aes::aead::AeadInPlace;
use aes256ctr_poly1305aes::aead::generic_array::GenericArray;
use rustic_core::Id;
use rustic_core::repofile::MasterKey;

/// Bytes a sealed item adds to its plaintext: the nonce and the tag.
pub(super) const OVERHEAD: usize = 32;

/// The cipher of a repository's master key.
pub(super) fn cipher(key: &MasterKey) -> Aes256CtrPoly1305Aes {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&key.encrypt);
    bytes[32..48].copy_from_slice(&key.mac.k);
    bytes[48..].copy_from_slice(&key.mac.r);
    Aes256CtrPoly1305Aes::new(GenericArray::from_slice(&bytes))
}

/// Encrypts `plain` under a fresh random nonce.
pub(super) fn seal(cipher: &Aes256CtrPoly1305Aes, plain: &[u8]) -> Result<Vec<u8>, String> {
    let mut sealed = Vec::with_capacity(plain.len() + OVERHEAD);
    sealed.resize(16, 0);
    getrandom::fill(&mut sealed).map_err(|err| format!("no randomness for a nonce: {err}"))?;
    sealed.extend_from_slice(plain);
    let (nonce, body) = sealed.split_at_mut(16);
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(nonce), &[], body)
        .map_err(|_| "the data is too long to encrypt".to_owned())?;
    sealed.extend_from_slice(&tag);
    Ok(sealed)
}

/// Checks the tag of a sealed item and decrypts it in place; returns the plaintext's part of
/// `raw`. `what` names the item in errors.
pub(super) fn open<'a>(
    cipher: &Aes256CtrPoly1305Aes,
    raw: &'a mut [u8],
    what: &dyn std::fmt::Display,
) -> Result<&'a mut [u8], String> {
    if raw.len() < OVERHEAD {
        return Err(format!("{what} is too short to be encrypted data"));
    }
    let (nonce, rest) = raw.split_at_mut(16);
    let split = rest.len() - 16;
    let (ciphertext, tag) = rest.split_at_mut(split);
    cipher
        .decrypt_in_place_detached(
            GenericArray::from_slice(nonce),
            &[],
            ciphertext,
            GenericArray::from_slice(tag),
        )
        .map_err(|_| format!("{what} fails its authentication check: it is damaged"))?;
    Ok(ciphertext)
}

/// Decrypts (in place), decompresses and verifies one blob as stored in a pack, and returns
/// its plaintext: borrowed from `raw` when the blob is not compressed.
pub(super) fn decode_blob<'a>(
    cipher: &Aes256CtrPoly1305Aes,
    raw: &'a mut [u8],
    uncompressed: Option<NonZeroU32>,
    id: &Id,
) -> Result<Cow<'a, [u8]>, String> {
    let ciphertext = open(cipher, raw, &format_args!("blob {id}"))?;
    let plain = match uncompressed {
        Some(length) => {
            let length = length.get() as usize;
            let plain = zstd::bulk::decompress(ciphertext, length)
                .map_err(|err| format!("blob {id} cannot be decompressed: {err}"))?;
            if plain.len() != length {
                return Err(format!(
                    "blob {id} decompressed to {} bytes instead of {length}",
                    plain.len()
                ));
            }
            Cow::Owned(plain)
        }
        None => Cow::Borrowed(&*ciphertext),
    };
    if !id.blob_matches_reader(plain.len() as u64, &mut &*plain) {
        return Err(format!(
            "blob {id} does not match its hash: the pack is damaged"
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_item_opens_to_its_plaintext_and_a_changed_byte_is_caught() {
        let cipher = cipher(&MasterKey::new());
        let mut sealed = seal(&cipher, b"a tree of nodes").expect("seal");
        assert_eq!(sealed.len(), 15 + OVERHEAD);
        let mut copy = sealed.clone();
        assert_eq!(
            open(&cipher, &mut sealed, &"item").expect("open"),
            b"a tree of nodes"
        );
        copy[20] ^= 1;
        assert!(open(&cipher, &mut copy, &"item").is_err());
    }
}
