// Compiles contracts/src with npm solc (standard JSON) into the package data dir ext_authz/chain/contracts,
// and vendors the audited Safe 1.4.1 artifacts (ABI + bytecode) from node_modules next to them, so the
// installed package never reads node_modules.
// Usage: node contracts/compile.cjs [--check]   (--check: fail if the committed artifacts drift)
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const SRC = path.join(__dirname, "src");
const BUILD = path.join(ROOT, "ext_authz", "chain", "contracts");
const SAFE_BUILD = path.join(ROOT, "node_modules/@safe-global/safe-contracts/build/artifacts/contracts");
const VENDORED = { Safe: "Safe.sol/Safe.json", SafeProxyFactory: "proxies/SafeProxyFactory.sol/SafeProxyFactory.json" };
const CONTRACTS = ["AgentRegistry", "ModelRegistry", "RuleBasedPolicy", "PolicyRegistry", "SaeAnchor", "SealgateTimelock", "ApproverRegistry", "SafeTimelockGuard", "SafeGovernanceSetup", "IdentityRegistry8004", "SigningKeyRegistry"];
const EVM_VERSION = "cancun"; // pinned: solc 0.8.37 defaults to osaka

function listSources(dir, prefix = "") {
  const out = {};
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix + entry.name;
    if (entry.isDirectory()) Object.assign(out, listSources(path.join(dir, entry.name), rel + "/"));
    else if (entry.name.endsWith(".sol")) out[rel] = { content: fs.readFileSync(path.join(dir, entry.name), "utf8") };
  }
  return out;
}

function findImport(importPath) {
  const candidate = path.join(ROOT, "node_modules", importPath);
  if (!candidate.startsWith(path.join(ROOT, "node_modules"))) return { error: "import escapes node_modules" };
  try {
    return { contents: fs.readFileSync(candidate, "utf8") };
  } catch (e) {
    return { error: `not found: ${importPath}` };
  }
}

const input = {
  language: "Solidity",
  sources: listSources(SRC),
  settings: {
    evmVersion: EVM_VERSION,
    optimizer: { enabled: true, runs: 200 },
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);

const check = process.argv.includes("--check");
let drift = false;
fs.mkdirSync(BUILD, { recursive: true });
const artifacts = CONTRACTS.map((name) => {
  const unit = output.contracts[`${name}.sol`][name];
  return {
    contractName: name,
    compiler: `solc-js ${solc.version()}`,
    evmVersion: EVM_VERSION,
    abi: unit.abi,
    bytecode: "0x" + unit.evm.bytecode.object,
    deployedBytecode: "0x" + unit.evm.deployedBytecode.object,
  };
});
for (const [name, rel] of Object.entries(VENDORED)) {
  const safe = JSON.parse(fs.readFileSync(path.join(SAFE_BUILD, rel), "utf8"));
  artifacts.push({ contractName: name, source: `@safe-global/safe-contracts ${require("@safe-global/safe-contracts/package.json").version}`,
    abi: safe.abi, bytecode: safe.bytecode, deployedBytecode: safe.deployedBytecode });
}
for (const artifact of artifacts) {
  const name = artifact.contractName;
  const text = JSON.stringify(artifact, null, 2) + "\n";
  const file = path.join(BUILD, `${name}.json`);
  if (check) {
    const current = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
    if (current !== text) {
      process.stderr.write(`drift: ${path.relative(ROOT, file)} differs from a fresh compile\n`);
      drift = true;
    }
  } else {
    fs.writeFileSync(file, text);
  }
}
if (drift) process.exit(2);
process.stdout.write(check ? "contracts: build matches sources\n" : `contracts: wrote ${artifacts.length} artifacts\n`);
