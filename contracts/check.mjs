// Pinned means pinned: compiles contracts/NodeRegistry.sol afresh, in
// memory, and requires the result to equal the committed
// contracts/out/NodeRegistry.json byte for byte (part of `make test`). The
// Rust side deploys the committed bytecode, so it must be what the source
// compiles to with the pinned solc.

import { existsSync, readFileSync } from "node:fs";
import { compile, fail, loadSolc, OUT_NAME, OUT_PATH, runMain } from "./build.mjs";

await runMain(async () => {
  const solc = await loadSolc();
  const fresh = await compile();
  if (!existsSync(OUT_PATH)) fail(`${OUT_NAME} is missing: run make contracts and commit it`);
  const committed = readFileSync(OUT_PATH, "utf8");
  if (fresh !== committed) {
    let differing;
    try {
      const a = JSON.parse(fresh);
      const b = JSON.parse(committed);
      const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
      differing = keys.filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
    } catch {
      differing = [];
    }
    const what = differing.length > 0 ? differing.join(", ") : "formatting only";
    fail(`fresh compile differs from ${OUT_NAME} in ${what}: run make contracts and commit the result`);
  }
  console.log(`contracts: fresh compile equals ${OUT_NAME} (solc ${solc.version()})`);
});
