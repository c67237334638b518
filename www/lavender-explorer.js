// The embeddable lavender explorer: the `<lavender-explorer>` element and `mountExplorer`.
// Loads the WebAssembly module once per page (from ./pkg/ next to this script) and its
// stylesheet (lavender-explorer.css, next to it too, scoped to the explorer), then mounts the
// Leptos explorer into the element. Types: lavender-explorer.d.ts; guide: docs.html.
import init, { mount_explorer } from "./pkg/lavender-web.js";

/** The explorer's events, dispatched on the element it is mounted in (detail: the data). */
export const EVENTS = Object.freeze({
  progress: "lavender-progress",
  ready: "lavender-ready",
  token: "lavender-token",
  answer: "lavender-answer",
  word: "lavender-word",
  error: "lavender-error",
});

const CALLBACKS = {
  onProgress: EVENTS.progress,
  onReady: EVENTS.ready,
  onToken: EVENTS.token,
  onAnswer: EVENTS.answer,
  onWord: EVENTS.word,
  onError: EVENTS.error,
};

let ready;
function loadModule() {
  ready ??= init({ module_or_path: new URL("./pkg/lavender-web_bg.wasm", import.meta.url) });
  return ready;
}

const STYLESHEET = new URL("./lavender-explorer.css", import.meta.url).href;
function loadStyles() {
  const present = [...document.querySelectorAll("link[rel=stylesheet]")].some((link) => link.href === STYLESHEET);
  if (present) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = STYLESHEET;
  link.dataset.lavenderExplorer = "";
  document.head.append(link);
}

/**
 * Mounts an explorer into `element`; resolves to its handle. Options (all optional): `model`
 * (bundle folder URL, default `example/` relative to the page), `image` (URL), `prompt`,
 * `backend` ("cpu" forces the CPU), `maxNewTokens`, `layout` ("compact", the default when
 * `model` is given, or "full"), and the callbacks `onProgress`, `onReady`, `onToken`,
 * `onAnswer`, `onWord`, `onError`, each called with its event's detail.
 */
export async function mountExplorer(element, options = {}) {
  loadStyles();
  await loadModule();
  const listeners = [];
  for (const [option, name] of Object.entries(CALLBACKS)) {
    const callback = options[option];
    if (typeof callback !== "function") continue;
    const listener = (event) => callback(event.detail);
    element.addEventListener(name, listener);
    listeners.push([name, listener]);
  }
  const layout = options.layout ?? (options.model ? "compact" : "full");
  let handle;
  try {
    handle = mount_explorer(element, {
      model: options.model,
      image: options.image,
      prompt: options.prompt,
      backend: options.backend,
      maxNewTokens: options.maxNewTokens,
      layout,
    });
  } catch (error) {
    for (const [name, listener] of listeners) element.removeEventListener(name, listener);
    throw error;
  }
  let mounted = true;
  const live = () => {
    if (!mounted) throw new Error("the explorer was unmounted");
    return handle;
  };
  return {
    element,
    /** Loads another bundle; `{ backend: "cpu" | "auto" }` also changes the backend. */
    loadModel(url, { backend } = {}) {
      live().load_model(url, backend);
    },
    setImage(url) {
      live().set_image(url);
    },
    setPrompt(prompt) {
      live().set_prompt(prompt);
    },
    /**
     * Asks `prompt` (or the question shown) about the image shown; resolves to the answer
     * event's detail, rejects with the error that stopped it.
     */
    ask(prompt) {
      const explorer = live();
      if (prompt !== undefined) explorer.set_prompt(prompt);
      return new Promise((resolve, reject) => {
        const done = () => {
          element.removeEventListener(EVENTS.answer, onAnswer);
          element.removeEventListener(EVENTS.error, onError);
        };
        const onAnswer = (event) => {
          done();
          resolve(event.detail);
        };
        const onError = (event) => {
          if (!["run", "worker", "panic"].includes(event.detail.kind)) return;
          done();
          reject(new Error(event.detail.message));
        };
        element.addEventListener(EVENTS.answer, onAnswer);
        element.addEventListener(EVENTS.error, onError);
        try {
          explorer.ask();
        } catch (error) {
          done();
          reject(error);
        }
      });
    },
    /** Selects word `index` of the last answer (prompt words first); its map comes as `onWord`. */
    selectWord(index) {
      live().select_word(index);
    },
    unmount() {
      if (!mounted) return;
      mounted = false;
      for (const [name, listener] of listeners) element.removeEventListener(name, listener);
      handle.unmount();
      handle.free();
    },
  };
}

const ATTRIBUTES = ["model", "image", "prompt", "backend", "layout"];

/**
 * `<lavender-explorer model image prompt backend layout>`: changing an attribute does what it
 * says (a new model or backend loads, a new image shows, a new prompt is set; a new layout
 * mounts the explorer again). `element.explorer` resolves to its handle.
 */
export class LavenderExplorer extends HTMLElement {
  static get observedAttributes() {
    return ATTRIBUTES;
  }

  connectedCallback() {
    if (this.explorer) return;
    const options = {};
    for (const name of ATTRIBUTES) {
      const value = this.getAttribute(name);
      if (value !== null) options[name] = value;
    }
    if (this.hasAttribute("max-new-tokens")) options.maxNewTokens = Number(this.getAttribute("max-new-tokens"));
    const mounting = mountExplorer(this, options);
    this.explorer = mounting;
    mounting
      .then((handle) => {
        // Removed from the page while the module was loading: undo at once.
        if (this.explorer !== mounting) return handle.unmount();
        this.handle = handle;
        // Attributes changed while the module was loading.
        for (const name of ATTRIBUTES) {
          const value = this.getAttribute(name);
          if (value !== (options[name] ?? null)) this.attributeChangedCallback(name, options[name] ?? null, value);
        }
      })
      .catch((error) => {
        const message = document.createElement("p");
        message.className = "lx-error";
        message.setAttribute("role", "alert");
        message.textContent = "The lavender explorer could not start: " + error;
        this.append(message);
        this.dispatchEvent(new CustomEvent(EVENTS.error, {
          bubbles: true,
          composed: true,
          detail: { kind: "start", message: String(error) },
        }));
      });
  }

  attributeChangedCallback(name, previous, value) {
    const handle = this.handle;
    if (!handle || previous === value) return;
    switch (name) {
      case "model":
        handle.loadModel(value ?? "example/");
        break;
      case "backend":
        handle.loadModel(this.getAttribute("model") ?? "example/", { backend: value === "cpu" ? "cpu" : "auto" });
        break;
      case "image":
        if (value) handle.setImage(value);
        break;
      case "prompt":
        handle.setPrompt(value ?? "");
        break;
      case "layout":
        this.disconnectedCallback();
        this.connectedCallback();
        break;
    }
  }

  disconnectedCallback() {
    this.handle?.unmount();
    this.handle = null;
    this.explorer = null;
  }
}

if (!customElements.get("lavender-explorer")) {
  customElements.define("lavender-explorer", LavenderExplorer);
}
