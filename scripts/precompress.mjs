// Writes `NAME.br` (brotli, quality 11) and `NAME.gz` (gzip -9) beside every .wasm, .js,
// .css, .html, .json and .safetensors file under the folder given, for static hosts that serve
// precompressed files; prints each file's raw / gzip / brotli size.
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { extname, join, relative } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const root = process.argv[2];
if (!root) {
  console.error("usage: node scripts/precompress.mjs DIR");
  process.exit(2);
}
const KINDS = new Set([".wasm", ".js", ".css", ".html", ".json", ".safetensors", ".ts"]);
const files = (dir) => readdirSync(dir).flatMap((name) => {
  const path = join(dir, name);
  return statSync(path).isDirectory() ? files(path) : [path];
});
const mb = (bytes) => (bytes / 1e6).toFixed(2) + " MB";
for (const path of files(root).filter((path) => KINDS.has(extname(path)))) {
  const raw = readFileSync(path);
  const gz = gzipSync(raw, { level: 9 });
  const br = brotliCompressSync(raw, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 11,
      [constants.BROTLI_PARAM_SIZE_HINT]: raw.length,
      [constants.BROTLI_PARAM_LGWIN]: 24,
    },
  });
  writeFileSync(path + ".gz", gz);
  writeFileSync(path + ".br", br);
  if (raw.length > 100_000) {
    console.log(`precompress: ${relative(root, path)}: ${mb(raw.length)} raw, ${mb(gz.length)} gzip, ${mb(br.length)} brotli`);
  }
}
