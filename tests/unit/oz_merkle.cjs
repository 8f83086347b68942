// Reference: roots and proofs from @openzeppelin/merkle-tree for bytes32 leaves (JSON on stdin).
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const values = JSON.parse(require("fs").readFileSync(0, "utf8"));
const tree = StandardMerkleTree.of(values.map((v) => [v]), ["bytes32"]);
const proofs = values.map((v) => tree.getProof([v]));
process.stdout.write(JSON.stringify({ root: tree.root, proofs }));
