// One photo's card: the original and the result under a before/after slider (on a checkerboard, for
// transparency), each effect's picture, the figures of the answer, download, the request as curl,
// errors in plain words, and the mask brush.

import { ApiError, curlCommand, explain, readResult, send, warningText } from "./api.js";
import { Brush } from "./brush.js";
import { announce, duration, h, label, uid } from "./dom.js";

// At most this many photos are sent at once: the server works one or a few at a time anyway, and a
// queue here keeps each photo's figures its own.
const PARALLEL = 2;
let running = 0;
const waiting = [];

async function slot(signal) {
  if (running < PARALLEL) {
    running += 1;
    return;
  }
  await new Promise((resolve, reject) => {
    const onAbort = () => { // still waiting: leave the queue (a slot handed over is released by run())
      const at = waiting.indexOf(entry);
      if (at >= 0) waiting.splice(at, 1);
      reject(signal.reason);
    };
    const entry = { resolve: () => { signal.removeEventListener("abort", onAbort); resolve(); } };
    waiting.push(entry);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function release() {
  const next = waiting.shift();
  if (next) next.resolve();
  else running -= 1;
}

const stemOf = (name) => (name.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_").slice(0, 100) || "photo");

export class Card {
  constructor(file, settings, { onRemove, onUnauthorized }) {
    this.file = file;
    this.name = file.name || "pasted-photo.png";
    this.stem = stemOf(this.name);
    this.settings = settings;
    this.onRemove = onRemove;
    this.onUnauthorized = onUnauthorized;
    this.urls = { photo: URL.createObjectURL(file), results: [], preview: null };
    this.results = null;
    this.preview = null;
    this.variant = 0;
    this.editing = false;
    this.controller = null;
    this.build();
  }

  build() {
    const id = uid("card");
    this.title = h("h3", { class: "card-title", id: `${id}-title` }, this.name);
    this.status = h("p", { class: "card-status" }, "Waiting…");
    this.before = h("img", { class: "before", alt: `Original photo: ${this.name}`, src: this.urls.photo });
    this.after = h("img", { class: "after", alt: "" });
    this.after.hidden = true;
    this.divider = h("div", { class: "divider", "aria-hidden": "true" });
    this.slider = h("input", { type: "range", class: "compare", min: 0, max: 100, value: 50,
      "aria-label": "Compare: original on the left of the line, result on the right", oninput: () => this.clip() });
    this.canvas = h("canvas", { class: "paint", "aria-hidden": "true" });
    this.spinner = h("div", { class: "busy", "aria-hidden": "true" }, h("span", { class: "spinner" }));
    this.stage = h("div", { class: "stage" }, this.before, this.after, this.divider, this.slider,
      this.canvas, this.spinner);
    this.before.addEventListener("load", () => this.fit());
    // a file the browser cannot show (HEIC, or not a picture): no original to compare with
    this.before.addEventListener("error", () => {
      this.before.hidden = true;
      this.stage.classList.add("no-original");
      this.clip();
      this.stage.hidden = !this.results && !this.error.hidden; // nothing to show
    });
    this.after.addEventListener("load", () => { this.fit(); this.brush.draw(); });
    this.variants = h("div", { class: "variants", role: "group", "aria-label": "Effect shown" });
    this.variants.hidden = true;
    this.error = h("div", { class: "card-error", role: "alert" });
    this.error.hidden = true;
    this.notice = h("p", { class: "card-notice" });
    this.notice.hidden = true;
    this.meta = h("p", { class: "card-meta" });
    this.download = h("a", { class: "btn primary", "aria-disabled": "true" }, "Download");
    this.copy = h("button", { type: "button", class: "btn", disabled: true, onclick: () => this.copyCurl() },
      "Copy as curl");
    this.fix = h("button", { type: "button", class: "btn", "aria-pressed": "false", disabled: true,
      "aria-controls": `${id}-brush`, onclick: () => this.toggleEditing() }, "Fix the cut-out");
    this.brushPanel = this.buildBrushPanel(`${id}-brush`);
    this.brush = new Brush(this.canvas, this.after, () => this.uploadSize(), () => this.strokesChanged());
    new ResizeObserver(() => { if (this.editing) this.brush.draw(); }).observe(this.stage);
    this.el = h("li", { class: "card", "aria-labelledby": `${id}-title` },
      h("div", { class: "card-head" },
        h("div", { class: "card-heading" }, this.title, this.status),
        h("button", { type: "button", class: "icon-btn", "aria-label": `Remove ${this.name}`, title: "Remove",
          onclick: () => this.remove() }, "×")),
      this.stage, this.variants, this.error, this.notice, this.meta,
      this.actions = h("div", { class: "card-actions" }, this.download, this.copy, this.fix), this.brushPanel);
    this.actions.hidden = true; // until there is a result
    this.clip();
  }

  buildBrushPanel(id) {
    const name = uid("brush-kind");
    const kinds = [["remove", "Remove", "paint over what should go"], ["keep", "Keep", "paint over what should stay"]];
    const choices = kinds.map(([value, text]) => {
      const radioId = uid("brush");
      const radio = h("input", { type: "radio", name, value, id: radioId, checked: value === "remove",
        onchange: () => { this.brush.kind = value; } });
      return h("div", { class: `choice brush-${value}` }, radio, h("label", { for: radioId }, text));
    });
    const sizeId = uid("brush-size");
    const size = h("input", { type: "range", id: sizeId, min: 1, max: 15, value: 4,
      oninput: () => { this.brush.share = Number(size.value) / 100; this.brush.draw(); },
      onchange: () => { if (this.brush.strokes.length) this.run(); } });
    this.undo = h("button", { type: "button", class: "btn small", disabled: true, onclick: () => this.brush.undo() }, "Undo");
    this.clearStrokes = h("button", { type: "button", class: "btn small", disabled: true,
      onclick: () => this.brush.clear() }, "Clear strokes");
    const panel = h("div", { class: "brush-panel", id },
      h("p", { class: "hint" }, "Paint over the picture: red takes away, green keeps. The result updates after each stroke."),
      h("div", { class: "brush-row" },
        h("div", { class: "choices compact", role: "radiogroup", "aria-label": "Brush" }, choices),
        h("div", { class: "field field-inline" }, h("label", { for: sizeId }, "Brush size"), size)),
      h("div", { class: "brush-row" }, this.undo, this.clearStrokes,
        h("button", { type: "button", class: "btn small", onclick: () => this.toggleEditing() }, "Done")));
    panel.hidden = true;
    return panel;
  }

  /** The upload's size in px (strokes are in it): the size the service reported working at. */
  uploadSize() {
    const shown = this.editing && this.preview ? this.preview : this.results;
    if (shown?.scaledFrom) return shown.scaledFrom.split("x").map(Number);
    if (shown?.width) return [shown.width, shown.height];
    return [this.before.naturalWidth || 1, this.before.naturalHeight || 1];
  }

  clip() {
    const at = Number(this.slider.value);
    // CSSOM, allowed by the page's CSP (no style attributes)
    this.after.style.clipPath = this.editing || this.before.hidden ? "none" : `inset(0 0 0 ${at}%)`;
    this.divider.style.left = `${at}%`;
  }

  /** The stage takes the shape of what it shows. */
  fit() {
    const img = this.after.hidden || !this.after.naturalWidth ? this.before : this.after;
    if (img.naturalWidth) this.stage.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
  }

  setStatus(text, state = "") {
    this.status.textContent = text;
    this.status.dataset.state = state;
  }

  /** Sends the photo with the current settings (and strokes); the newest call wins. */
  async run() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const signal = controller.signal;
    this.setStatus("Waiting…", "busy");
    this.stage.classList.add("working");
    this.error.hidden = true;
    try {
      await slot(signal);
    } catch {
      return;
    }
    try {
      const strokes = this.brush.fields();
      const onWait = (left) => this.setStatus(`The service is busy: trying again in ${left} s`, "wait");
      if (this.editing && this.settings.usesLayout()) {
        // the strokes are painted on the plain cut-out, which lies exactly over the photo
        this.setStatus("Updating the cut-out…", "busy");
        const request = { endpoint: "api/bg/remove", fields: Object.entries(strokes), files: [["file", this.file, this.name]] };
        this.showPreview(await readResult(await send(request, { signal, onWait }), this.stem));
      }
      this.setStatus(this.results ? "Updating…" : "Removing the background…", "busy");
      const request = this.settings.requestFor({ file: this.file, name: this.name }, strokes);
      const results = await readResult(await send(request, { signal, onWait }), this.stem);
      if (signal.aborted) return;
      this.request = request;
      this.showResults(results);
    } catch (exc) {
      if (signal.aborted) return;
      this.showError(exc);
    } finally {
      release();
      if (this.controller === controller) {
        this.stage.classList.remove("working");
        this.controller = null;
      }
    }
  }

  showPreview(preview) {
    if (this.urls.preview) URL.revokeObjectURL(this.urls.preview);
    this.preview = preview;
    this.urls.preview = URL.createObjectURL(preview.images[0].blob);
    if (this.editing) this.after.src = this.urls.preview;
  }

  showResults(results) {
    for (const url of this.urls.results) URL.revokeObjectURL(url);
    this.results = results;
    this.urls.results = results.images.map((image) => URL.createObjectURL(image.blob));
    if (this.variant >= results.images.length) this.variant = 0;
    this.variants.replaceChildren(...results.images.map((image, i) => h("button", {
      type: "button", class: "chip", "aria-pressed": String(i === this.variant),
      onclick: () => this.choose(i),
    }, label(image.name))));
    this.variants.hidden = results.images.length < 2;
    this.choose(this.variant);
    const server = results.timings.reduce((sum, [, ms]) => sum + ms, 0);
    const size = results.width ? `${results.width} × ${results.height} px` : "";
    this.meta.replaceChildren(
      h("span", {}, `Ready in ${duration(results.ms)}`),
      size ? h("span", {}, size) : null,
      results.cache ? h("span", { class: "cache", title: "X-Cache: whether the service had this result already" },
        `cache ${results.cache}`) : null,
      results.timings.length ? h("details", { class: "timings" }, h("summary", {}, "Timings"),
        h("dl", {}, results.timings.map(([name, ms]) => [h("dt", {}, name), h("dd", {}, duration(ms))]),
          h("dt", {}, "server, in all"), h("dd", {}, duration(server)))) : null);
    if (results.warnings.length) {
      this.notice.textContent = `Worth a look: ${warningText(results.warnings)}. “Fix the cut-out” lets you paint corrections.`;
      this.notice.hidden = false;
    } else {
      this.notice.hidden = true;
    }
    this.after.hidden = false;
    this.actions.hidden = false;
    this.stage.hidden = false;
    this.copy.disabled = false;
    this.fix.disabled = false;
    this.setStatus("Ready", "done");
    this.el.dataset.results = String(Number(this.el.dataset.results || 0) + 1); // how many answers were shown
    const what = results.images.length > 1 ? `${results.images.length} pictures` : "result";
    announce(`${this.name}: ${what} ready in ${duration(results.ms)}. ${this.settings.summary()}.`);
  }

  choose(i) {
    this.variant = i;
    const image = this.results.images[i];
    for (const [j, chip] of [...this.variants.children].entries()) chip.setAttribute("aria-pressed", String(i === j));
    if (!(this.editing && this.preview)) this.after.src = this.urls.results[i];
    this.after.alt = `Result${this.results.images.length > 1 ? ` (${label(image.name)})` : ""}: ${this.name}`;
    this.download.href = this.urls.results[i];
    this.download.download = image.filename;
    this.download.removeAttribute("aria-disabled");
    this.download.textContent = "Download";
    this.download.append(h("span", { class: "visually-hidden" }, ` ${image.filename}`));
  }

  showError(exc) {
    const [headline, detail] = explain(exc);
    this.error.replaceChildren(
      h("p", { class: "error-headline" }, headline),
      detail ? h("p", { class: "error-detail" }, `The service said: ${detail}`) : null,
      h("button", { type: "button", class: "btn small", onclick: () => this.run() }, "Try again"));
    this.error.hidden = false;
    this.stage.hidden = !this.results && this.before.hidden; // nothing to show
    this.setStatus("Not done", "error");
    announce(`${this.name}: ${headline}`);
    if (exc instanceof ApiError && exc.status === 401) this.onUnauthorized(this);
  }

  toggleEditing() {
    this.editing = !this.editing;
    this.fix.setAttribute("aria-pressed", String(this.editing));
    this.brushPanel.hidden = !this.editing;
    this.stage.classList.toggle("editing", this.editing);
    this.clip();
    if (this.editing) {
      if (this.settings.usesLayout()) {
        this.preview = null;
        this.after.removeAttribute("src");
        this.run();
      }
    } else {
      this.preview = null;
      if (this.results) this.after.src = this.urls.results[this.variant];
    }
    this.brush.draw();
  }

  strokesChanged() {
    const any = this.brush.strokes.length > 0;
    this.undo.disabled = !any;
    this.clearStrokes.disabled = !any;
    this.run();
  }

  async copyCurl() {
    const image = this.results.images[this.variant];
    const output = this.request.endpoint.endsWith("process") ? `${this.stem}.json` : image.filename;
    const command = curlCommand(this.request, output);
    try {
      await navigator.clipboard.writeText(command);
      this.copy.textContent = "Copied";
      announce(`The curl command is copied.${command.includes("$API_KEY") ? " It reads the key from $API_KEY." : ""}`);
      window.setTimeout(() => { this.copy.textContent = "Copy as curl"; }, 2000);
    } catch {
      const dialog = document.getElementById("curl-dialog");
      document.getElementById("curl-text").value = command;
      dialog.showModal();
      document.getElementById("curl-text").select();
    }
  }

  remove() {
    this.controller?.abort();
    URL.revokeObjectURL(this.urls.photo);
    for (const url of this.urls.results) URL.revokeObjectURL(url);
    if (this.urls.preview) URL.revokeObjectURL(this.urls.preview);
    this.el.remove();
    this.onRemove(this);
  }
}
