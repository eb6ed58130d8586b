//! The streaming check of one slot artifact against the signed metadata:
//! a byte count and a running SHA-256, nothing kept of the data.

use sha2::{Digest, Sha256};

use crate::{Artifact, Slot, UpdateError};

/// Checks one artifact as it streams in: [`update`](Self::update) refuses
/// the first chunk that goes past the announced length (so a node never
/// writes more than the signed size: no endless data), and
/// [`finish`](Self::finish) requires the exact length and SHA-256. Its
/// memory is constant, whatever the input.
#[derive(Debug, Clone)]
pub struct ArtifactCheck {
    what: &'static str,
    expected_sha256: String,
    announced: u64,
    received: u64,
    /// Set once a chunk went past the announced length; the check then
    /// never succeeds.
    overrun: Option<u64>,
    hasher: Sha256,
}

impl ArtifactCheck {
    /// A check of bytes against `expected` (errors call it "artifact").
    pub fn new(expected: &Artifact) -> ArtifactCheck {
        ArtifactCheck::named("artifact", expected)
    }

    /// A check whose errors name the slot part.
    pub fn for_slot(slot: Slot, expected: &Artifact) -> ArtifactCheck {
        ArtifactCheck::named(slot.name(), expected)
    }

    fn named(what: &'static str, expected: &Artifact) -> ArtifactCheck {
        ArtifactCheck {
            what,
            expected_sha256: expected.sha256.clone(),
            announced: expected.bytes,
            received: 0,
            overrun: None,
            hasher: Sha256::new(),
        }
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The announced length.
    pub fn announced(&self) -> u64 {
        self.announced
    }

    /// Takes the next chunk. Refuses (and stays refused) as soon as the
    /// bytes so far exceed the announced length; the refused chunk is not
    /// counted or hashed, so the caller must not keep it either.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), UpdateError> {
        if let Some(at_least) = self.overrun {
            return Err(self.overlong(at_least));
        }
        let total = self.received.saturating_add(chunk.len() as u64);
        if total > self.announced {
            self.overrun = Some(total);
            return Err(self.overlong(total));
        }
        self.hasher.update(chunk);
        self.received = total;
        Ok(())
    }

    /// Ends the artifact: exactly the announced length, and its SHA-256.
    pub fn finish(self) -> Result<(), UpdateError> {
        if let Some(at_least) = self.overrun {
            return Err(self.overlong(at_least));
        }
        if self.received != self.announced {
            return Err(UpdateError::ArtifactShort {
                what: self.what,
                announced: self.announced,
                received: self.received,
            });
        }
        let actual = hex::encode(self.hasher.finalize());
        if actual != self.expected_sha256 {
            return Err(UpdateError::ArtifactHash {
                what: self.what,
                expected: self.expected_sha256,
                actual,
            });
        }
        Ok(())
    }

    fn overlong(&self, received: u64) -> UpdateError {
        UpdateError::ArtifactOverlong {
            what: self.what,
            announced: self.announced,
            received,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &[u8] = b"a squashfs root, or any other slot artifact";

    fn check_chunks(expected: &Artifact, data: &[u8], chunk: usize) -> Result<(), UpdateError> {
        let mut check = ArtifactCheck::new(expected);
        for c in data.chunks(chunk.max(1)) {
            check.update(c)?;
        }
        check.finish()
    }

    #[test]
    fn the_announced_bytes_pass_in_any_chunking() {
        let expected = Artifact::of(DATA);
        for chunk in 1..=DATA.len() + 1 {
            check_chunks(&expected, DATA, chunk).unwrap();
        }
        // Empty chunks change nothing.
        let mut check = ArtifactCheck::for_slot(Slot::Root, &expected);
        check.update(&[]).unwrap();
        check.update(DATA).unwrap();
        check.update(&[]).unwrap();
        assert_eq!(check.received(), DATA.len() as u64);
        check.finish().unwrap();
    }

    #[test]
    fn too_many_bytes_are_refused_at_the_chunk_that_overruns() {
        let expected = Artifact::of(DATA);
        let mut check = ArtifactCheck::for_slot(Slot::Uki, &expected);
        check.update(DATA).unwrap();
        let err = check.update(b"x").unwrap_err();
        assert_eq!(
            err,
            UpdateError::ArtifactOverlong {
                what: "uki",
                announced: DATA.len() as u64,
                received: DATA.len() as u64 + 1,
            }
        );
        // It stays refused, even if the caller carries on.
        assert!(check.update(&[]).is_err());
        assert!(matches!(
            check.finish(),
            Err(UpdateError::ArtifactOverlong { .. })
        ));
        // One oversized first chunk, too.
        let mut check = ArtifactCheck::new(&expected);
        let mut long = DATA.to_vec();
        long.push(0);
        assert!(check.update(&long).is_err());
        assert_eq!(check.received(), 0);
    }

    #[test]
    fn too_few_bytes_are_refused_at_finish() {
        let expected = Artifact::of(DATA);
        for len in 0..DATA.len() {
            let mut check = ArtifactCheck::new(&expected);
            check.update(&DATA[..len]).unwrap();
            assert_eq!(
                check.finish(),
                Err(UpdateError::ArtifactShort {
                    what: "artifact",
                    announced: DATA.len() as u64,
                    received: len as u64,
                })
            );
        }
    }

    #[test]
    fn wrong_bytes_of_the_right_length_are_refused() {
        let expected = Artifact::of(DATA);
        for i in 0..DATA.len() {
            let mut data = DATA.to_vec();
            data[i] ^= 1;
            assert!(matches!(
                check_chunks(&expected, &data, 7),
                Err(UpdateError::ArtifactHash {
                    what: "artifact",
                    ..
                })
            ));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_of_any_bytes_agrees_with_a_whole_hash(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            chunk in 1usize..64,
        ) {
            let expected = Artifact::of(&data);
            proptest::prop_assert!(check_chunks(&expected, &data, chunk).is_ok());
        }
    }
}
