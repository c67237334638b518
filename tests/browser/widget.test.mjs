// The explorer as a component for other pages, in headless Chromium, with the site served
// from a sub-path (`/user/repo/`, as a project page is): a page that uses only the documented
// API (lavender-explorer.d.ts) gets the events and drives the explorer; attribute changes do
// what they say; the layer × head grid and the reverse view (a click on the picture); the
// page's view kept in its URL; the README's snippet pasted into an empty page works, and
// leaves the page's styles untouched.
//
// Needs `scripts/build-web.sh` first. CHROMIUM overrides the browser path.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "./serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const dist = join(root, "www", "dist");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const lavender = join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug", "lavender");
const PROMPT = "What shape is the blue object?";

// The README's embed snippet, exactly as a reader would copy it.
const readme = readFileSync(join(root, "README.md"), "utf8");
const snippet = readme.match(/<!-- embed-snippet[^>]*-->\s*```html\n([\s\S]*?)```/)[1];

// A page that styles the very elements the old stylesheet restyled (:root, main, h1, dl).
const HOST_STYLES = `<style>
  :root { background: rgb(10, 20, 30); color: rgb(200, 210, 220); font-family: serif; }
  main { margin: 7px; max-width: none; } h1 { color: rgb(1, 2, 3); } dl { display: block; }
</style>`;
const HOST_BODY = `<main><h1>Host page</h1><dl><dt>term</dt><dd>value</dd></dl></main>`;

const pages = {
  // Only the documented API: mountExplorer with callbacks and the handle's methods.
  "api.html": `<!doctype html><html><head><meta charset="utf-8"></head><body>
<div id="host"></div>
<script type="module">
  import { mountExplorer } from "./lavender-explorer.js";
  window.seen = [];
  const record = (name) => (detail) => window.seen.push({ name, detail });
  document.getElementById("host").addEventListener("lavender-ready", (event) => { window.domReady = event.detail; });
  window.explorer = mountExplorer(document.getElementById("host"), {
    model: "example/", image: "images/shapes.png", backend: "cpu",
    onProgress: record("progress"), onReady: record("ready"), onToken: record("token"),
    onAnswer: record("answer"), onWord: record("word"), onError: record("error"),
  });
</script></body></html>`,
  "attributes.html": `<!doctype html><html><head><meta charset="utf-8">
<script type="module" src="lavender-explorer.js"></script></head><body>
<lavender-explorer id="x" model="example/" image="images/shapes.png" backend="cpu"></lavender-explorer>
<script>
  window.readies = 0;
  document.getElementById("x").addEventListener("lavender-ready", () => { window.readies += 1; });
</script></body></html>`,
  "snippet.html": `<!doctype html><html><head><meta charset="utf-8">${HOST_STYLES}</head><body>${HOST_BODY}
${snippet}</body></html>`,
  "plain.html": `<!doctype html><html><head><meta charset="utf-8">${HOST_STYLES}</head><body>${HOST_BODY}</body></html>`,
};

let server;
let native;
before(async () => {
  assert.ok(existsSync(join(dist, "example", "manifest.json")), `${dist}/example is missing: run scripts/build-web.sh`);
  server = await serveStatic(dist, { prefix: "/user/repo/", pages });
  const output = execFileSync(lavender, [
    "generate", "--bundle", join(dist, "example"), "--image", join(dist, "images", "shapes.png"),
    "--prompt", PROMPT, "--max-new-tokens", "48", "--json",
  ], { encoding: "utf8" });
  native = JSON.parse(output.trim().split("\n").pop());
});
after(async () => server?.close());

async function withPage(body) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  const problems = [];
  try {
    const page = await (await browser.newContext()).newPage();
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    return await body(page, problems);
  } finally {
    await browser.close();
  }
}

const waitReady = (page, nth = 0) =>
  page.waitForFunction(
    (nth) => ["ready", "error"].includes(document.querySelectorAll(".lavender-explorer-ui")[nth]?.dataset.modelState),
    nth,
    { timeout: 240_000 },
  );

test("a page using only the documented API gets every event and drives the explorer", { timeout: 600_000 }, async () => {
  await withPage(async (page, problems) => {
    await page.goto(server.url + "api.html");
    await page.waitForFunction(() => window.seen.some((e) => e.name === "ready" || e.name === "error"), null, { timeout: 240_000 });
    const seen = await page.evaluate(() => window.seen);
    assert.deepEqual(seen.filter((e) => e.name === "error"), [], problems.join("\n"));
    const ready = seen.find((e) => e.name === "ready").detail;
    assert.equal(ready.backend, "cpu");
    assert.equal(ready.shared, false);
    assert.equal(ready.aligner, true);
    assert.equal(ready.mapSize, 16);
    // The same event on the element, for listeners that do not use the callbacks.
    assert.deepEqual(await page.evaluate(() => window.domReady), ready);
    // Download progress over the whole bundle: its bytes, as the manifest lists them.
    const manifest = JSON.parse(readFileSync(join(dist, "example", "manifest.json"), "utf8"));
    const bundleBytes = Object.values(manifest.files).reduce((sum, file) => sum + file.size, 0);
    const downloads = seen.filter((e) => e.name === "progress" && e.detail.phase !== "start").map((e) => e.detail);
    assert.ok(downloads.length > 0, "no download progress");
    assert.ok(downloads.every((d) => d.total === bundleBytes && d.loaded <= d.total), JSON.stringify(downloads));
    assert.equal(seen.find((e) => e.name === "progress").detail.phase, "start");
    // The compact layout: the loading controls are folded away.
    assert.equal(await page.locator(".lavender-explorer-ui").getAttribute("data-layout"), "compact");
    assert.equal(await page.locator(".lx-setup").getAttribute("open"), null);
    assert.ok(!(await page.locator(".lx-model-url").isVisible()));

    const answer = await page.evaluate(async (prompt) => (await window.explorer).ask(prompt), PROMPT);
    assert.equal(answer.text, native.text);
    assert.deepEqual(answer.tokenIds, native.token_ids);
    const tokens = (await page.evaluate(() => window.seen)).filter((e) => e.name === "token").map((e) => e.detail);
    assert.ok(tokens.length >= native.token_ids.length, `${tokens.length} token events`);
    assert.deepEqual(tokens[0].tokenIds, [native.token_ids[0]]);

    // The answer's word "circle": its map comes as data.
    const index = answer.words.findIndex((w) => w.answer && w.text === "circle");
    assert.ok(index >= 0, JSON.stringify(answer.words));
    await page.evaluate(async (index) => (await window.explorer).selectWord(index), index);
    await page.waitForFunction((index) => window.seen.some((e) => e.name === "word" && e.detail.index === index), index);
    const word = await page.evaluate((index) => {
      const detail = window.seen.find((e) => e.name === "word" && e.detail.index === index).detail;
      return { ...detail, map: Array.from(detail.map), isFloat32: detail.map instanceof Float32Array };
    }, index);
    assert.equal(word.text, "circle");
    assert.equal(word.answer, true);
    assert.ok(word.isFloat32);
    assert.equal(word.map.length, word.size * word.size);
    assert.ok(word.map.every((v) => v >= 0 && v <= 1) && Math.max(...word.map) > 0, "map values outside [0, 1]");
    assert.equal(word.choice.aggregation, "aligner-per-layer");
    assert.equal(await page.locator(".lavender-explorer-ui").getAttribute("data-selected"), String(index));
    // The reverse view: a click on the picture where this map peaks lists the words that
    // looked there most, with their values there, this word among them.
    const peak = word.map.indexOf(Math.max(...word.map));
    const [row, column] = [Math.floor(peak / word.size), peak % word.size];
    const box = await page.locator(".lx-canvas").boundingBox();
    await page.mouse.click(box.x + ((column + 0.5) / word.size) * box.width, box.y + ((row + 0.5) / word.size) * box.height);
    const region = page.locator(".lx-region");
    assert.equal(await region.getAttribute("data-cell"), `${row},${column}`);
    const listed = await region.locator(".lx-region-word").evaluateAll((buttons) =>
      buttons.map((b) => [Number(b.dataset.index), Number(b.dataset.value)]));
    assert.ok(listed.length > 0 && listed.length <= 5, JSON.stringify(listed));
    assert.deepEqual(listed.map(([, v]) => v), listed.map(([, v]) => v).sort((a, b) => b - a), "not strongest first");
    const mine = listed.find(([i]) => i === index);
    assert.ok(mine, `"circle" is not among ${JSON.stringify(listed)}`);
    assert.ok(Math.abs(mine[1] - word.map[peak]) < 1e-6, `${mine[1]} vs ${word.map[peak]}`);

    // The layer × head grid: folded, and not computed, until opened; then one small map per
    // cross-attention layer and head; a click on one shows it large, and its map comes as an
    // event with that choice.
    const { layers, heads } = manifest.cross_attention;
    assert.equal(await page.locator(".lx-head-cell").count(), 0);
    await page.locator(".lx-heads > summary").click();
    await page.locator(".lx-head-cell").nth(layers.length * heads - 1).waitFor();
    assert.equal(await page.locator(".lx-head-cell").count(), layers.length * heads);
    await page.locator('.lx-head-cell[data-layer="1"][data-head="0"]').click();
    await page.waitForFunction(() => window.seen.some((e) => e.name === "word" && e.detail.choice.aggregation === "grid"
      && e.detail.choice.layer === "1" && e.detail.choice.head === "0"));
    assert.equal(await page.locator('.lx-head-cell[data-layer="1"][data-head="0"]').getAttribute("aria-pressed"), "true");

    // One scale shared by all words: the same map up to an affine change (min-max normalised
    // again, it is the per-word map).
    await page.selectOption(".lx-normalisation", "shared");
    await page.waitForFunction(() => window.seen.some((e) => e.name === "word" && e.detail.choice.normalisation === "shared"));
    const [perWord, shared] = await page.evaluate(() => {
      const maps = window.seen.filter((e) => e.name === "word" && e.detail.choice.layer === "1" && e.detail.choice.head === "0");
      const of = (n) => Array.from(maps.find((e) => e.detail.choice.normalisation === n).detail.map);
      return [of("per-map"), of("shared")];
    });
    const [low, high] = [Math.min(...shared), Math.max(...shared)];
    assert.ok(low >= 0 && high <= 1 && high > low, `${low} ${high}`);
    const renormalised = shared.map((v) => (v - low) / (high - low));
    const gap = Math.max(...renormalised.map((v, i) => Math.abs(v - perWord[i])));
    assert.ok(gap < 1e-3, `shared and per-word maps differ in shape by ${gap}`);

    // A word that is not there is an error thrown to the caller, not a broken explorer.
    const bad = await page.evaluate(async () => {
      try {
        (await window.explorer).selectWord(999);
        return null;
      } catch (error) {
        return String(error.message);
      }
    });
    assert.match(bad, /no word 999/);
    // The arrow keys move from word to word.
    await page.locator(`.lx-word[data-index="${index}"]`).focus();
    await page.keyboard.press("ArrowLeft");
    await page.waitForFunction((i) => document.querySelector(".lavender-explorer-ui").dataset.selected === String(i), index - 1);
    assert.equal(await page.evaluate(() => document.activeElement.dataset.index), String(index - 1));
    assert.deepEqual(problems, []);
  });
});

test("the element's attributes, changed, do what they say", { timeout: 600_000 }, async () => {
  await withPage(async (page, problems) => {
    await page.goto(server.url + "attributes.html");
    await waitReady(page);
    assert.equal(await page.evaluate(() => window.readies), 1);
    await page.evaluate(() => document.getElementById("x").setAttribute("prompt", "What colour is the square?"));
    await page.waitForFunction(() => document.querySelector(".lx-prompt").value === "What colour is the square?");
    await page.evaluate(() => document.getElementById("x").setAttribute("image", "images/shapes-2.png"));
    await page.waitForFunction(() => document.querySelector(".lx-drop-hint").textContent.includes("shapes-2.png"));
    // Another model URL loads again (the same files here, by another URL).
    await page.evaluate(() => document.getElementById("x").setAttribute("model", "./example/"));
    await page.waitForFunction(() => window.readies === 2, null, { timeout: 240_000 });
    assert.equal(await page.locator(".lx-model-url").inputValue(), "./example/");
    // The layout switches to every control.
    await page.evaluate(() => document.getElementById("x").setAttribute("layout", "full"));
    await page.waitForFunction(() => document.querySelector(".lavender-explorer-ui")?.dataset.layout === "full");
    assert.equal(await page.locator(".lavender-explorer-ui").count(), 1);
    assert.ok(await page.locator(".lx-model-url").isVisible());
    assert.deepEqual(problems, []);
  });
});

test("the README's snippet works pasted into an empty page, and leaves its styles alone", { timeout: 600_000 }, async () => {
  await withPage(async (page, problems) => {
    const hostStyles = () => page.evaluate(() => {
      const pick = (selector) => {
        const style = getComputedStyle(document.querySelector(selector));
        return [style.color, style.backgroundColor, style.fontFamily, style.margin, style.maxWidth, style.display, style.lineHeight];
      };
      return { html: pick("html"), body: pick("body"), main: pick("main"), h1: pick("h1"), dl: pick("dl"), dd: pick("dd") };
    });
    await page.goto(server.url + "plain.html");
    const before = await hostStyles();
    await page.goto(server.url + "snippet.html?backend=cpu");
    await waitReady(page);
    const state = await page.locator(".lavender-explorer-ui").getAttribute("data-model-state");
    assert.equal(state, "ready", problems.join("\n"));
    // The explorer's stylesheet is in, and scoped: the host's elements look as before.
    assert.ok(await page.evaluate(() => [...document.styleSheets].some((s) => s.href?.endsWith("/user/repo/lavender-explorer.css"))));
    assert.deepEqual(await hostStyles(), before);
    assert.deepEqual(problems, []);
  });
});

test("the explorer's page keeps its view in the URL, and the URL reopens it", { timeout: 600_000 }, async () => {
  await withPage(async (page, problems) => {
    await page.goto(server.url + "?backend=cpu");
    await waitReady(page);
    await page.locator(".lx-run:not([disabled])").click();
    const done = () => page.waitForFunction(() => document.querySelector(".lavender-explorer-ui").dataset.runState === "done", null, { timeout: 240_000 });
    await done();
    await page.locator(".lx-word").nth(1).click();
    await page.selectOption(".lx-aggregation", "grid");
    await page.selectOption(".lx-layer", "0");
    await page.selectOption(".lx-normalisation", "shared");
    await page.waitForFunction(() => {
      const query = new URLSearchParams(location.search);
      return query.get("word") === "1" && query.get("aggregation") === "grid" && query.get("layer") === "0"
        && query.get("scale") === "shared";
    });
    const link = page.url();
    assert.ok(link.startsWith(server.url), link);
    const query = new URL(link).searchParams;
    assert.equal(query.get("backend"), "cpu", "the page's other parameters stay");
    assert.equal(query.get("prompt"), PROMPT);
    const version = await page.evaluate(() => Number(document.querySelector(".lavender-explorer-ui").dataset.mapsVersion));
    await page.waitForFunction((v) => Number(document.querySelector(".lavender-explorer-ui").dataset.mapsVersion) >= v, version);
    const pixels = await page.evaluate(() => document.querySelector(".lx-canvas").toDataURL());

    // The link, opened afresh, asks again and shows the same word with the same choice.
    const reopened = await page.context().newPage();
    await reopened.goto(link);
    await reopened.waitForFunction(
      () => document.querySelector(".lavender-explorer-ui")?.dataset.selected === "1"
        && document.querySelector(".lavender-explorer-ui").dataset.runState === "done",
      null,
      { timeout: 240_000 },
    );
    assert.equal(await reopened.inputValue(".lx-aggregation"), "grid");
    assert.equal(await reopened.inputValue(".lx-layer"), "0");
    assert.equal(await reopened.inputValue(".lx-normalisation"), "shared");
    await reopened.waitForFunction((expected) => document.querySelector(".lx-canvas").toDataURL() === expected, pixels, { timeout: 30_000 });
    assert.deepEqual(problems, []);
  });
});
