// The one compile that contracts/compile.mjs writes and contracts/check.mjs
// repeats: NodeRegistry.sol through the pinned solc (package-lock.json)
// with fixed settings, rendered to the exact bytes of out/NodeRegistry.json.
// Every failure is one line (a thrown Error's message), for make's output.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const CONTRACTS_DIR = dirname(fileURLToPath(import.meta.url));
export const SOURCE_NAME = "NodeRegistry.sol";
export const CONTRACT_NAME = "NodeRegistry";
export const OUT_PATH = join(CONTRACTS_DIR, "out", "NodeRegistry.json");
// Paths as the messages name them: from the repository root.
export const OUT_NAME = "contracts/out/NodeRegistry.json";

// Fixed compiler settings; they are written into the output so that anyone
// can see how the bytecode was made.
export const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  // ganache 7 (the local chain of the tests) knows hardforks only up to
  // shanghai: none of the cancun opcodes (MCOPY, TLOAD/TSTORE, BLOBHASH)
  // that solc's default target may emit. paris goes one step further back
  // (no PUSH0 either), so the same bytecode runs on ganache whatever its
  // --chain.hardfork from merge on, and on any chain past the Merge.
  evmVersion: "paris",
  // No IPFS/Swarm hash of the metadata in the bytecode: it would change
  // with comments and file paths; this way the bytecode depends only on the
  // source's code and these settings (the compiler version stays in the
  // CBOR trailer).
  metadata: { bytecodeHash: "none" },
  viaIR: false,
};

class OneLineError extends Error {}

export function fail(message) {
  throw new OneLineError(message.replace(/\s*\n\s*/g, " "));
}

// Runs main() and turns any error into one line on stderr and exit 1.
export async function runMain(main) {
  try {
    await main();
  } catch (e) {
    const message = e instanceof OneLineError ? e.message : String(e && e.message ? e.message : e);
    console.error(`contracts: ${message.split("\n")[0]}`);
    process.exit(1);
  }
}

// The solc package installed in contracts/node_modules, refused unless it is
// exactly the version package.json pins.
export async function loadSolc() {
  const pinned = JSON.parse(readFileSync(join(CONTRACTS_DIR, "package.json"), "utf8")).dependencies.solc;
  let solc;
  try {
    solc = (await import("solc")).default;
  } catch {
    fail("solc is not installed in contracts/node_modules: run make contracts-deps");
  }
  const version = solc.version();
  if (!version.startsWith(`${pinned}+`)) {
    fail(`installed solc is ${version}, not the pinned ${pinned} (contracts/package.json): run make contracts-deps`);
  }
  return solc;
}

function lineColumn(source, offset) {
  const before = source.slice(0, Math.max(0, offset));
  const lines = before.split("\n");
  return `${lines.length}:${lines[lines.length - 1].length + 1}`;
}

// Compiles in memory and returns the text of out/NodeRegistry.json.
export async function compile() {
  const solc = await loadSolc();
  const source = readFileSync(join(CONTRACTS_DIR, SOURCE_NAME), "utf8");
  const input = {
    language: "Solidity",
    sources: { [SOURCE_NAME]: { content: source } },
    settings: {
      ...SETTINGS,
      outputSelection: {
        [SOURCE_NAME]: { [CONTRACT_NAME]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  // Warnings are errors: a warning in a contract is a bug until shown not to be.
  for (const e of output.errors ?? []) {
    if (e.severity === "error" || e.severity === "warning") {
      const where = e.sourceLocation
        ? `${e.sourceLocation.file}:${lineColumn(source, e.sourceLocation.start)}: `
        : "";
      fail(`solc ${e.severity} (${e.type}): ${where}${e.message}`);
    }
  }
  const contract = output.contracts?.[SOURCE_NAME]?.[CONTRACT_NAME];
  if (!contract || !contract.evm.bytecode.object) fail(`solc produced no bytecode for ${CONTRACT_NAME}`);
  const artifact = {
    contractName: CONTRACT_NAME,
    solcVersion: solc.version(),
    settings: SETTINGS,
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
    sourceSha256: createHash("sha256").update(source, "utf8").digest("hex"),
  };
  return `${JSON.stringify(artifact, null, 2)}\n`;
}
