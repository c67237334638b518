// The explorer end to end in headless Chromium: the example bundle loads in the page's inference
// worker, a question about the bundled image is answered token by token exactly as the native
// CLI answers it from the same bundle, a clicked word changes the overlay, the teacher's map of
// an example is drawn beside the student's with their MSE, the overlay and maps export, the
// embed page mounts two explorers and unmounts one, and broken inputs are reported in the page.
//
// Needs `scripts/build-web.sh` first (it builds the native `lavender` too, which computes the
// reference answer here). CHROMIUM overrides the browser path, CARGO_TARGET_DIR the binary's.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serveStatic } from "./serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const dist = join(root, "www", "dist");
const artifacts = process.env.ARTIFACTS_DIR ?? join(here, "artifacts");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const lavender = join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "debug", "lavender");

// What the page asks by default (web/src/lib.rs, web/src/explorer/mod.rs).
const IMAGE = "images/shapes.png";
const PROMPT = "What shape is the blue object?";
// The blue circle's ground-truth mask in IMAGE (scripts/build-web.sh copies it beside it).
const CIRCLE_MASK = "images/shapes-blue-circle-mask.png";
const MAX_NEW_TOKENS = 48;

const QUIET_FLAGS = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

let server;
let native;
before(async () => {
  assert.ok(existsSync(join(dist, "example", "manifest.json")), `${dist}/example is missing: run scripts/build-web.sh`);
  assert.ok(existsSync(lavender), `${lavender} is missing: run scripts/build-web.sh`);
  mkdirSync(artifacts, { recursive: true });
  server = await serveStatic(dist);
  const output = execFileSync(lavender, [
    "generate", "--bundle", join(dist, "example"), "--image", join(dist, IMAGE),
    "--prompt", PROMPT, "--max-new-tokens", String(MAX_NEW_TOKENS), "--json",
  ], { encoding: "utf8" });
  native = JSON.parse(output.trim().split("\n").pop());
});
after(async () => server?.close());

async function withPage({ webgpu = true, viewport } = {}, body) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: webgpu ? [...QUIET_FLAGS, "--enable-unsafe-webgpu"] : QUIET_FLAGS,
  });
  const problems = [];
  try {
    const context = await browser.newContext({ acceptDownloads: true, viewport });
    const page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    return await body(page, problems);
  } finally {
    await browser.close();
  }
}

/** Waits until the explorer `nth` has loaded its model (or failed) and returns its state. */
async function modelState(page, nth = 0) {
  await page.waitForFunction(
    (nth) => {
      const state = document.querySelectorAll(".lavender-explorer-ui")[nth]?.dataset.modelState;
      return state === "ready" || state === "error";
    },
    nth,
    { timeout: 240_000 },
  );
  return page.evaluate((nth) => {
    const explorer = document.querySelectorAll(".lavender-explorer-ui")[nth];
    return {
      state: explorer.dataset.modelState,
      backend: explorer.dataset.backend,
      status: explorer.querySelector(".lx-status")?.textContent,
      error: explorer.querySelector(".lx-error")?.textContent ?? null,
    };
  }, nth);
}

/** Asks the default question in explorer `nth` and returns the streamed answer. */
async function ask(page, nth = 0) {
  const explorer = page.locator(".lavender-explorer-ui").nth(nth);
  await explorer.locator(".lx-run:not([disabled])").waitFor({ timeout: 60_000 });
  // Every token as it reaches the page, to check the answer streams in.
  await page.evaluate((nth) => {
    const node = document.querySelectorAll(".lavender-explorer-ui")[nth];
    window.seenTokenIds = [];
    new MutationObserver(() => window.seenTokenIds.push(node.dataset.tokenIds)).observe(node, {
      attributes: true,
      attributeFilter: ["data-token-ids"],
    });
  }, nth);
  await explorer.locator(".lx-run").click();
  await page.waitForFunction(
    (nth) => {
      const state = document.querySelectorAll(".lavender-explorer-ui")[nth]?.dataset.runState;
      return state === "done" || state === "error";
    },
    nth,
    { timeout: 240_000 },
  );
  return page.evaluate((nth) => {
    const explorer = document.querySelectorAll(".lavender-explorer-ui")[nth];
    return {
      state: explorer.dataset.runState,
      tokenIds: explorer.dataset.tokenIds.split(",").filter(Boolean).map(Number),
      text: explorer.querySelector(".lx-answer").textContent,
      words: [...explorer.querySelectorAll(".lx-word")].map((button) => button.textContent),
      error: explorer.querySelector(".lx-error")?.textContent ?? null,
      seen: window.seenTokenIds.filter(Boolean),
      timings: explorer.querySelector(".lx-timings").textContent,
    };
  }, nth);
}

function assertNativeAnswer(answer, problems) {
  assert.equal(answer.state, "done", `${answer.error}\n${problems.join("\n")}`);
  assert.deepEqual(answer.tokenIds, native.token_ids);
  assert.equal(answer.text, native.text);
  // Streamed: the token list grew one token at a time.
  assert.ok(answer.seen.length >= native.token_ids.length, `seen ${answer.seen}`);
  assert.equal(answer.seen[0], String(native.token_ids[0]));
}

const canvasPixels = (page) => page.evaluate(() => document.querySelector(".lx-canvas").toDataURL());

test("CPU: the example answers as the native CLI; words, layers and exports work", { timeout: 600_000 }, async () => {
  await withPage({}, async (page, problems) => {
    await page.goto(server.url + "?backend=cpu");
    const loaded = await modelState(page);
    assert.equal(loaded.state, "ready", `${loaded.error}\n${problems.join("\n")}`);
    assert.equal(loaded.backend, "cpu");
    // The model lives in the page's one inference worker, not on the page.
    assert.equal(page.workers().length, 1);
    assert.match(page.workers()[0].url(), /^blob:/);
    const answer = await ask(page);
    console.log(`CPU answer ${JSON.stringify(answer.text)} ${answer.tokenIds}; ${answer.timings}`);
    assertNativeAnswer(answer, problems);
    assert.deepEqual(answer.words.slice(0, 5), ["What", "shape", "is", "the", "blue"]);

    const before = await canvasPixels(page);
    await page.locator(".lx-word").first().click();
    await page.waitForFunction(() => document.querySelector(".lavender-explorer-ui").dataset.selected === "0");
    const withMap = await canvasPixels(page);
    assert.notEqual(withMap, before, "the overlay did not change the canvas");

    // The example bundle carries its training run's Aligner: training's aggregation is the
    // default, and every aggregation, layer and head gives other maps, drawn again.
    const mapsVersion = () => page.evaluate(() => Number(document.querySelector(".lavender-explorer-ui").dataset.mapsVersion));
    const redrawn = async (change) => {
      const [version, before] = [await mapsVersion(), await canvasPixels(page)];
      await change();
      await page.waitForFunction((v) => Number(document.querySelector(".lavender-explorer-ui").dataset.mapsVersion) > v, version);
      return (await canvasPixels(page)) !== before;
    };
    assert.equal(await page.inputValue(".lx-aggregation"), "aligner-per-layer");
    assert.deepEqual(
      await page.$$eval(".lx-aggregation option", (options) => options.map((o) => o.value)),
      ["aligner-per-layer", "mean-first", "max-max", "grid"],
    );
    assert.ok(await page.isDisabled(".lx-layer"), "the layer choice applies to the grid only");
    assert.ok(await redrawn(() => page.selectOption(".lx-aggregation", "mean-first")), "mean-first drew the same picture");
    assert.ok(await redrawn(() => page.selectOption(".lx-aggregation", "max-max")), "max-max drew the same picture");
    assert.ok(await redrawn(() => page.selectOption(".lx-aggregation", "grid")), "the grid drew the same picture");
    assert.ok(await redrawn(() => page.selectOption(".lx-layer", { index: 2 })), "layer 0 drew the same picture");
    assert.ok(await redrawn(() => page.selectOption(".lx-head", { index: 3 })), "head 1 drew the same picture");

    // Keyboard: a word button takes focus and Enter selects it.
    await page.locator(".lx-word").nth(1).focus();
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelector(".lavender-explorer-ui").dataset.selected === "1");
    await page.screenshot({ path: join(artifacts, "explorer-cpu.png"), fullPage: true });

    const [png] = await Promise.all([page.waitForEvent("download"), page.click(".lx-export-png")]);
    assert.equal(png.suggestedFilename(), "lavender-overlay.png");
    const pngPath = join(artifacts, "explorer-overlay.png");
    await png.saveAs(pngPath);
    assert.deepEqual([...readFileSync(pngPath).subarray(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
    const [json] = await Promise.all([page.waitForEvent("download"), page.click(".lx-export-json")]);
    const jsonPath = join(artifacts, "explorer-maps.json");
    await json.saveAs(jsonPath);
    const maps = JSON.parse(readFileSync(jsonPath, "utf8"));
    assert.equal(maps.words.length, answer.words.length);
    assert.equal(maps.words[0].map.length, maps.size);

    // A second visit takes the checked files from the Cache API.
    await page.reload();
    const again = await modelState(page);
    assert.equal(again.state, "ready");
    assert.match(again.status, /files from the cache/);
    // "Clear cached models" empties it: the next visit downloads everything again.
    await page.click(".lx-clear-cache");
    await page.waitForFunction(() => document.querySelector(".lx-cache-note").textContent.includes("cleared"));
    await page.reload();
    const fresh = await modelState(page);
    assert.equal(fresh.state, "ready");
    assert.doesNotMatch(fresh.status, /from the cache/);
  });
});

/** The tensor `name` of a safetensors file, as a flat Float32Array (F32 only). */
function readSafetensors(path, name) {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
  const entry = header[name];
  assert.equal(entry.dtype, "F32");
  const [start, end] = entry.data_offsets.map((offset) => offset + 8 + headerLength);
  const data = bytes.subarray(start, end);
  return { shape: entry.shape, values: new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)) };
}

test("examples: the teacher's map of a word is drawn beside the student's, with their MSE", { timeout: 600_000 }, async () => {
  const manifest = JSON.parse(readFileSync(join(dist, "example", "manifest.json"), "utf8"));
  const example = manifest.examples.find((e) => e.id === "ood-00001");
  assert.ok(example, "the example bundle has no ood-00001 example");
  await withPage({}, async (page, problems) => {
    await page.goto(server.url + "?backend=cpu");
    assert.equal((await modelState(page)).state, "ready");
    assert.equal(await page.locator(".lx-example").count(), manifest.examples.length);
    // The default image has the pixels of the ood-00003 example, so it counts as that example.
    await page.locator('.lx-example[data-id="ood-00003"][aria-pressed="true"]').waitFor();

    await page.click('.lx-example[data-id="ood-00001"]');
    await page.locator('.lx-example[data-id="ood-00001"][aria-pressed="true"]').waitFor();
    const answer = await ask(page);
    assert.equal(answer.state, "done", `${answer.error}\n${problems.join("\n")}`);
    // "blue" is in the question and in the teacher's caption ("a yellow square, a blue circle
    // and a green triangle from left to right").
    const blue = answer.words.indexOf("blue");
    assert.ok(blue >= 0, `no "blue" among ${answer.words}`);
    await page.locator(".lx-word").nth(blue).click();
    const comparison = page.locator(".lx-comparison[data-mse]");
    await comparison.waitFor();
    assert.ok(await page.locator(".lx-teacher").isVisible(), "the teacher's map is not shown");
    const shown = Number(await comparison.getAttribute("data-mse"));
    await page.screenshot({ path: join(artifacts, "explorer-teacher.png"), fullPage: true });

    // The same MSE from the exported student map and the bundle's teacher map file.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click(".lx-export-json")]);
    const jsonPath = join(artifacts, "explorer-teacher-maps.json");
    await download.saveAs(jsonPath);
    const student = JSON.parse(readFileSync(jsonPath, "utf8")).words[blue].map.flat();
    const teacher = readSafetensors(join(dist, "example", example.maps), "maps");
    const side = example.side;
    assert.deepEqual(teacher.shape, [example.words.length, side, side]);
    assert.equal(student.length, side * side, "the example bundle's map sizes differ");
    const row = example.words.indexOf("blue");
    let sum = 0;
    for (let i = 0; i < side * side; i++) sum += (student[i] - teacher.values[row * side * side + i]) ** 2;
    const expected = sum / (side * side);
    assert.ok(expected > 0, "student and teacher maps are identical");
    assert.ok(Math.abs(shown - expected) <= 1e-5 * Math.max(1, expected), `page MSE ${shown}, expected ${expected}`);

    // The whole view as one PNG: the student's overlay and the teacher's, side by side under
    // their labels.
    const [viewPng] = await Promise.all([page.waitForEvent("download"), page.click(".lx-export-view")]);
    assert.equal(viewPng.suggestedFilename(), "lavender-view.png");
    const viewPath = join(artifacts, "explorer-view.png");
    await viewPng.saveAs(viewPath);
    const png = readFileSync(viewPath);
    const [width, height] = [png.readUInt32BE(16), png.readUInt32BE(20)];
    const canvas = await page.$eval(".lx-canvas", (c) => [c.width, c.height]);
    assert.deepEqual([width, height], [2 * canvas[0] + 8, canvas[1] + 28]);

    // A word the teacher's caption lacks says so, and hides the teacher's picture.
    await page.locator(".lx-word").first().click();
    await page.locator(".lx-comparison", { hasText: "The teacher has no map for “What”" }).waitFor();
    assert.equal(await page.locator(".lx-teacher").isVisible(), false);
  });
});

test("the trained student looks at the object its answer names (on this example)", { timeout: 600_000 }, async () => {
  // A property of the Lavender-trained example student, not of a fixture: asked for the shape
  // of the blue object in the default scene, it answers "circle", and the answer word's map
  // (the mean over heads and layers, as `lavender attend` and the study's pointing game read
  // it) peaks inside the circle's ground-truth mask. The study reports how often this holds
  // over the whole OOD test; this is one case where it does.
  await withPage({}, async (page, problems) => {
    await page.goto(server.url + "?backend=cpu");
    assert.equal((await modelState(page)).state, "ready");
    const answer = await ask(page);
    assert.equal(answer.state, "done", `${answer.error}\n${problems.join("\n")}`);
    const circle = answer.words.lastIndexOf("circle");
    assert.ok(circle >= 0, `the answer is ${JSON.stringify(answer.text)}`);
    await page.selectOption(".lx-aggregation", "grid");
    await page.selectOption(".lx-layer", "mean");
    await page.selectOption(".lx-head", "mean");
    await page.locator(".lx-word").nth(circle).click();
    const [download] = await Promise.all([page.waitForEvent("download"), page.click(".lx-export-json")]);
    const jsonPath = join(artifacts, "explorer-pointing-maps.json");
    await download.saveAs(jsonPath);
    const maps = JSON.parse(readFileSync(jsonPath, "utf8"));
    const map = maps.words[circle].map.flat();
    const side = maps.size;
    let best = 0;
    for (let i = 1; i < map.length; i++) if (map[i] > map[best]) best = i;
    // The mask's pixels, decoded by the page.
    const mask = await page.evaluate(async (url) => {
      const image = new Image();
      image.src = url;
      await image.decode();
      const canvas = document.createElement("canvas");
      [canvas.width, canvas.height] = [image.width, image.height];
      const context = canvas.getContext("2d");
      context.drawImage(image, 0, 0);
      const data = context.getImageData(0, 0, image.width, image.height).data;
      return { width: image.width, height: image.height, red: [...data.filter((_, i) => i % 4 === 0)] };
    }, CIRCLE_MASK);
    // The centre of the map's top cell, on the mask's pixels (`maps::pointing::points_inside`).
    const x = Math.floor(((best % side) + 0.5) * mask.width / side);
    const y = Math.floor((Math.floor(best / side) + 0.5) * mask.height / side);
    assert.ok(mask.red[y * mask.width + x] > 0, `the map of "circle" peaks at (${x}, ${y}), outside the circle`);
    await page.screenshot({ path: join(artifacts, "explorer-pointing.png"), fullPage: true });
  });
});

test("a newer load supersedes one in flight: its replies do not leak into the page", { timeout: 300_000 }, async () => {
  await withPage({}, async (page, problems) => {
    await page.goto(server.url + "?backend=cpu");
    assert.equal((await modelState(page)).state, "ready");
    // Two loads back to back: only the second one may speak.
    await page.evaluate(() => {
      const button = document.querySelector(".lx-load-model");
      button.click();
      button.click();
    });
    const loaded = await modelState(page);
    assert.equal(loaded.state, "ready", `${loaded.error}\n${problems.join("\n")}`);
    assert.match(loaded.status, /^Model loaded from /);
    // The first load's late replies (progress, "Building the model…") would show up here.
    await page.waitForTimeout(1500);
    const later = await modelState(page);
    assert.equal(later.status, loaded.status);
    const answer = await ask(page);
    assert.equal(answer.state, "done", `${answer.error}\n${problems.join("\n")}`);
  });
});

test("narrow screen: the explorer fits a phone's width", { timeout: 300_000 }, async () => {
  await withPage({ viewport: { width: 360, height: 800 } }, async (page) => {
    await page.goto(server.url + "?backend=cpu");
    assert.equal((await modelState(page)).state, "ready");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await page.screenshot({ path: join(artifacts, "explorer-narrow.png"), fullPage: true });
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  });
});

// The Q8 weights run dequantized on WebGPU (web/src/dequantize.rs says why).
test("WebGPU: the example answers as the native CLI", { timeout: 600_000 }, async () => {
  await withPage({}, async (page, problems) => {
    await page.goto(server.url);
    const loaded = await modelState(page);
    assert.equal(loaded.state, "ready", `${loaded.error}\n${problems.join("\n")}`);
    assert.equal(loaded.backend, "webgpu");
    assert.match(loaded.status, /Q8 weights were expanded to f32 for WebGPU/);
    const answer = await ask(page);
    await page.screenshot({ path: join(artifacts, "explorer-webgpu.png"), fullPage: true });
    console.log(`WebGPU answer ${JSON.stringify(answer.text)} ${answer.tokenIds}; ${answer.timings}`);
    assertNativeAnswer(answer, problems);
  });
});

test("WebGPU: a model beyond the adapter's buffer limit is refused before its weights download", { timeout: 300_000 }, async () => {
  await withPage({}, async (page) => {
    // Every bundle file the page (or its worker) asks the server for.
    const fetched = [];
    page.context().on("request", (request) => {
      const name = new URL(request.url()).pathname.split("/").pop();
      if (new URL(request.url()).pathname.includes("/example/")) fetched.push(name);
    });
    await page.goto(server.url + "?max-buffer=1000");
    const loaded = await modelState(page);
    assert.equal(loaded.backend, "webgpu");
    assert.equal(loaded.state, "error");
    assert.match(loaded.error, /too large for the WebGPU adapter/);
    // The config was read (so requests are seen), the weights never asked for.
    assert.ok(fetched.includes("config.json"), fetched.join(" "));
    assert.ok(!fetched.includes("model.bpk"), fetched.join(" "));
  });
});

test("an undecodable image is reported in the page", { timeout: 300_000 }, async () => {
  await withPage({}, async (page) => {
    await page.goto(server.url + "?backend=cpu");
    await modelState(page);
    await page.fill(".lx-image-url", "style.css");
    await page.click(".lx-load-image");
    const error = page.locator(".lx-error[data-kind=image]");
    await error.waitFor();
    assert.match(await error.textContent(), /cannot decode the image style\.css/);
  });
});

test("a page that forbids workers says so instead of loading nothing", { timeout: 300_000 }, async () => {
  await withPage({}, async (page) => {
    // A content security policy without `blob:` workers, as a strict embedding page may have.
    await page.route(server.url + "?backend=cpu", async (route) => {
      const response = await route.fetch();
      await route.fulfill({
        response,
        headers: { ...response.headers(), "content-security-policy": "worker-src 'none'" },
      });
    });
    await page.goto(server.url + "?backend=cpu");
    const loaded = await modelState(page);
    assert.equal(loaded.state, "error");
    assert.match(loaded.error, /The computation stopped: .*worker/);
    assert.equal(page.workers().length, 0);
  });
});

test("a tampered bundle shows the hash error in the page", { timeout: 300_000 }, async () => {
  const copy = mkdtempSync(join(tmpdir(), "lavender-tampered-"));
  cpSync(dist, copy, { recursive: true });
  const weights = join(copy, "example", "model.bpk");
  const bytes = readFileSync(weights);
  bytes[bytes.length >> 1] ^= 0xff;
  writeFileSync(weights, bytes);
  const tampered = await serveStatic(copy);
  try {
    await withPage({}, async (page) => {
      await page.goto(tampered.url + "?backend=cpu");
      const loaded = await modelState(page);
      await page.screenshot({ path: join(artifacts, "explorer-tampered.png"), fullPage: true });
      assert.equal(loaded.state, "error");
      assert.match(loaded.error, /example\/model\.bpk is damaged or changed: its SHA-256 is [0-9a-f]{64}/);
    });
  } finally {
    await tampered.close();
    rmSync(copy, { recursive: true, force: true });
  }
});

test("a bundle's downloads stop at the manifest's sizes", { timeout: 300_000 }, async () => {
  const copy = mkdtempSync(join(tmpdir(), "lavender-oversized-"));
  cpSync(dist, copy, { recursive: true });
  const weights = join(copy, "example", "model.bpk");
  const original = readFileSync(weights);
  // A file longer than listed: the download stops there (it used to read all of it first).
  writeFileSync(weights, Buffer.concat([original, Buffer.alloc(1 << 20)]));
  const served = await serveStatic(copy);
  try {
    await withPage({}, async (page) => {
      await page.goto(served.url + "?backend=cpu");
      const loaded = await modelState(page);
      assert.equal(loaded.state, "error");
      assert.match(loaded.error, new RegExp(`example/model\\.bpk is longer than the ${original.length} bytes expected`));
    });
    // A manifest listing more than wasm32 can hold: refused before any file is fetched.
    writeFileSync(weights, original);
    const manifestPath = join(copy, "example", "manifest.json");
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
    manifest.files["model.bpk"].size = 3 * 2 ** 30;
    writeFileSync(manifestPath, JSON.stringify(manifest));
    await withPage({}, async (page) => {
      const fetched = [];
      page.on("request", (request) => fetched.push(new URL(request.url()).pathname));
      await page.goto(served.url + "?backend=cpu");
      const loaded = await modelState(page);
      assert.equal(loaded.state, "error");
      assert.match(loaded.error, /lists 3\d{9} bytes of files, more than the 2147483648 a page can hold/);
      assert.ok(!fetched.some((path) => path.endsWith("model.bpk")), fetched.join(", "));
    });
  } finally {
    await served.close();
    rmSync(copy, { recursive: true, force: true });
  }
});

test("the embed page mounts two explorers and unmounts one cleanly", { timeout: 600_000 }, async () => {
  await withPage({}, async (page, problems) => {
    await page.goto(server.url + "embed.html?backend=cpu");
    assert.equal((await modelState(page, 0)).state, "ready");
    assert.equal((await modelState(page, 1)).state, "ready");
    // Both explorers share the page's inference worker, and the model they both name.
    assert.equal(page.workers().length, 1);
    assert.equal(await page.workers()[0].evaluate(() => self.lavenderModelBuilds), 1);
    const shared = await page.$$eval(".lavender-explorer-ui", (nodes) => nodes.map((n) => n.dataset.modelShared));
    assert.deepEqual(shared.sort(), ["false", "true"]);
    await page.screenshot({ path: join(artifacts, "embed-two.png"), fullPage: true });
    await page.evaluate(async () => (await window.secondExplorer).unmount());
    assert.equal(await page.locator(".lavender-explorer-ui").count(), 1);
    assert.equal(await page.locator("#second").innerHTML(), "");
    // The remaining one still works.
    const answer = await ask(page, 0);
    assertNativeAnswer(answer, problems);
    // Removing the custom element unmounts it too, and the last explorer to go stops the
    // worker (its memory goes back to the browser).
    const workerGone = page.workers()[0].evaluate(() => new Promise(() => {})).catch(() => "closed");
    await page.evaluate(() => document.getElementById("first").remove());
    assert.equal(await page.locator(".lavender-explorer-ui").count(), 0);
    assert.equal(await workerGone, "closed");
    assert.equal(page.workers().length, 0);
    assert.deepEqual(problems.filter((p) => p.startsWith("pageerror")), []);
  });
});
