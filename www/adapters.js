// LoRAs and textual-inversion embeddings on the page: the list (name, source, weight slider,
// status), adding from a URL or a file, removing, the cached-files list, and loading them into
// the worker's engine one at a time whenever a model is (re)loaded. app.js owns the page state
// and hands this module a small interface (see createAdapters).
//
// The engine drops every adapter when another model loads, so the list is the truth: after each
// model load every entry is loaded again (URLs from the OPFS cache, files from the File object).
import { LORA_WEIGHT, absUrl, adapterName, loraTagNames, validAdapterName } from "./params.js";
import { formatBytes, progressText } from "./format.js";
import { $, el } from "./dom.js";

const LABEL = { lora: "LoRA", embedding: "embedding" };

/**
 * `app`: {post(msg), fail(message), canRun() -> bool (device ready, a model loaded, no job),
 * busy() -> bool, begin() (a load starts: busy, state "loading"), end(state) (not busy, then
 * state "loaded" | "cancelled"), refresh() (re-evaluate the page's buttons)}.
 */
export function createAdapters(app) {
  const items = []; // {id, kind, name, url, file, weight, status, hash, note}
  let nextId = 1;
  let current = null; // the item the worker is loading
  let then = null; // continuation after the pending entries are loaded (autorun)

  function add(kind, { url = null, file = null, weight = 1 }) {
    const name = adapterName(url || file.name);
    if (!validAdapterName(kind, name)) {
      return app.fail(
        kind === "lora"
          ? `LoRA name '${name}' (from the file name) must be non-empty without ':', '<' or '>'; rename the file`
          : `embedding name '${name}' (from the file name) must be non-empty without spaces or any of ()[]{}<>:,\\|"'; rename the file`,
      );
    }
    if (items.some((i) => i.kind === kind && i.name === name)) {
      return app.fail(`a ${LABEL[kind]} named '${name}' is already in the list; remove it first`);
    }
    items.push({ id: nextId++, kind, name, url, file, weight, status: "pending", hash: null, note: "" });
    render();
    pump();
  }

  /** Load the next pending entry if the worker is free; at the end run the continuation. */
  function pump() {
    if (current) return;
    if (!app.canRun()) return;
    const next = items.find((i) => i.status === "pending");
    if (!next) {
      const k = then;
      then = null;
      if (k) k();
      return;
    }
    current = next;
    next.status = "loading";
    next.note = "opening…";
    const source = next.url ? { kind: "url", url: next.url } : { kind: "file", file: next.file };
    app.begin();
    app.post({ type: "loadAdapter", kind: next.kind, name: next.name, source });
    render();
  }

  const find = (msg) => items.find((i) => i.kind === msg.kind && i.name === msg.name);

  const handlers = {
    adapterProgress(msg) {
      const it = find(msg);
      if (!it) return;
      const what = { download: "downloading", cache: "reading the cache", file: "reading the file" }[msg.phase] || msg.phase;
      it.note = `${what}: ${progressText(msg)}`;
      const row = $("adapter-list").querySelector(`[data-id="${it.id}"] .note`);
      if (row) row.textContent = it.note;
    },
    adapterLoaded(msg) {
      const it = find(msg);
      if (it) {
        it.status = "loaded";
        it.hash = msg.hash;
        it.note = { network: "downloaded", cache: "from the cache", file: "from a file" }[msg.source] || msg.source;
      }
      current = null;
      app.end("loaded");
      render();
      pump();
    },
    adapterFailed(msg) {
      const it = find(msg);
      current = null;
      then = null;
      if (it) {
        it.status = msg.cancelled ? "pending" : "failed";
        it.note = msg.cancelled ? "cancelled; loads with the next model or Retry" : msg.message;
      }
      render();
      if (msg.cancelled) app.end("cancelled");
      // Engine messages already start with the name ("style: …").
      else app.fail(`${LABEL[msg.kind]} ${msg.message.startsWith(`${msg.name}:`) ? "" : `${msg.name}: `}${msg.message}`);
    },
    adapterUnloaded() {},
  };

  function remove(it) {
    const i = items.indexOf(it);
    if (i < 0 || it === current) return;
    items.splice(i, 1);
    if (it.status === "loaded") app.post({ type: "unloadAdapter", kind: it.kind, name: it.name });
    render();
  }

  function retry(it) {
    it.status = "pending";
    it.note = "";
    render();
    pump();
  }

  function render() {
    const list = $("adapter-list");
    list.textContent = "";
    for (const it of items) {
      const li = el("li", { dataset: { id: String(it.id), kind: it.kind, status: it.status }, title: it.url || it.file?.name || "" });
      li.append(
        el("span", { class: "kind", textContent: it.kind === "lora" ? "LoRA" : "TI" }),
        el("span", { class: "name", textContent: it.name }),
      );
      if (it.kind === "lora") {
        const slider = el("input", {
          type: "range",
          class: "weight",
          min: String(Math.min(LORA_WEIGHT.sliderMin, it.weight)),
          max: String(Math.max(LORA_WEIGHT.sliderMax, it.weight)),
          step: String(LORA_WEIGHT.step),
          value: String(it.weight),
          "aria-label": `weight of ${it.name}`,
        });
        const out = el("output", { class: "weight-value", textContent: it.weight.toFixed(2) });
        slider.addEventListener("input", () => {
          it.weight = Math.round(Number(slider.value) / LORA_WEIGHT.step) * LORA_WEIGHT.step;
          it.weight = Number(it.weight.toFixed(2));
          out.textContent = it.weight.toFixed(2);
        });
        li.append(slider, out);
      }
      if (it.status === "failed") {
        const r = el("button", { type: "button", class: "small", textContent: "Retry", dataset: { act: "retry" } });
        r.addEventListener("click", () => retry(it));
        li.append(r);
      }
      const del = el("button", { type: "button", class: "small", textContent: "Remove", dataset: { act: "remove" } });
      del.addEventListener("click", () => remove(it));
      li.append(del);
      const status = {
        pending: "waiting for a model",
        loading: "loading",
        loaded: "",
        failed: "failed",
      }[it.status];
      li.append(el("div", { class: `note muted${it.status === "failed" ? " failed" : ""}`, textContent: [status, it.note].filter(Boolean).join(": ") }));
      list.append(li);
    }
    if (!items.length) list.append(el("li", { class: "empty muted", textContent: "None. Add a LoRA or an embedding by URL or file." }));
    updateControls();
  }

  function renderCache(adapters) {
    const list = $("adapter-cache");
    list.textContent = "";
    const entries = [
      ...(adapters?.lora || []).map((e) => ({ ...e, kind: "lora" })),
      ...(adapters?.embedding || []).map((e) => ({ ...e, kind: "embedding" })),
    ];
    if (!entries.length) {
      list.append(el("li", { class: "empty muted", textContent: "No cached LoRAs or embeddings." }));
      return;
    }
    for (const e of entries) {
      const size = el("span", {
        class: `size${e.complete ? "" : " partial"}`,
        textContent: e.complete ? formatBytes(e.size) : `partial ${formatBytes(e.stored)}`,
      });
      const use = el("button", { type: "button", class: "small", textContent: "Add", dataset: { act: "add" } });
      use.addEventListener("click", () => add(e.kind, { url: e.url }));
      const del = el("button", { type: "button", class: "small", textContent: "Delete", dataset: { act: "delete" } });
      del.addEventListener("click", () => app.post({ type: "deleteCache", key: e.key, store: e.kind }));
      list.append(el("li", { title: e.url }, el("span", { class: "name", textContent: `${LABEL[e.kind]} ${e.name}` }), size, use, del));
    }
    updateControls();
  }

  function updateControls() {
    const busy = app.busy();
    for (const id of ["adapter-add", "adapter-file"]) $(id).disabled = busy;
    for (const b of document.querySelectorAll("#adapter-list button, #adapter-cache button")) b.disabled = busy;
  }

  function wire() {
    const addUrl = () => {
      const text = $("adapter-url").value.trim();
      let href;
      try {
        href = absUrl(text, location.href);
      } catch (e) {
        return app.fail(`invalid ${LABEL[$("adapter-kind").value]} URL "${text}": ${e.message}`);
      }
      $("adapter-url").value = "";
      add($("adapter-kind").value, { url: href });
    };
    $("adapter-add").addEventListener("click", addUrl);
    $("adapter-url").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !$("adapter-add").disabled) addUrl();
    });
    $("adapter-file").addEventListener("change", () => {
      const files = [...$("adapter-file").files];
      $("adapter-file").value = "";
      for (const file of files) add($("adapter-kind").value, { file });
    });
    render();
  }

  return {
    wire,
    handlers,
    /** Entries from the URL parameters (parseParams' loras / embeddings). */
    init(loras, embeddings) {
      for (const l of loras) items.push({ id: nextId++, kind: "lora", name: l.name, url: l.url, file: null, weight: l.weight, status: "pending", hash: null, note: "" });
      for (const e of embeddings) items.push({ id: nextId++, kind: "embedding", name: e.name, url: e.url, file: null, weight: 1, status: "pending", hash: null, note: "" });
      render();
    },
    /** A model load starts: the engine drops every adapter. */
    modelUnloaded() {
      for (const it of items) if (it.status !== "failed") it.status = "pending";
      current = null;
      render();
    },
    /** A model is loaded: load every entry, then run `k` (if the loads succeed). */
    modelLoaded(k) {
      for (const it of items) it.status = "pending";
      current = null;
      then = k || null;
      render();
      pump();
    },
    /** The worker reported an error (device lost, or an adapter message it refused). */
    workerError() {
      if (current) {
        current.status = "failed";
        current = null;
      }
      then = null;
      render();
    },
    /** `Settings.loras`: the loaded LoRAs with their slider weights, except those a prompt tag
     * `<lora:NAME:WEIGHT>` names (the tag's weight applies, not both). */
    loras(prompt) {
      const tagged = new Set(loraTagNames(prompt || ""));
      return items.filter((i) => i.kind === "lora" && i.status === "loaded" && !tagged.has(i.name)).map((i) => ({ name: i.name, weight: i.weight }));
    },
    /** The URL-backed entries, for a shareable link (toQuery's `adapters`). */
    shareable() {
      return {
        loras: items.filter((i) => i.kind === "lora" && i.url).map((i) => ({ url: i.url, weight: i.weight })),
        embeddings: items.filter((i) => i.kind === "embedding" && i.url).map((i) => ({ url: i.url })),
      };
    },
    renderCache,
    updateControls,
  };
}
