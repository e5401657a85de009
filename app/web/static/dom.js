// Small DOM helpers. Text always goes in as text (textContent), never as HTML: names of files,
// server messages and catalogue descriptions are shown exactly as they are.

let counter = 0;

/** A unique element id with a readable prefix. */
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/**
 * Creates an element: h("button", {class: "btn", type: "button", onclick: fn}, "Text", child...).
 * Attributes are set with setAttribute (never innerHTML); "on*" keys add listeners; a value of
 * false or null leaves the attribute out; children are nodes or strings (text nodes).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Says `text` to screen readers through the page's polite live region. */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // a new text node after a tick, so that the same words twice are announced twice
  window.setTimeout(() => { region.textContent = text; }, 50);
}

// Friendlier names for what the API lists; anything new gets a name made from its own.
const NAMES = {
  blackwhite: "Black & white",
  popart: "Pop art",
  "8bit": "8-bit",
  dither: "Dot print",
  "square-white": "Square on white",
  "square-transparent": "Square, transparent",
  sticker: "Sticker",
  "portrait-blur": "Portrait blur",
  max_upscale: "Most enlargement",
  shadow_offset: "Shadow offset (x, y)",
  blur_radius: "Blur strength",
  background_fit: "Background fit",
};

/** "shadow_opacity" -> "Shadow opacity", with the names above where they read better. */
export function label(name) {
  if (NAMES[name]) return NAMES[name];
  const words = String(name).replace(/[_-]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Bytes as "1.2 MB". */
export function size(bytes) {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(0)} KB`;
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Milliseconds as "850 ms" or "1.2 s". */
export function duration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
