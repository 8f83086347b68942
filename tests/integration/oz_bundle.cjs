// Independent check of an evidence bundle's proofs with @openzeppelin/merkle-tree (bundle JSON on stdin):
// the anchored value is recomputed from the token (SHA-256 of the JWS signing input) with node's crypto.
"use strict";
const crypto = require("crypto");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const bundle = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = bundle.records.map((r) => {
  const signingInput = r.token.split(".").slice(0, 2).join(".");
  const value = "0x" + crypto.createHash("sha256").update(signingInput, "ascii").digest("hex");
  return {
    value,
    sameValue: value === r.proof.value,
    verified: StandardMerkleTree.verify(r.proof.root, ["bytes32"], [value], r.proof.proof),
    leaf: StandardMerkleTree.of([[value]], ["bytes32"]).leafHash([value]),
  };
});
process.stdout.write(JSON.stringify(out));
