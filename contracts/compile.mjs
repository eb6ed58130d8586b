// Recompiles contracts/NodeRegistry.sol into contracts/out/NodeRegistry.json
// (`make contracts`); commit the result. contracts/check.mjs proves a fresh
// compile still gives the committed bytes.

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { compile, loadSolc, OUT_NAME, OUT_PATH, runMain } from "./build.mjs";

await runMain(async () => {
  const text = await compile();
  mkdirSync(dirname(OUT_PATH), { recursive: true });
  writeFileSync(OUT_PATH, text);
  const solc = await loadSolc();
  console.log(`contracts: wrote ${OUT_NAME} (solc ${solc.version()})`);
});
