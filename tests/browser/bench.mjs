// Times the explorer in headless Chromium: bundle load, time to the first token and decoding
// rate as the page measures them, on WebGPU (SwiftShader here) and on the CPU backend, and the
// longest task that blocked the page's main thread meanwhile (the model runs in a worker), and
// the time from navigation until the WebAssembly module had started (download, compile,
// instantiate: what the bundle's size costs).
//
//   node bench.mjs [--dist DIR] [cpu|webgpu ...]
//
// (after scripts/build-web.sh; DIR defaults to www/dist; prints one JSON line each). Compare
// two builds in one run by passing each one's folder.
import { chromium } from "playwright-core";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serveStatic } from "./serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const distAt = args.indexOf("--dist");
const dist = distAt >= 0 ? args.splice(distAt, 2)[1] : join(here, "..", "..", "www", "dist");
const server = await serveStatic(dist);
const backends = args.length ? args : ["cpu", "webgpu"];
try {
  for (const backend of backends) {
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage();
      await page.addInitScript(() => {
        window.longTasks = [];
        new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((e) => e.duration)))
          .observe({ type: "longtask", buffered: true });
      });
      await page.goto(server.url + (backend === "cpu" ? "?backend=cpu" : ""));
      // The explorer's root appears once the module has started.
      await page.locator(".lavender-explorer-ui").waitFor({ timeout: 300_000 });
      const moduleStartMs = Math.round(await page.evaluate(() => performance.now()));
      const state = (name) => document.querySelector(".lavender-explorer-ui")?.dataset[name];
      await page.waitForFunction(
        (s) => ["ready", "error"].includes(document.querySelector(".lavender-explorer-ui")?.dataset.modelState),
        null,
        { timeout: 300_000 },
      );
      await page.locator(".lx-run:not([disabled])").waitFor({ timeout: 60_000 }).catch(() => {});
      if (await page.locator(".lx-run:not([disabled])").count()) {
        await page.click(".lx-run");
        await page.waitForFunction(
          () => ["done", "error"].includes(document.querySelector(".lavender-explorer-ui")?.dataset.runState),
          null,
          { timeout: 300_000 },
        );
      }
      const result = await page.evaluate(() => {
        const explorer = document.querySelector(".lavender-explorer-ui");
        const text = (selector) => explorer.querySelector(selector)?.textContent ?? null;
        return {
          backend: explorer.dataset.backend,
          model: explorer.dataset.modelState,
          run: explorer.dataset.runState,
          tokens: explorer.dataset.tokenIds.split(",").filter(Boolean).length,
          load: text(".lx-load-ms"),
          firstToken: text(".lx-ttft-ms"),
          decoding: text(".lx-tokens-per-s"),
          error: text(".lx-error"),
          longestMainThreadTaskMs: Math.round(Math.max(0, ...window.longTasks)),
          mainThreadLongTasks: window.longTasks.length,
        };
      });
      console.log(JSON.stringify({ ...result, dist, moduleStartMs }));
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.close();
}
