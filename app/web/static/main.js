// The page's start: the catalogues into the settings form, photos in (dropped, chosen or pasted),
// each a card; a change of settings sends every photo again; the API key when the server wants one.

import { apiKey, getJSON, keyRequired, setApiKey } from "./api.js";
import { Card } from "./card.js";
import { announce } from "./dom.js";
import { buildSettings } from "./settings.js";

const cards = new Set();
let settings = null;
let rerun = 0;

function settingsChanged() {
  window.clearTimeout(rerun);
  rerun = window.setTimeout(() => { for (const card of cards) card.run(); }, 350);
}

function addPhotos(files) {
  const images = [...files].filter((file) => file.size > 0);
  if (!images.length || !settings) return;
  const list = document.getElementById("cards");
  for (const file of images) {
    const card = new Card(file, settings, {
      onRemove: (gone) => { cards.delete(gone); updateEmpty(); },
      onUnauthorized: () => showKeyPanel(apiKey() ? "That key was not accepted: check it and try again." : ""),
    });
    cards.add(card);
    list.prepend(card.el);
    card.run();
  }
  updateEmpty();
  announce(images.length === 1 ? `Working on ${images[0].name || "the pasted photo"}.`
    : `Working on ${images.length} photos.`);
}

function updateEmpty() {
  document.getElementById("dropzone").classList.toggle("has-photos", cards.size > 0);
}

function showKeyPanel(message) {
  const panel = document.getElementById("key-panel");
  const wasHidden = panel.hidden;
  panel.hidden = false;
  document.getElementById("key-status").textContent = message;
  if (wasHidden || message) document.getElementById("api-key").focus();
}

function setUpKey() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  input.value = apiKey();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    document.getElementById("key-status").textContent = input.value.trim()
      ? "Key saved for this tab." : "Key removed.";
    for (const card of cards) if (!card.results) card.run();
  });
  keyRequired().then((required) => { if (required) showKeyPanel(""); });
}

function setUpDrop() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("drop-input");
  input.addEventListener("change", () => {
    addPhotos(input.files);
    input.value = "";
  });
  const over = (event) => {
    if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
    event.preventDefault();
    zone.classList.add("dragging");
  };
  document.addEventListener("dragenter", over);
  document.addEventListener("dragover", over);
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files.length) return;
    event.preventDefault();
    zone.classList.remove("dragging");
    addPhotos(event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (!files.length) return;
    event.preventDefault();
    addPhotos(files);
  });
}

async function start() {
  setUpKey();
  setUpDrop();
  const form = document.getElementById("settings");
  try {
    const [layouts, catalogue, status] = await Promise.all([
      getJSON("api/v2/layouts"), getJSON("api/v2/effects"), getJSON("api/bg/status").catch(() => null)]);
    settings = buildSettings(form, { layouts, effects: catalogue.effects, maxEffects: catalogue.max_effects_per_request },
      settingsChanged);
    if (status) {
      document.getElementById("drop-hint").textContent = "Several at once are fine; you can also paste a photo "
        + `(Ctrl+V or ⌘V). JPEG, PNG, WebP, HEIC and more, up to ${status.max_file_size_mb} MB each.`;
    }
    document.body.dataset.ready = "true";
  } catch (exc) {
    form.replaceChildren();
    const message = document.createElement("p");
    message.className = "card-error";
    message.textContent = `The choices could not be loaded (${exc.message}). Reload the page to try again.`;
    form.append(message);
  }
}

start();
