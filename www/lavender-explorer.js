// The embeddable explorer: `<lavender-explorer model="URL" image="URL"></lavender-explorer>`
// and `mountExplorer(element, options)`. Loads the WebAssembly module once per page (from
// ./pkg/ next to this script) and mounts the Leptos explorer into the element.
import init, { mount_explorer } from "./pkg/lavender_web.js";

let ready;
function loadModule() {
  ready ??= init({ module_or_path: new URL("./pkg/lavender_web_bg.wasm", import.meta.url) });
  return ready;
}

/**
 * Mounts an explorer into `element`. Options (all optional): `model` (bundle folder URL,
 * default `example/` relative to the page), `image` (URL), `prompt`, `backend` ("cpu" forces
 * the CPU), `maxNewTokens`. Resolves to a handle whose `unmount()` removes it.
 */
export async function mountExplorer(element, options = {}) {
  await loadModule();
  const handle = mount_explorer(element, options);
  let mounted = true;
  return {
    unmount() {
      if (!mounted) return;
      mounted = false;
      handle.unmount();
      handle.free();
    },
  };
}

class LavenderExplorer extends HTMLElement {
  connectedCallback() {
    if (this.mounting) return;
    const options = {
      model: this.getAttribute("model") ?? undefined,
      image: this.getAttribute("image") ?? undefined,
      prompt: this.getAttribute("prompt") ?? undefined,
      backend: this.getAttribute("backend") ?? undefined,
    };
    this.mounting = mountExplorer(this, options)
      .then((handle) => {
        // Removed from the page while the module was loading: undo at once.
        if (this.isConnected) this.handle = handle;
        else handle.unmount();
      })
      .catch((error) => {
        const message = document.createElement("p");
        message.className = "lx-error";
        message.setAttribute("role", "alert");
        message.textContent = "The lavender explorer could not start: " + error;
        this.append(message);
      });
  }

  disconnectedCallback() {
    this.handle?.unmount();
    this.handle = null;
    this.mounting = null;
  }
}

if (!customElements.get("lavender-explorer")) {
  customElements.define("lavender-explorer", LavenderExplorer);
}
