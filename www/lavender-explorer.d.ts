// Types of lavender-explorer.js: the `<lavender-explorer>` element and `mountExplorer`.
// Guide with a runnable example: docs.html.

/** Where a model load is: the backend starting, the bundle downloading, the model building. */
export interface ProgressDetail {
  phase: "start" | "download" | "build";
  /** Bytes of the whole bundle downloaded so far (0 outside the download). */
  loaded: number;
  /** Bytes of the whole bundle (0 before the manifest is read). */
  total: number;
  /** The file being downloaded. */
  file: string;
}

export interface ReadyDetail {
  backend: "webgpu" | "cpu";
  /** The model is another explorer's copy on this page (same bundle URL and backend). */
  shared: boolean;
  /** Side of the attention maps. */
  mapSize: number;
  /** The bundle carries the trained Aligner (training's aggregations are available). */
  aligner: boolean;
  loadMs: number;
}

/** The answer so far, as it streams in. */
export interface TokenDetail {
  tokenIds: number[];
  text: string;
}

export interface Word {
  text: string;
  /** From the answer (else from the prompt). */
  answer: boolean;
}

export interface AnswerDetail {
  text: string;
  tokenIds: number[];
  /** The prompt's words, then the answer's: the indices `selectWord` takes. */
  words: Word[];
}

export interface MapChoice {
  /** "aligner-per-layer" | "mean-first" | "max-max" | "grid". */
  aggregation: string;
  /** "mean", "max" or a cross-attention layer's index (grid only). */
  layer: string;
  /** "mean", "max" or a head's index (grid only). */
  head: string;
  /**
   * "per-map": each word's map spans [0, 1] on its own; "shared": one range for all the
   * answer's words, so a word that drew little attention stays faint.
   */
  normalisation: "per-map" | "shared";
}

/** The selected word and where the student looked for it. */
export interface WordDetail {
  index: number;
  text: string;
  answer: boolean;
  /** Side of `map`. */
  size: number;
  /** `size * size` values in [0, 1], row-major, over the image. */
  map: Float32Array;
  choice: MapChoice;
}

export interface ErrorDetail {
  /** "model" | "image" | "run" | "maps" | "draw" | "export" | "worker" | "panic" | "start". */
  kind: string;
  message: string;
}

export interface ExplorerEventMap {
  "lavender-progress": CustomEvent<ProgressDetail>;
  "lavender-ready": CustomEvent<ReadyDetail>;
  "lavender-token": CustomEvent<TokenDetail>;
  "lavender-answer": CustomEvent<AnswerDetail>;
  "lavender-word": CustomEvent<WordDetail>;
  "lavender-error": CustomEvent<ErrorDetail>;
}

export declare const EVENTS: Readonly<{
  progress: "lavender-progress";
  ready: "lavender-ready";
  token: "lavender-token";
  answer: "lavender-answer";
  word: "lavender-word";
  error: "lavender-error";
}>;

export interface ExplorerOptions {
  /** Bundle folder URL (relative to the page); default "example/". */
  model?: string;
  /** Image URL (relative to the page). */
  image?: string;
  /** The question shown. */
  prompt?: string;
  /** "cpu" forces the CPU backend; otherwise WebGPU when the browser has it. */
  backend?: "cpu" | "auto";
  /** Most tokens an answer may have (default 48). */
  maxNewTokens?: number;
  /** "compact" (default when `model` is given): no loading controls; "full": all of them. */
  layout?: "compact" | "full";
  onProgress?: (detail: ProgressDetail) => void;
  onReady?: (detail: ReadyDetail) => void;
  onToken?: (detail: TokenDetail) => void;
  onAnswer?: (detail: AnswerDetail) => void;
  onWord?: (detail: WordDetail) => void;
  onError?: (detail: ErrorDetail) => void;
}

export interface ExplorerHandle {
  /** The element the explorer is mounted in (its events are dispatched there). */
  readonly element: HTMLElement;
  /** Loads another bundle; `backend` also changes the backend. */
  loadModel(url: string, options?: { backend?: "cpu" | "auto" }): void;
  setImage(url: string): void;
  setPrompt(prompt: string): void;
  /** Asks `prompt` (or the question shown) about the image shown. */
  ask(prompt?: string): Promise<AnswerDetail>;
  /** Selects word `index` of the last answer; its map arrives as `onWord`. */
  selectWord(index: number): void;
  /** Removes the explorer; its model is freed once no explorer on the page uses it. */
  unmount(): void;
}

export declare function mountExplorer(
  element: HTMLElement,
  options?: ExplorerOptions,
): Promise<ExplorerHandle>;

/** `<lavender-explorer model image prompt backend layout max-new-tokens>`. */
export declare class LavenderExplorer extends HTMLElement {
  static readonly observedAttributes: string[];
  /** Resolves to the handle once mounted; null while not in the page. */
  explorer: Promise<ExplorerHandle> | null;
  addEventListener<K extends keyof ExplorerEventMap>(
    type: K,
    listener: (this: LavenderExplorer, event: ExplorerEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

declare global {
  interface HTMLElementTagNameMap {
    "lavender-explorer": LavenderExplorer;
  }
}
