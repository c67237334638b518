// The web bundle in headless Chromium: Burn computes the attention probe on WebGPU
// (SwiftShader on GPU-less machines), on the CPU when asked, and falls back to the CPU
// with a stated reason when the browser has no WebGPU.
//
// Needs `scripts/build-web.sh` first. CHROMIUM overrides the browser path.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "./serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "..", "www", "dist");
const artifacts = process.env.ARTIFACTS_DIR ?? join(here, "artifacts");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";

// softmax(q kᵀ / 2) from core/src/probe.rs, recomputed here from its closed form.
const a = Math.exp(0.5) / (2 * Math.exp(0.5) + Math.E);
const b = Math.E / (2 * Math.exp(0.5) + Math.E);
const EXPECTED = [a, a, b, b, a, a];
const TOLERANCE = 1e-5;

// Flags that keep Chromium off the (closed) network; WebGPU on SwiftShader needs
// --enable-unsafe-webgpu on Linux.
const QUIET_FLAGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

let server;
before(async () => {
  assert.ok(existsSync(join(dist, "index.html")), `${dist} is missing: run scripts/build-web.sh`);
  mkdirSync(artifacts, { recursive: true });
  server = await serveStatic(dist);
});
after(async () => server?.close());

/** Opens the page in a fresh browser and returns the finished check's attributes. */
async function runCheck({ query = "", webgpu = true, screenshot }) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: webgpu ? [...QUIET_FLAGS, "--enable-unsafe-webgpu"] : QUIET_FLAGS,
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    await page.goto(server.url + query);
    // The check runs when its section is opened (it would otherwise busy the page's thread).
    await page.click("details.lx-check summary");
    await page
      .waitForFunction(
        () => {
          const status = document.querySelector("#backend-check")?.dataset.status;
          return (status && status !== "running") || document.querySelector("#load-error");
        },
        null,
        { timeout: 240_000 },
      )
      .catch((error) => {
        throw new Error(`${error.message}\n${problems.join("\n")}`);
      });
    await page.screenshot({ path: join(artifacts, screenshot), fullPage: true });
    return await page.evaluate(() => {
      const check = document.querySelector("#backend-check");
      return {
        loadError: document.querySelector("#load-error")?.textContent ?? null,
        status: check?.dataset.status,
        backend: check?.dataset.backend,
        values: (check?.dataset.values ?? "").split(",").filter(Boolean).map(Number),
        verdict: document.querySelector("#verdict")?.textContent,
        fallbackReason: document.querySelector("#fallback-reason")?.textContent ?? null,
        problems: [],
      };
    }).then((result) => ({ ...result, problems }));
  } finally {
    await browser.close();
  }
}

function assertProbeValues(result) {
  assert.equal(result.loadError, null, result.loadError ?? "");
  assert.equal(result.status, "ok", `${result.verdict}\n${result.problems.join("\n")}`);
  assert.equal(result.values.length, EXPECTED.length);
  result.values.forEach((value, index) => {
    assert.ok(
      Math.abs(value - EXPECTED[index]) <= TOLERANCE,
      `value ${index}: ${value} vs expected ${EXPECTED[index]}`,
    );
  });
}

test("WebGPU computes the attention probe", { timeout: 300_000 }, async () => {
  const result = await runCheck({ screenshot: "backend-webgpu.png" });
  assert.equal(result.backend, "webgpu", `fell back: ${result.fallbackReason}`);
  assert.equal(result.fallbackReason, null);
  assertProbeValues(result);
});

test("?backend=cpu runs the probe on the CPU backend", { timeout: 300_000 }, async () => {
  const result = await runCheck({ query: "?backend=cpu", screenshot: "backend-cpu.png" });
  assert.equal(result.backend, "cpu");
  assert.match(result.fallbackReason, /\?backend=cpu/);
  assertProbeValues(result);
});

test("without WebGPU the page falls back to the CPU and says why", { timeout: 300_000 }, async () => {
  const result = await runCheck({ webgpu: false, screenshot: "backend-no-webgpu.png" });
  assert.equal(result.backend, "cpu");
  assert.match(result.fallbackReason, /WebGPU is unavailable/);
  assertProbeValues(result);
});
