// Compile ledger/contracts/BedsideAnchor.sol with the solc pinned in package.json and write
// ledger/contracts/BedsideAnchor.json (ABI, bytecode, compiler version and settings).
//
// The output is reproducible byte for byte: the settings are fixed here, the source is read as
// bytes under a fixed name, and the JSON is written with sorted keys. Run `node
// scripts/compile_contract.mjs --check` to compare instead of writing (the test suite does).

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const contractDir = join(root, "ledger", "contracts");
const sourceName = "BedsideAnchor.sol";
const contractName = "BedsideAnchor";
const outPath = join(contractDir, `${contractName}.json`);
const expectedVersion = "0.8.28";

// "paris" avoids PUSH0 (Shanghai) so the bytecode also runs on EVM chains that lag behind.
const settings = {
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "ipfs" },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"] },
  },
};

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys(value[k])]),
    );
  }
  return value;
}

const version = solc.version(); // e.g. "0.8.28+commit.7893614a.Emscripten.clang"
if (!version.startsWith(`${expectedVersion}+`)) {
  console.error(`solc ${version} is not the pinned ${expectedVersion}: run \`npm ci\``);
  process.exit(2);
}

const source = readFileSync(join(contractDir, sourceName), "utf8");
const input = { language: "Solidity", sources: { [sourceName]: { content: source } }, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const compiled = output.contracts[sourceName][contractName];
const artifact = sortKeys({
  contractName,
  sourceName,
  abi: compiled.abi,
  bytecode: `0x${compiled.evm.bytecode.object}`,
  deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
  compiler: { name: "solc", version: version.replace(/\.Emscripten\.clang$/, ""), npm: `solc@${expectedVersion}` },
  settings: { evmVersion: settings.evmVersion, optimizer: settings.optimizer, metadata: settings.metadata },
  metadata: compiled.metadata,
});
const text = `${JSON.stringify(artifact, null, 2)}\n`;

if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(outPath, "utf8");
  } catch {
    // missing counts as different
  }
  if (current !== text) {
    console.error(`${outPath} differs from a fresh compile: run \`node scripts/compile_contract.mjs\``);
    process.exit(1);
  }
  console.log(`${outPath} reproduces byte for byte with solc ${version}`);
} else {
  writeFileSync(outPath, text);
  console.log(`wrote ${outPath} (solc ${version})`);
}
