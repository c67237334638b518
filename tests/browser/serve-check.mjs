// Checks a running development server (`cd web && trunk serve`): the page loads the example
// bundle, answers on the CPU backend and draws a word's map. Not part of the test suite (it
// needs a dev build, minutes on 2 cores); run by hand: node tests/browser/serve-check.mjs [URL].
import { chromium } from "playwright-core";

const url = process.argv[2] ?? "http://127.0.0.1:8080/";
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: true });
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  const started = Date.now();
  await page.goto(new URL("?backend=cpu", url).href);
  const ui = page.locator(".lavender-explorer-ui");
  await page.waitForFunction(() => ["ready", "error"].includes(document.querySelector(".lavender-explorer-ui")?.dataset.modelState), null, { timeout: 300_000 });
  const state = await ui.getAttribute("data-model-state");
  if (state !== "ready") throw new Error(`model ${state}: ${await page.locator(".lx-error").textContent().catch(() => "")}`);
  const loaded = Date.now();
  await page.locator(".lx-run:not([disabled])").click();
  await page.waitForFunction(() => ["done", "error"].includes(document.querySelector(".lavender-explorer-ui").dataset.runState), null, { timeout: 300_000 });
  const answer = await page.locator(".lx-answer").textContent();
  await page.locator(".lx-word").nth(1).click();
  await page.waitForFunction(() => document.querySelector(".lavender-explorer-ui").dataset.selected === "1");
  console.log(JSON.stringify({ url, state, run: await ui.getAttribute("data-run-state"), answer, loadMs: loaded - started, answerMs: Date.now() - loaded, problems }));
  if (problems.length) process.exitCode = 1;
} finally {
  await browser.close();
}
