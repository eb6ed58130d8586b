//! RLP and signed EIP-1559 (type 2) transactions.

use crate::address::{keccak256, Address};
use crate::key::ChainKey;

/// The EIP-2718 type byte of an EIP-1559 transaction.
pub const EIP1559_TX_TYPE: u8 = 0x02;

/// One RLP item: a byte string or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rlp {
    Bytes(Vec<u8>),
    List(Vec<Rlp>),
}

impl Rlp {
    /// An unsigned integer: minimal big-endian, zero is the empty string.
    pub fn uint(value: u128) -> Rlp {
        Rlp::Bytes(minimal_be(&value.to_be_bytes()))
    }

    /// A 256-bit unsigned integer given big-endian (signature r and s).
    pub fn uint256(value: &[u8; 32]) -> Rlp {
        Rlp::Bytes(minimal_be(value))
    }

    /// The encoding of this item.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Rlp::Bytes(bytes) => {
                if bytes.len() == 1 && bytes[0] < 0x80 {
                    out.push(bytes[0]);
                } else {
                    encode_length(out, bytes.len(), 0x80);
                    out.extend_from_slice(bytes);
                }
            }
            Rlp::List(items) => {
                let mut payload = Vec::new();
                for item in items {
                    item.encode_into(&mut payload);
                }
                encode_length(out, payload.len(), 0xc0);
                out.extend_from_slice(&payload);
            }
        }
    }

    /// Decodes exactly one item filling `data` (strict: minimal lengths
    /// and single bytes, nesting bounded by [`MAX_RLP_DEPTH`]).
    pub fn decode(data: &[u8]) -> Result<Rlp, RlpError> {
        let (item, rest) = decode_item(data, 0)?;
        if !rest.is_empty() {
            return Err(RlpError::Trailing);
        }
        Ok(item)
    }
}

/// Deepest list nesting [`Rlp::decode`] follows (a transaction has 3).
pub const MAX_RLP_DEPTH: usize = 16;

/// Why bytes are not canonical RLP (a malformed transaction).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RlpError {
    #[error("the RLP data ends inside an item: it is truncated")]
    Truncated,
    #[error("the RLP data is not canonical (a length or single byte is not in its shortest form)")]
    NotCanonical,
    #[error("the RLP data has bytes after its item")]
    Trailing,
    #[error("the RLP data nests lists deeper than {MAX_RLP_DEPTH}")]
    TooDeep,
}

fn minimal_be(bytes: &[u8]) -> Vec<u8> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

fn encode_length(out: &mut Vec<u8>, len: usize, offset: u8) {
    if len <= 55 {
        out.push(offset + len as u8);
    } else {
        let len_bytes = minimal_be(&(len as u64).to_be_bytes());
        out.push(offset + 55 + len_bytes.len() as u8);
        out.extend_from_slice(&len_bytes);
    }
}

fn decode_item(data: &[u8], depth: usize) -> Result<(Rlp, &[u8]), RlpError> {
    if depth > MAX_RLP_DEPTH {
        return Err(RlpError::TooDeep);
    }
    let (&tag, rest) = data.split_first().ok_or(RlpError::Truncated)?;
    let (is_list, len, rest) = match tag {
        0x00..=0x7f => return Ok((Rlp::Bytes(vec![tag]), rest)),
        0x80..=0xb7 => (false, usize::from(tag - 0x80), rest),
        0xb8..=0xbf => {
            let (len, rest) = long_length(rest, usize::from(tag - 0xb7))?;
            (false, len, rest)
        }
        0xc0..=0xf7 => (true, usize::from(tag - 0xc0), rest),
        0xf8..=0xff => {
            let (len, rest) = long_length(rest, usize::from(tag - 0xf7))?;
            (true, len, rest)
        }
    };
    let payload = rest.get(..len).ok_or(RlpError::Truncated)?;
    let rest = &rest[len..];
    if is_list {
        let mut items = Vec::new();
        let mut inner = payload;
        while !inner.is_empty() {
            let (item, after) = decode_item(inner, depth + 1)?;
            items.push(item);
            inner = after;
        }
        Ok((Rlp::List(items), rest))
    } else {
        if len == 1 && payload[0] < 0x80 {
            return Err(RlpError::NotCanonical);
        }
        Ok((Rlp::Bytes(payload.to_vec()), rest))
    }
}

fn long_length(data: &[u8], len_of_len: usize) -> Result<(usize, &[u8]), RlpError> {
    let bytes = data.get(..len_of_len).ok_or(RlpError::Truncated)?;
    if bytes[0] == 0 {
        return Err(RlpError::NotCanonical);
    }
    let mut len: usize = 0;
    for &b in bytes {
        len = len
            .checked_mul(256)
            .and_then(|l| l.checked_add(usize::from(b)))
            .ok_or(RlpError::Truncated)?;
    }
    if len <= 55 {
        return Err(RlpError::NotCanonical);
    }
    Ok((len, &data[len_of_len..]))
}

/// An EIP-1559 transaction with an empty access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eip1559Tx {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_priority_fee_per_gas: u128,
    pub max_fee_per_gas: u128,
    pub gas_limit: u64,
    /// `None` creates a contract from `data`.
    pub to: Option<Address>,
    pub value: u128,
    pub data: Vec<u8>,
}

impl Eip1559Tx {
    fn fields(&self) -> Vec<Rlp> {
        vec![
            Rlp::uint(self.chain_id.into()),
            Rlp::uint(self.nonce.into()),
            Rlp::uint(self.max_priority_fee_per_gas),
            Rlp::uint(self.max_fee_per_gas),
            Rlp::uint(self.gas_limit.into()),
            Rlp::Bytes(self.to.map(|a| a.0.to_vec()).unwrap_or_default()),
            Rlp::uint(self.value),
            Rlp::Bytes(self.data.clone()),
            Rlp::List(Vec::new()),
        ]
    }

    /// The hash the sender signs: `keccak(0x02 || rlp([chain_id, nonce,
    /// max_priority_fee_per_gas, max_fee_per_gas, gas_limit, to, value,
    /// data, access_list]))`.
    pub fn signing_hash(&self) -> [u8; 32] {
        let mut payload = vec![EIP1559_TX_TYPE];
        payload.extend_from_slice(&Rlp::List(self.fields()).encode());
        keccak256(&payload)
    }

    /// The raw signed transaction for `eth_sendRawTransaction`:
    /// `0x02 || rlp([..., y_parity, r, s])`. Its keccak is the
    /// transaction hash.
    pub fn sign(&self, key: &ChainKey) -> Vec<u8> {
        let signature = key.sign_digest(&self.signing_hash());
        let mut fields = self.fields();
        fields.push(Rlp::uint(u128::from(signature.v() - 27)));
        fields.push(Rlp::uint256(&signature.r()));
        fields.push(Rlp::uint256(&signature.s()));
        let mut raw = vec![EIP1559_TX_TYPE];
        raw.extend_from_slice(&Rlp::List(fields).encode());
        raw
    }
}

/// The transaction hash of a raw signed transaction.
pub fn tx_hash(raw: &[u8]) -> [u8; 32] {
    keccak256(raw)
}

/// The address of the contract `sender` creates with its `nonce`-th
/// transaction: `keccak(rlp([sender, nonce]))[12..]`.
pub fn create_address(sender: &Address, nonce: u64) -> Address {
    let encoded = Rlp::List(vec![Rlp::Bytes(sender.0.to_vec()), Rlp::uint(nonce.into())]).encode();
    let hash = keccak256(&encoded);
    Address(hash[12..].try_into().expect("20 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{recover, Signature65};
    use proptest::prelude::*;

    #[test]
    fn rlp_examples_from_the_yellow_paper_wiki() {
        assert_eq!(Rlp::Bytes(b"dog".to_vec()).encode(), b"\x83dog");
        assert_eq!(
            Rlp::List(vec![
                Rlp::Bytes(b"cat".to_vec()),
                Rlp::Bytes(b"dog".to_vec())
            ])
            .encode(),
            b"\xc8\x83cat\x83dog"
        );
        assert_eq!(Rlp::Bytes(vec![]).encode(), [0x80]);
        assert_eq!(Rlp::List(vec![]).encode(), [0xc0]);
        assert_eq!(Rlp::uint(0).encode(), [0x80]);
        assert_eq!(Rlp::uint(15).encode(), [0x0f]);
        assert_eq!(Rlp::uint(1024).encode(), [0x82, 0x04, 0x00]);
        let lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".to_vec();
        let mut expected = vec![0xb8, 0x38];
        expected.extend_from_slice(&lorem);
        assert_eq!(Rlp::Bytes(lorem).encode(), expected);
        // [ [], [[]], [ [], [[]] ] ]
        let e = || Rlp::List(vec![]);
        let set = Rlp::List(vec![
            e(),
            Rlp::List(vec![e()]),
            Rlp::List(vec![e(), Rlp::List(vec![e()])]),
        ]);
        assert_eq!(
            set.encode(),
            [0xc7, 0xc0, 0xc1, 0xc0, 0xc3, 0xc0, 0xc1, 0xc0]
        );
    }

    #[test]
    fn rlp_decoder_is_strict() {
        assert_eq!(Rlp::decode(&[0x81, 0x05]), Err(RlpError::NotCanonical));
        assert_eq!(
            Rlp::decode(&[0xb8, 0x05, 1, 2, 3, 4, 5]),
            Err(RlpError::NotCanonical)
        );
        assert_eq!(Rlp::decode(&[0x83, b'd']), Err(RlpError::Truncated));
        assert_eq!(Rlp::decode(&[0x80, 0x80]), Err(RlpError::Trailing));
        assert_eq!(
            Rlp::decode(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(RlpError::Truncated)
        );
        let mut deep = Rlp::List(vec![]);
        for _ in 0..20 {
            deep = Rlp::List(vec![deep]);
        }
        assert_eq!(Rlp::decode(&deep.encode()), Err(RlpError::TooDeep));
    }

    #[test]
    fn create_address_known_answer() {
        // The first contract of 0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0
        // (the example in the Ethereum yellow-paper discussions).
        let sender: Address = "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0"
            .parse()
            .unwrap();
        assert_eq!(
            create_address(&sender, 0),
            "0xcd234a471b72ba2f1ccf0a70fcaba648a5eecd8d"
                .parse()
                .unwrap()
        );
        assert_eq!(
            create_address(&sender, 1),
            "0x343c43a37d37dff08ae8c4a11544c718abb4fcf8"
                .parse()
                .unwrap()
        );
    }

    /// Known answers from ethereumjs's EIP-1559 test vectors
    /// (packages/tx/test/json/eip1559.json; chain id 7822, there wrapped
    /// once more as an RLP string): one with y parity 0, one with 1.
    #[test]
    fn ethereumjs_known_answers() {
        let secret: [u8; 32] =
            hex::decode("8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63")
                .unwrap()
                .try_into()
                .unwrap();
        let key = ChainKey::from_bytes(&secret).unwrap();
        let cases = [
            (819, 43203529, 35552, 75853, 121212, "02f870821e8e8203338301284d8301d97c828ae094000000000000000000000000000000000000aaaa8402933bc980c080a0d067f2167008c59219652f91cbf8788dbca5f771f6e91e2b7657e85b78b472e0a01d305af9fe81fdba43f0dfcd400ed24dcace0a7e30d4e85701dcaaf484cd079e"),
            (353, 61901619, 32593, 38850, 136295, "02f86f821e8e8201618297c283021467827f5194000000000000000000000000000000000000aaaa8403b08b3380c001a004205678f13fc1d7b10feea6513dfa76e24418b6e08097d95c6f93a3b64e536da01d45ad61bfece43862de2cce7d2575a8c1d08c26c87f3cb5f26d7b0be54a91b2"),
        ];
        for (nonce, value, gas_limit, priority, max_fee, raw) in cases {
            let tx = Eip1559Tx {
                chain_id: 7822,
                nonce,
                max_priority_fee_per_gas: priority,
                max_fee_per_gas: max_fee,
                gas_limit,
                to: Some(
                    "0x000000000000000000000000000000000000aaaa"
                        .parse()
                        .unwrap(),
                ),
                value,
                data: vec![],
            };
            assert_eq!(hex::encode(tx.sign(&key)), raw);
        }
    }

    fn sample() -> Eip1559Tx {
        Eip1559Tx {
            chain_id: 1337,
            nonce: 0,
            max_priority_fee_per_gas: 2_000_000_000,
            max_fee_per_gas: 2_000_000_000,
            gas_limit: 21_000,
            to: Some(Address([0x11; 20])),
            value: 0,
            data: vec![],
        }
    }

    /// The raw transaction decodes back to its fields, and its signature
    /// recovers the sender from the signing hash.
    fn check_signed(tx: &Eip1559Tx, key: &ChainKey) -> Result<(), TestCaseError> {
        let raw = tx.sign(key);
        prop_assert_eq!(raw[0], EIP1559_TX_TYPE);
        let Rlp::List(items) = Rlp::decode(&raw[1..]).unwrap() else {
            return Err(TestCaseError::fail("not a list"));
        };
        prop_assert_eq!(items.len(), 12);
        prop_assert_eq!(&items[..9], &tx.fields()[..]);
        let bytes = |item: &Rlp| match item {
            Rlp::Bytes(b) => b.clone(),
            Rlp::List(_) => panic!("list"),
        };
        let mut signature = [0u8; 65];
        let r = bytes(&items[10]);
        let s = bytes(&items[11]);
        prop_assert!(r.first() != Some(&0) && s.first() != Some(&0));
        signature[32 - r.len()..32].copy_from_slice(&r);
        signature[64 - s.len()..64].copy_from_slice(&s);
        let parity = bytes(&items[9]);
        prop_assert!(parity.is_empty() || parity == [1]);
        signature[64] = 27 + parity.first().copied().unwrap_or(0);
        prop_assert_eq!(
            recover(&tx.signing_hash(), &Signature65(signature)).unwrap(),
            key.address()
        );
        Ok(())
    }

    #[test]
    fn signed_transaction_recovers_its_sender() {
        let key = ChainKey::generate([0x42; 32]).unwrap();
        check_signed(&sample(), &key).unwrap();
        let creation = Eip1559Tx {
            to: None,
            data: vec![0x60; 300],
            ..sample()
        };
        check_signed(&creation, &key).unwrap();
        let raw = creation.sign(&key);
        // `to` of a creation is the empty string.
        assert_ne!(tx_hash(&raw), tx_hash(&sample().sign(&key)));
    }

    fn rlp_strategy() -> impl Strategy<Value = Rlp> {
        let leaf = proptest::collection::vec(any::<u8>(), 0..80).prop_map(Rlp::Bytes);
        leaf.prop_recursive(4, 64, 8, |inner| {
            proptest::collection::vec(inner, 0..8).prop_map(Rlp::List)
        })
    }

    proptest! {
        #[test]
        fn rlp_round_trip(item in rlp_strategy()) {
            prop_assert_eq!(Rlp::decode(&item.encode()).unwrap(), item);
        }

        #[test]
        fn uint_is_minimal(value in any::<u128>()) {
            let Rlp::Bytes(bytes) = Rlp::uint(value) else { unreachable!() };
            prop_assert!(bytes.first() != Some(&0));
            let mut padded = [0u8; 16];
            padded[16 - bytes.len()..].copy_from_slice(&bytes);
            prop_assert_eq!(u128::from_be_bytes(padded), value);
        }

        #[test]
        fn rlp_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Rlp::decode(&data);
        }

        #[test]
        fn transactions_round_trip(
            nonce in any::<u64>(),
            fee in any::<u128>(),
            gas in any::<u64>(),
            to in proptest::option::of(any::<[u8; 20]>()),
            value in any::<u128>(),
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let key = ChainKey::generate([0x17; 32]).unwrap();
            let tx = Eip1559Tx {
                chain_id: 1337, nonce, max_priority_fee_per_gas: fee / 2, max_fee_per_gas: fee,
                gas_limit: gas, to: to.map(Address), value, data,
            };
            check_signed(&tx, &key)?;
        }
    }
}
