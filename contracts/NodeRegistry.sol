// SPDX-License-Identifier: Apache-2.0
// Exact pragma: the committed build output (out/NodeRegistry.json) is only
// reproducible with this one compiler, pinned in package-lock.json.
pragma solidity 0.8.37;

/// @title Lockstep node registry
/// @notice On-chain identity for Lockstep nodes: an operator registers a
/// node (its Ed25519 node id and a secp256k1 "chain key" the node holds),
/// receipts signed by that chain key can be checked by any contract, and
/// trusted referees record dispute outcomes against nodes.
/// @dev Typed data follows EIP-712; the type strings are in contracts/README.md
/// and must stay identical to the Rust side (crate lockstep-chain). No
/// external libraries: the only cryptography is keccak256 and ecrecover.
contract NodeRegistry {
    /// @notice What the registry knows about one node. nodeId is the node's
    /// 32-byte Ed25519 public key; registeredAt and revokedAt are block
    /// timestamps, 0 meaning never.
    struct NodeRecord {
        bytes32 nodeId;
        address nodeAddress;
        address operator;
        uint8 keyProtection;
        bytes32 attestationDigest;
        bytes32 certificationReportHash;
        bytes32 bundleId;
        uint64 registeredAt;
        uint64 revokedAt;
    }

    /// @notice One referee's signed verdict on a receipt, as recorded.
    struct DisputeRecord {
        bytes32 nodeId;
        bytes32 receiptDigest;
        uint8 outcome;
        bytes32 detailsHash;
        address referee;
        uint64 recordedAt;
    }

    // keyProtection values (lockstep-identity's KeyProtection).
    uint8 private constant KEY_PROTECTION_FILE = 0;
    uint8 private constant KEY_PROTECTION_TPM_SEALED = 1;

    // Dispute outcomes.
    uint8 private constant OUTCOME_NODE_AT_FAULT = 1;
    uint8 private constant OUTCOME_NODE_CLEARED = 2;

    // The node's Ed25519 signature binding its chain address to its node id.
    uint256 private constant DEVICE_SIGNATURE_LENGTH = 64;

    // secp256k1n / 2: signatures with a larger s are refused so that each
    // (digest, signer) has one valid encoding (EIP-2 malleability).
    uint256 private constant SECP256K1N_HALF =
        0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Lockstep NodeRegistry");
    bytes32 private constant VERSION_HASH = keccak256("1");

    // The receipt domain deliberately has no chainId or verifyingContract: a
    // receipt is a fact about a job, the same on every chain; what is
    // chain-specific is the registry that says whose key signed it.
    bytes32 private constant RECEIPT_DOMAIN_TYPEHASH = keccak256("EIP712Domain(string name,string version)");
    bytes32 private constant RECEIPT_NAME_HASH = keccak256("Lockstep Receipt");
    bytes32 private constant RECEIPT_DOMAIN_SEPARATOR =
        keccak256(abi.encode(RECEIPT_DOMAIN_TYPEHASH, RECEIPT_NAME_HASH, VERSION_HASH));

    bytes32 private constant REGISTRATION_TYPEHASH = keccak256(
        "Registration(address operator,bytes32 nodeId,address nodeAddress,uint8 keyProtection,bytes32 attestationDigest,bytes32 certificationReportHash,bytes32 bundleId)"
    );
    bytes32 private constant RECEIPT_TYPEHASH = keccak256("Receipt(bytes32 receiptDigest)");
    bytes32 private constant DISPUTE_OUTCOME_TYPEHASH =
        keccak256("DisputeOutcome(bytes32 nodeId,bytes32 receiptDigest,uint8 outcome,bytes32 detailsHash)");

    // Set once: there is no ownership transfer, so the owner's only power,
    // choosing referees, cannot change hands unnoticed.
    address private immutable _owner;
    mapping(address => bool) private _referees;
    mapping(bytes32 => NodeRecord) private _nodes;
    // A chain address stays bound to its node even after revocation, so a
    // retired key can never speak for another node.
    mapping(address => bytes32) private _nodeIdOf;
    mapping(bytes32 => DisputeRecord) private _disputes;
    mapping(bytes32 => uint256) private _faultCount;
    mapping(bytes32 => uint256) private _clearedCount;

    event RefereeSet(address indexed referee, bool trusted);
    event NodeRegistered(
        bytes32 indexed nodeId,
        address indexed operator,
        address indexed nodeAddress,
        uint8 keyProtection,
        bytes32 attestationDigest,
        bytes32 certificationReportHash,
        bytes32 bundleId,
        bytes deviceSignature
    );
    event NodeRevoked(bytes32 indexed nodeId, address indexed operator, uint64 revokedAt);
    event DisputeRecorded(
        bytes32 indexed disputeId,
        bytes32 indexed nodeId,
        address indexed referee,
        bytes32 receiptDigest,
        uint8 outcome,
        bytes32 detailsHash
    );

    error NotOwner(address caller);
    error ZeroNodeId();
    error ZeroAddress();
    error InvalidKeyProtection(uint8 value);
    error InvalidDeviceSignature();
    error AlreadyRegistered(bytes32 nodeId);
    error NodeAddressInUse(address nodeAddress);
    error NodeSignatureInvalid();
    error NotRegistered(bytes32 nodeId);
    error NotOperator(bytes32 nodeId, address caller);
    error AlreadyRevoked(bytes32 nodeId);
    error InvalidOutcome(uint8 value);
    error NotReferee(address signer);
    error DisputeAlreadyRecorded(bytes32 disputeId);

    /// @notice Deploys the registry; the sender becomes its owner.
    /// @param initialReferees Accounts trusted to sign dispute outcomes from
    /// the start (each emits RefereeSet). None may be the zero address.
    constructor(address[] memory initialReferees) {
        _owner = msg.sender;
        for (uint256 i = 0; i < initialReferees.length; i++) {
            _setReferee(initialReferees[i], true);
        }
    }

    /// @notice The account that chooses the referees.
    function owner() external view returns (address) {
        return _owner;
    }

    /// @notice Whether `account` is trusted to sign dispute outcomes.
    function isReferee(address account) external view returns (bool) {
        return _referees[account];
    }

    /// @notice Trusts or distrusts a referee. Only the owner may call it.
    /// @dev The zero address is refused: it is what a failed ecrecover
    /// returns, so trusting it would accept any unrecoverable signature.
    function setReferee(address referee, bool trusted) external {
        if (msg.sender != _owner) revert NotOwner(msg.sender);
        _setReferee(referee, trusted);
    }

    /// @notice Registers a node; the sender is its operator (sending the
    /// transaction is the operator's consent).
    /// @dev The node's consent is `nodeSignature`, an EIP-712 signature of
    /// Registration under the registry domain by `nodeAddress`; it names the
    /// operator, and the domain names the chain and this registry, so it
    /// cannot be replayed by someone else or elsewhere. `deviceSignature`,
    /// the node's Ed25519 signature binding its chain address to its node
    /// id, is not checked here (Ed25519 is not cheaply verifiable on the
    /// EVM): it only has to be 64 bytes and is emitted in NodeRegistered so
    /// that anyone can check it off chain. A node id registers at most once,
    /// ever: after revocation the node needs a new identity.
    /// @param nodeId The node's Ed25519 public key (not zero).
    /// @param nodeAddress The address of the node's secp256k1 chain key (not zero, not used by another node).
    /// @param keyProtection 0 = file, 1 = tpm-sealed.
    /// @param attestationDigest Digest of the node's TPM attestation (0 if none).
    /// @param certificationReportHash Hash of the node's certification report.
    /// @param bundleId The kernel bundle the node runs.
    /// @param nodeSignature 65-byte (r, s, v) signature by nodeAddress over the Registration digest.
    /// @param deviceSignature 64-byte Ed25519 signature by nodeId, checked off chain.
    function register(
        bytes32 nodeId,
        address nodeAddress,
        uint8 keyProtection,
        bytes32 attestationDigest,
        bytes32 certificationReportHash,
        bytes32 bundleId,
        bytes calldata nodeSignature,
        bytes calldata deviceSignature
    ) external {
        if (nodeId == bytes32(0)) revert ZeroNodeId();
        if (nodeAddress == address(0)) revert ZeroAddress();
        if (keyProtection > KEY_PROTECTION_TPM_SEALED) revert InvalidKeyProtection(keyProtection);
        if (deviceSignature.length != DEVICE_SIGNATURE_LENGTH) revert InvalidDeviceSignature();
        // nodeAddress is never zero in a stored record, so it marks one.
        if (_nodes[nodeId].nodeAddress != address(0)) revert AlreadyRegistered(nodeId);
        if (_nodeIdOf[nodeAddress] != bytes32(0)) revert NodeAddressInUse(nodeAddress);

        bytes32 digest = _registrationDigest(
            msg.sender, nodeId, nodeAddress, keyProtection, attestationDigest, certificationReportHash, bundleId
        );
        // _recover returns address(0) for any refused signature, and
        // nodeAddress is not zero, so every refusal lands here.
        if (_recover(digest, nodeSignature) != nodeAddress) revert NodeSignatureInvalid();

        _nodes[nodeId] = NodeRecord({
            nodeId: nodeId,
            nodeAddress: nodeAddress,
            operator: msg.sender,
            keyProtection: keyProtection,
            attestationDigest: attestationDigest,
            certificationReportHash: certificationReportHash,
            bundleId: bundleId,
            registeredAt: uint64(block.timestamp),
            revokedAt: 0
        });
        _nodeIdOf[nodeAddress] = nodeId;

        emit NodeRegistered(
            nodeId,
            msg.sender,
            nodeAddress,
            keyProtection,
            attestationDigest,
            certificationReportHash,
            bundleId,
            deviceSignature
        );
    }

    /// @notice Revokes a node: its receipts stop verifying as valid. Only
    /// the node's operator may call it, once. The record stays, with
    /// revokedAt set, so receipts can still be judged by time.
    /// @param nodeId The node to revoke.
    function revoke(bytes32 nodeId) external {
        NodeRecord storage node = _nodes[nodeId];
        if (node.nodeAddress == address(0)) revert NotRegistered(nodeId);
        if (node.operator != msg.sender) revert NotOperator(nodeId, msg.sender);
        if (node.revokedAt != 0) revert AlreadyRevoked(nodeId);
        uint64 revokedAt = uint64(block.timestamp);
        node.revokedAt = revokedAt;
        emit NodeRevoked(nodeId, msg.sender, revokedAt);
    }

    /// @notice The record of a node; all zero if the node is unknown.
    function getNode(bytes32 nodeId) external view returns (NodeRecord memory) {
        return _nodes[nodeId];
    }

    /// @notice The node id a chain address belongs to; zero if none.
    function nodeIdOf(address nodeAddress) external view returns (bytes32) {
        return _nodeIdOf[nodeAddress];
    }

    /// @notice Checks a receipt signature by a node's chain key. Never
    /// reverts on a bad signature, so other contracts can call it and decide.
    /// @param receiptDigest SHA-256 of the receipt's canonical bytes.
    /// @param signature 65-byte (r, s, v) signature over receiptTypedDigest(receiptDigest).
    /// @return valid True when the signer is a registered node's chain address and that node is not revoked.
    /// @return nodeId The signer's node id when the signer is a registered node (even a revoked one), else zero.
    /// @return registeredAt When that node was registered, else zero.
    /// @return revokedAt When that node was revoked, zero if it is not (or the signer is unknown).
    function verifyReceipt(bytes32 receiptDigest, bytes calldata signature)
        external
        view
        returns (bool valid, bytes32 nodeId, uint64 registeredAt, uint64 revokedAt)
    {
        address signer = _recover(_receiptTypedDigest(receiptDigest), signature);
        if (signer == address(0)) return (false, bytes32(0), 0, 0);
        nodeId = _nodeIdOf[signer];
        if (nodeId == bytes32(0)) return (false, bytes32(0), 0, 0);
        NodeRecord storage node = _nodes[nodeId];
        registeredAt = node.registeredAt;
        revokedAt = node.revokedAt;
        valid = revokedAt == 0;
    }

    /// @notice Records a trusted referee's signed verdict on a node's
    /// receipt. Anyone may submit it; the referee's signature is the authority.
    /// @dev The dispute id is the EIP-712 digest of the DisputeOutcome, so
    /// the same verdict is recorded once, whoever submits it.
    /// @param nodeId The node the dispute is about (must be registered, revoked or not).
    /// @param receiptDigest SHA-256 of the disputed receipt's canonical bytes.
    /// @param outcome 1 = node at fault, 2 = node cleared.
    /// @param detailsHash Hash of the off-chain dispute record.
    /// @param refereeSignature 65-byte (r, s, v) signature by a trusted referee over disputeDigest(...).
    /// @return disputeId The EIP-712 digest of the DisputeOutcome.
    function recordDispute(
        bytes32 nodeId,
        bytes32 receiptDigest,
        uint8 outcome,
        bytes32 detailsHash,
        bytes calldata refereeSignature
    ) external returns (bytes32 disputeId) {
        if (_nodes[nodeId].nodeAddress == address(0)) revert NotRegistered(nodeId);
        if (outcome != OUTCOME_NODE_AT_FAULT && outcome != OUTCOME_NODE_CLEARED) revert InvalidOutcome(outcome);
        disputeId = _disputeDigest(nodeId, receiptDigest, outcome, detailsHash);
        address signer = _recover(disputeId, refereeSignature);
        // _referees[address(0)] is never set (_setReferee refuses it); the
        // explicit test keeps an unrecoverable signature out regardless.
        if (signer == address(0) || !_referees[signer]) revert NotReferee(signer);
        // referee is never zero in a stored record, so it marks one.
        if (_disputes[disputeId].referee != address(0)) revert DisputeAlreadyRecorded(disputeId);

        _disputes[disputeId] = DisputeRecord({
            nodeId: nodeId,
            receiptDigest: receiptDigest,
            outcome: outcome,
            detailsHash: detailsHash,
            referee: signer,
            recordedAt: uint64(block.timestamp)
        });
        if (outcome == OUTCOME_NODE_AT_FAULT) {
            _faultCount[nodeId] += 1;
        } else {
            _clearedCount[nodeId] += 1;
        }
        emit DisputeRecorded(disputeId, nodeId, signer, receiptDigest, outcome, detailsHash);
    }

    /// @notice A recorded dispute; all zero if there is none with that id.
    function getDispute(bytes32 disputeId) external view returns (DisputeRecord memory) {
        return _disputes[disputeId];
    }

    /// @notice How many recorded disputes found the node at fault (outcome 1).
    function faultCount(bytes32 nodeId) external view returns (uint256) {
        return _faultCount[nodeId];
    }

    /// @notice How many recorded disputes cleared the node (outcome 2).
    function clearedCount(bytes32 nodeId) external view returns (uint256) {
        return _clearedCount[nodeId];
    }

    /// @notice The EIP-712 digest a node's chain key signs to register
    /// (registry domain), so off-chain code can cross-check its own hashing.
    function registrationDigest(
        address operator,
        bytes32 nodeId,
        address nodeAddress,
        uint8 keyProtection,
        bytes32 attestationDigest,
        bytes32 certificationReportHash,
        bytes32 bundleId
    ) external view returns (bytes32) {
        return _registrationDigest(
            operator, nodeId, nodeAddress, keyProtection, attestationDigest, certificationReportHash, bundleId
        );
    }

    /// @notice The EIP-712 digest a node's chain key signs for a receipt
    /// (receipt domain, the same on every chain).
    /// @param receiptDigest SHA-256 of the receipt's canonical bytes.
    function receiptTypedDigest(bytes32 receiptDigest) external pure returns (bytes32) {
        return _receiptTypedDigest(receiptDigest);
    }

    /// @notice The EIP-712 digest a referee signs for a dispute outcome
    /// (registry domain); it is also the dispute's id.
    function disputeDigest(bytes32 nodeId, bytes32 receiptDigest, uint8 outcome, bytes32 detailsHash)
        external
        view
        returns (bytes32)
    {
        return _disputeDigest(nodeId, receiptDigest, outcome, detailsHash);
    }

    /// @notice The registry's EIP-712 domain separator on the current chain.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    function _setReferee(address referee, bool trusted) private {
        if (referee == address(0)) revert ZeroAddress();
        _referees[referee] = trusted;
        emit RefereeSet(referee, trusted);
    }

    // Computed on every call from block.chainid, not cached: after a fork
    // the signatures made for one chain do not verify on the other.
    function _domainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _registrationDigest(
        address operator,
        bytes32 nodeId,
        address nodeAddress,
        uint8 keyProtection,
        bytes32 attestationDigest,
        bytes32 certificationReportHash,
        bytes32 bundleId
    ) private view returns (bytes32) {
        bytes32 structHash = keccak256(
            abi.encode(
                REGISTRATION_TYPEHASH,
                operator,
                nodeId,
                nodeAddress,
                keyProtection,
                attestationDigest,
                certificationReportHash,
                bundleId
            )
        );
        return _typedDataHash(_domainSeparator(), structHash);
    }

    function _receiptTypedDigest(bytes32 receiptDigest) private pure returns (bytes32) {
        return _typedDataHash(RECEIPT_DOMAIN_SEPARATOR, keccak256(abi.encode(RECEIPT_TYPEHASH, receiptDigest)));
    }

    function _disputeDigest(bytes32 nodeId, bytes32 receiptDigest, uint8 outcome, bytes32 detailsHash)
        private
        view
        returns (bytes32)
    {
        bytes32 structHash =
            keccak256(abi.encode(DISPUTE_OUTCOME_TYPEHASH, nodeId, receiptDigest, outcome, detailsHash));
        return _typedDataHash(_domainSeparator(), structHash);
    }

    // EIP-712: keccak256("\x19\x01" || domainSeparator || hashStruct(message)).
    function _typedDataHash(bytes32 domain, bytes32 structHash) private pure returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    // The signer of `digest`, or address(0) for any signature refused: not
    // 65 bytes (r || s || v), v not 27 or 28, s in the upper half of the
    // curve order (the malleable twin of a valid signature), or one that
    // ecrecover cannot recover (it returns address(0) then). Never reverts,
    // so verifyReceipt can answer false instead.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v != 27 && v != 28) return address(0);
        if (uint256(s) > SECP256K1N_HALF) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
