// Build the demo bundle: node build.mjs [outfile]
//
// Default outfile: ../docs/_static/demo/demo.js (committed, so that the docs build
// needs no npm); building there also rewrites bundle.json, the record that
// tests/test_demo.py checks against the committed bundle, the lockfile and the sources.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import * as esbuild from "esbuild";

const DEFAULT = "../docs/_static/demo/demo.js";
const outfile = process.argv[2] ?? DEFAULT;
await esbuild.build({
  entryPoints: ["src/demo.js"], bundle: true, format: "iife", target: "es2022",
  minify: true, legalComments: "eof", charset: "utf8", outfile, logLevel: "warning",
});
const sha = (bytes) => createHash("sha256").update(bytes).digest("hex");
if (outfile === DEFAULT) {
  const lock = JSON.parse(readFileSync("package-lock.json"));
  const sources = readdirSync("src").sort().map((f) => `${f}:${sha(readFileSync(`src/${f}`))}`);
  const record = {
    bundle: "docs/_static/demo/demo.js",
    bundle_sha256: sha(readFileSync(outfile)),
    bundle_bytes: readFileSync(outfile).length,
    package_lock_sha256: sha(readFileSync("package-lock.json")),
    sources_sha256: sha(sources.join("\n")),
    "@jax-js/jax": lock.packages["node_modules/@jax-js/jax"].version,
    esbuild: esbuild.version,
    node: process.version,
  };
  writeFileSync("bundle.json", JSON.stringify(record, null, 1) + "\n");
  console.log(`built ${outfile} (${record.bundle_bytes} bytes, sha256 ${record.bundle_sha256})`);
}
