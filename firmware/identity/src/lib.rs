//! The node's identity: an Ed25519 key born on the device, never leaving it.
//!
//! - [`DeviceKey`]: generated on first start into the state directory
//!   (mode 0600, written atomically: a crash leaves either no key or a whole
//!   one), reused afterwards, never printed: its `Debug` is redacted and it
//!   has no accessor for the secret.
//! - [`NodeId`]: the public key in minisign's format, which is the node's
//!   id everywhere (`lockstep identity`, `--node-key`, receipts).
//! - [`minisign`]: signatures in minisign's prehashed format, verifiable by
//!   the stock `minisign -Vm FILE -P NODE_KEY`.
//! - [`SigningKey`]: keys that are not device keys (operators, certifiers,
//!   referees), in stock minisign secret key files, plain or encrypted.
//! - [`SealedIdentity`]: a device key and its first operator set, as the
//!   TPM-sealed systemd credential holds them; [`KeyProtection`] says
//!   which kind of key a node runs with.
//! - [`DeviceKey::chain_key_material`] and [`DeviceKey::sign_chain_binding`]:
//!   the node's secp256k1 chain key, derived from the device key (HKDF),
//!   and the device key's signature binding its address to the node id
//!   ([`verify_chain_binding`]).

#![forbid(unsafe_code)]

mod chain;
mod key;
pub mod minisign;
mod node_id;
mod sealed;
mod secret_key;

pub use chain::{chain_binding_message, verify_chain_binding, CHAIN_KEY_DOMAIN};
pub use key::{DeviceKey, KeyError, KEY_FILE};
pub use minisign::{Signature, SignatureError};
pub use node_id::{NodeId, NodeIdError};
pub use sealed::{
    KeyProtection, SealedIdentity, SealedIdentityError, MAX_SEALED_IDENTITY_BYTES, SEALED_FORMAT,
};
pub use secret_key::{KdfCost, SecretKeyError, SigningKey};
