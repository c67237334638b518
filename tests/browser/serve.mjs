// A minimal static file server for www/dist/ on 127.0.0.1 (a secure context, as WebGPU needs).
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize, sep } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".svg": "image/svg+xml",
};

/**
 * Serves `root` on an ephemeral loopback port; resolves to `{ url, close }`. `prefix` serves it
 * under a sub-path instead of the site's root (as a project page at `/user/repo/` is), and
 * `pages` adds files that are not in `root` (`{ "name.html": "contents" }`).
 */
export async function serveStatic(root, { prefix = "/", pages = {} } = {}) {
  const server = createServer(async (request, response) => {
    const full = decodeURIComponent(new URL(request.url, "http://localhost").pathname);
    if (!full.startsWith(prefix)) {
      response.writeHead(404).end("not found");
      return;
    }
    const path = "/" + full.slice(prefix.length);
    const page = pages[path.slice(1)];
    if (page !== undefined) {
      response.writeHead(200, { "content-type": TYPES[extname(path)] ?? "text/plain", "cache-control": "no-store" });
      response.end(page);
      return;
    }
    const file = normalize(join(root, path.endsWith("/") ? path + "index.html" : path));
    if (!file.startsWith(normalize(root) + sep)) {
      response.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "cache-control": "no-store",
      });
      response.end(body);
    } catch {
      response.writeHead(404).end("not found");
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}${prefix}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
