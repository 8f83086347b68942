// Compiles the EAS contracts (SchemaRegistry, EAS) from an unpacked @ethereum-attestation-service/eas-contracts
// package with the project's solc, OpenZeppelin from node_modules. EAS pins `pragma solidity 0.8.29`; the
// project's solcjs is newer, so the pragma is relaxed to ^0.8.29 (same optimizer settings as EAS: 1,000,000 runs
// is theirs; we keep it). Usage: node bench/eas_build.cjs <package dir>   (JSON artifacts on stdout)
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");
const ROOT = path.resolve(__dirname, "..");
const pkg = path.resolve(process.argv[2]);
const dir = path.join(pkg, "contracts");
function list(d, prefix = "") {
  const out = {};
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const rel = prefix + e.name;
    if (e.isDirectory()) Object.assign(out, list(path.join(d, e.name), rel + "/"));
    else if (e.name.endsWith(".sol")) out[rel] = { content: fs.readFileSync(path.join(d, e.name), "utf8").replace(/pragma solidity 0\.8\.\d+;/, "pragma solidity ^0.8.29;") };
  }
  return out;
}
const sources = {};
for (const [k, v] of Object.entries(list(dir))) if (!k.includes("examples/")) sources[k] = v;
const input = { language: "Solidity", sources, settings: { evmVersion: "cancun", viaIR: false,
  optimizer: { enabled: true, runs: 1000000 }, outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } } };
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: (p) => {
  const c = path.join(ROOT, "node_modules", p);
  try { return { contents: fs.readFileSync(c, "utf8") }; } catch (e) { return { error: "not found: " + p }; }
} }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) { for (const e of errors) process.stderr.write(e.formattedMessage + "\n"); process.exit(1); }
const pick = (file, name) => ({ abi: output.contracts[file][name].abi, bytecode: "0x" + output.contracts[file][name].evm.bytecode.object });
process.stdout.write(JSON.stringify({ version: JSON.parse(fs.readFileSync(path.join(pkg, "package.json"))).version,
  solc: solc.version(), SchemaRegistry: pick("SchemaRegistry.sol", "SchemaRegistry"), EAS: pick("EAS.sol", "EAS") }));
