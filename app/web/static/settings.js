// The settings form, built from what the service lists (GET /api/v2/layouts, GET /api/v2/effects):
// a new layout field, preset or effect appears here without a change to the page. The form turns
// into one API request per photo (requestFor), sending only what differs from the defaults.

import { h, label, uid } from "./dom.js";

const SWATCHES = [
  ["#ffffff", "White"], ["#f3f4f6", "Light grey"], ["#f6f1e7", "Cream"], ["#dbeafe", "Sky blue"],
  ["#fde2e4", "Blush pink"], ["#d1fae5", "Mint"], ["#fef3c7", "Butter yellow"], ["#1f2937", "Charcoal"],
];
const BACKGROUNDS = [
  ["transparent", "Transparent", "no background: a cut-out"],
  ["color", "Colour", "a plain colour behind the pet"],
  ["blur", "Blurred photo", "the photo's own background, softened"],
  ["image", "Another photo", "a picture of your choice behind the pet"],
];
// Layout fields the Background section holds (the rest make up "Adjust framing"): the background
// itself, and those named for one kind of background.
const BACKGROUND_FIELDS = { blur: (name) => name.startsWith("blur"), image: (name) => name.startsWith("background_") };

// Plainer words for the layout fields this page knows; a new field shows the API's own description.
const FIELD_TEXT = {
  crop: { hint: "Trim the picture to the pet." },
  padding: { hint: "Space kept around the pet.", placeholder: "e.g. 5% or 40px 20px" },
  size: { hint: "The picture's size: as the photo, fitted to the pet, or width x height.",
    placeholder: "original, subject or e.g. 2000x2000" },
  position: { hint: "Where the pet sits in a larger picture.", placeholder: "center, top, bottom, left, right or 50% 80%" },
  scale: { hint: "How much of the picture the pet fills.", placeholder: "e.g. 85%" },
  max_upscale: { hint: "How far a small photo may be enlarged (1 = never)." },
  shadow: { hint: "A soft drop shadow, or a shadow on the floor." },
  shadow_opacity: { hint: "0 (none) to 1 (solid)." },
  shadow_blur: { hint: "Softness of the shadow, in px." },
  shadow_offset: { hint: "How far the shadow falls: right, down (px).", placeholder: "e.g. 10,10" },
  outline: { hint: "A border around the pet, in px: for stickers." },
  blur_radius: { hint: "How soft the background gets." },
  background_fit: { hint: "Fill the whole picture, or fit inside it." },
};

let colorContext;

/** Any CSS colour ("white", "rgb(...)", "#fff") as #rrggbb, as the browser reads it. */
export function hexColor(text) {
  colorContext ||= document.createElement("canvas").getContext("2d");
  colorContext.fillStyle = "#000000";
  colorContext.fillStyle = String(text);
  return colorContext.fillStyle.startsWith("#") ? colorContext.fillStyle : "#000000";
}

const isColor = (schema) => schema.format === "color" || /^#[0-9a-f]{6}$/i.test(String(schema.default ?? ""));
const isNumber = (schema) => schema.type === "integer" || schema.type === "number";

/**
 * One form control for a field the API describes: checkbox, choice, number, colour or text.
 * get()/set() speak the form's text (what is sent); `same(a, b)` compares two such values.
 */
function fieldControl(name, schema, onChange, words = {}) {
  const id = uid(`f-${name}`);
  const hintId = `${id}-hint`;
  const about = words.hint ?? (isColor(schema) ? "" : schema.description); // a colour picker needs no format
  const hint = about ? h("p", { class: "field-hint", id: hintId }, about) : null;
  const described = hint ? hintId : null;
  let input;
  if (schema.type === "boolean") {
    input = h("input", { type: "checkbox", id, name, "aria-describedby": described });
  } else if (schema.enum) {
    const choices = [...schema.enum];
    if (schema.default !== undefined) choices.sort((a, b) => (a === schema.default ? -1 : b === schema.default ? 1 : 0));
    input = h("select", { id, name, "aria-describedby": described },
      choices.map((choice) => h("option", { value: choice }, label(choice))));
  } else if (isNumber(schema)) {
    const span = (schema.maximum ?? 100) - (schema.minimum ?? 0);
    const step = schema.type === "integer" ? 1 : span <= 1 ? 0.05 : span <= 10 ? 0.1 : 0.5;
    input = h("input", { type: "number", id, name, min: schema.minimum, max: schema.maximum, step,
      inputmode: schema.type === "integer" ? "numeric" : "decimal",
      placeholder: schema.default === "auto" ? "auto" : null, "aria-describedby": described });
  } else if (isColor(schema)) {
    input = h("input", { type: "color", id, name, "aria-describedby": described });
  } else {
    input = h("input", { type: "text", id, name, placeholder: words.placeholder ?? schema.default ?? "",
      autocomplete: "off", spellcheck: "false", "aria-describedby": described });
  }
  input.addEventListener("change", onChange);
  const check = schema.type === "boolean";
  const caption = h("label", { for: id }, label(name));
  const el = h("div", { class: check ? "field field-check" : "field" }, check ? [input, caption] : [caption, input], hint);
  const normal = (value) => {
    if (value === undefined || value === null || value === "" || value === "auto") return "";
    if (check) return String(value === true || value === "true");
    if (isNumber(schema)) return String(Number(value));
    if (input.type === "color") return hexColor(value);
    return String(value).trim().toLowerCase();
  };
  const text = input.type === "text";
  return {
    name, el, input, schema,
    // a text field left empty (its placeholder showing) is the default
    get: () => (check ? String(input.checked) : input.value.trim() || (text ? schema.default ?? "" : "")),
    set(value) {
      if (check) input.checked = value === true || value === "true";
      else if (input.type === "color") input.value = hexColor(value ?? "#000000");
      else if (text && value === schema.default) input.value = "";
      else input.value = value === undefined || value === null || value === "auto" ? "" : String(value);
    },
    same: (a, b) => normal(a) === normal(b),
  };
}

function group(legendText, ...children) {
  return h("fieldset", { class: "group" }, h("legend", {}, legendText), ...children);
}

/**
 * Builds the settings into `form` from the catalogues; `onChange()` is called on every change.
 * Returns {requestFor(photo, strokes), usesLayout(), summary()}.
 */
export function buildSettings(form, { layouts, effects, maxEffects }, onChange) {
  form.replaceChildren();
  const layoutFields = Object.entries(layouts.fields).filter(([name]) => name !== "preset" && name !== "background");
  const controls = {}; // layout field name -> control

  // -- background ---------------------------------------------------------------------------
  const bgName = uid("bg");
  const radios = {};
  const tiles = BACKGROUNDS.map(([value, text, help]) => {
    const id = uid("bg-choice");
    radios[value] = h("input", { type: "radio", name: bgName, value, id, "aria-describedby": `${id}-help`,
      onchange: () => { showBackground(); onChange(); } });
    return h("div", { class: `choice choice-${value}` }, radios[value],
      h("label", { for: id, title: help }, h("span", { class: "choice-swatch", "aria-hidden": "true" }),
        h("span", { class: "choice-text" }, text), h("span", { class: "visually-hidden", id: `${id}-help` }, help)));
  });
  radios.transparent.checked = true;
  const colorId = uid("bg-color");
  const colorSwatch = tiles[1].querySelector(".choice-swatch");
  const showColor = () => { colorSwatch.style.background = colorInput.value; }; // CSSOM
  const colorInput = h("input", { type: "color", id: colorId, value: "#ffffff",
    onchange: () => { showColor(); onChange(); } });
  const swatches = SWATCHES.map(([hex, name]) => {
    const button = h("button", { type: "button", class: "swatch", "aria-label": name, title: name,
      onclick: () => { colorInput.value = hex; radios.color.checked = true; showBackground(); showColor(); onChange(); } });
    button.style.backgroundColor = hex; // CSSOM, not a style attribute
    return button;
  });
  const bgFileId = uid("bg-file");
  const bgFile = h("input", { type: "file", id: bgFileId, accept: "image/*,.heic,.heif,.avif", onchange: onChange });
  const sub = { color: h("div", { class: "sub" },
    h("div", { class: "field field-inline" }, h("label", { for: colorId }, "Colour"), colorInput),
    h("div", { class: "swatches", role: "group", "aria-label": "Suggested colours" }, swatches)),
  blur: h("div", { class: "sub" }), image: h("div", { class: "sub" },
    h("div", { class: "field" }, h("label", { for: bgFileId }, "Background picture"), bgFile)) };
  for (const [name, schema] of layoutFields) {
    const kind = Object.keys(BACKGROUND_FIELDS).find((k) => BACKGROUND_FIELDS[k](name));
    if (!kind) continue;
    controls[name] = fieldControl(name, schema, onChange, FIELD_TEXT[name]);
    sub[kind].append(controls[name].el);
  }
  function showBackground() {
    const kind = backgroundKind();
    for (const [name, el] of Object.entries(sub)) el.hidden = name !== kind;
  }
  const backgroundKind = () => Object.keys(radios).find((k) => radios[k].checked);
  form.append(group("Background", h("div", { class: "choices" }, tiles), sub.color, sub.blur, sub.image));

  // -- framing ------------------------------------------------------------------------------
  const presetId = uid("preset");
  const presets = Object.keys(layouts.presets);
  const presetSelect = h("select", { id: presetId, "aria-describedby": `${presetId}-hint` },
    h("option", { value: "" }, "As photographed"),
    presets.map((name) => h("option", { value: name }, label(name))),
    h("option", { value: "custom" }, "Custom framing"));
  const framing = h("div", { class: "fields" });
  for (const [name, schema] of layoutFields) {
    if (controls[name]) continue;
    controls[name] = fieldControl(name, schema, () => { showDependents(); onChange(); }, FIELD_TEXT[name]);
    framing.append(controls[name].el);
  }
  // A field named after another (shadow_color after shadow) matters only while that one is on.
  function showDependents() {
    for (const control of Object.values(controls)) {
      const owner = controls[control.name.split("_")[0]];
      if (owner && owner !== control) control.el.hidden = ["", "none", "0", "false"].includes(owner.get());
    }
  }
  const adjust = h("details", { class: "adjust" }, h("summary", {}, "Adjust framing"),
    h("p", { class: "hint" }, "Size, padding, position, shadow and outline. Leave a field as it is to keep the layout's choice."),
    framing);
  presetSelect.addEventListener("change", () => {
    applyPreset();
    if (presetSelect.value === "custom") adjust.open = true;
    onChange();
  });
  form.append(group("Layout",
    h("div", { class: "field" }, h("label", { for: presetId }, "Layout preset"), presetSelect,
      h("p", { class: "field-hint", id: `${presetId}-hint` }, "Ready-made framings for listings and stickers.")),
    adjust));

  /** The values a layout preset (or none) sets, as the form writes them. */
  function baseline() {
    const values = {};
    for (const [name, schema] of layoutFields) values[name] = schema.default;
    return { ...values, ...(layouts.presets[presetSelect.value] || {}) };
  }
  function applyPreset() {
    const base = baseline();
    for (const control of Object.values(controls)) control.set(base[control.name]);
    // a preset that sets the background shows it; none (or custom framing) keeps the one chosen
    if ("background" in (layouts.presets[presetSelect.value] || {})) {
      const background = String(base.background).toLowerCase();
      const kind = ["transparent", "blur", "image"].includes(background) ? background : "color";
      radios[kind].checked = true;
      if (kind === "color") colorInput.value = hexColor(background);
    }
    showBackground();
    showColor();
    showDependents();
  }

  // -- effects ------------------------------------------------------------------------------
  const effectRows = effects.map((effect) => effectControl(effect, onChange, () => limitEffects()));
  const effectHint = h("p", { class: "hint", id: uid("effects-hint") },
    `Art styles for prints and posts; up to ${maxEffects} at once, each its own picture.`);
  function limitEffects() {
    const chosen = effectRows.filter((row) => row.checked()).length;
    for (const row of effectRows) row.toggle.disabled = !row.checked() && chosen >= maxEffects;
  }
  form.append(group("Effects", effectHint, h("div", { class: "effects" }, effectRows.map((row) => row.el))));

  // -- output -------------------------------------------------------------------------------
  const formatId = uid("format");
  const formatSelect = h("select", { id: formatId, onchange: onChange, "aria-describedby": `${formatId}-hint` },
    h("option", { value: "" }, "Automatic"), h("option", { value: "png" }, "PNG"),
    h("option", { value: "jpeg" }, "JPEG"), h("option", { value: "webp" }, "WebP"));
  form.append(group("File type",
    h("div", { class: "field" }, h("label", { for: formatId }, "Save as"), formatSelect,
      h("p", { class: "field-hint", id: `${formatId}-hint` },
        "Automatic: PNG where the background is transparent, JPEG otherwise."))));

  applyPreset();

  /** Whether the result is framed or styled differently from the photo (then strokes are painted on a
   * plain cut-out, which lies exactly over the photo). */
  function usesLayout() {
    const framingField = (name) => !BACKGROUND_FIELDS.blur(name) && !BACKGROUND_FIELDS.image(name);
    return effectRows.some((row) => row.checked()) || Object.values(controls).some(
      (c) => framingField(c.name) && !c.same(c.get(), c.schema.default));
  }

  function requestFor(photo, strokes = {}) {
    const chosen = effectRows.filter((row) => row.checked());
    const fields = [];
    const files = [["file", photo.file, photo.name]];
    if (chosen.length) {
      fields.push(["effects", JSON.stringify(chosen.map((row) => row.name))]);
      const params = {};
      for (const row of chosen) {
        const given = row.params();
        if (Object.keys(given).length) params[row.name] = given;
      }
      if (Object.keys(params).length) fields.push(["effect_params", JSON.stringify(params)]);
    }
    const preset = presetSelect.value === "custom" ? "" : presetSelect.value;
    if (preset) fields.push(["preset", preset]);
    const base = baseline();
    const kind = backgroundKind();
    const presetBackground = String(base.background ?? "transparent").toLowerCase();
    let transparent = kind === "transparent";
    if (kind === "image" && bgFile.files.length) {
      files.push(["background_file", bgFile.files[0], bgFile.files[0].name]);
    } else if (kind === "image") {
      transparent = true; // no picture chosen yet: nothing to put behind the pet
      if (presetBackground !== "transparent") fields.push(["background", "transparent"]);
    } else {
      const wanted = kind === "color" ? colorInput.value : kind;
      const presetWanted = ["transparent", "blur", "image"].includes(presetBackground) ? presetBackground : hexColor(presetBackground);
      if (wanted !== presetWanted) fields.push(["background", wanted]);
    }
    for (const control of Object.values(controls)) {
      const relevant = BACKGROUND_FIELDS.blur(control.name) ? kind === "blur"
        : BACKGROUND_FIELDS.image(control.name) ? kind === "image" : true;
      if (relevant && !control.same(control.get(), base[control.name])) fields.push([control.name, control.get()]);
    }
    if (kind === "image" && controls.background_fit?.get() === "contain") transparent = true;
    const format = formatSelect.value || (transparent ? "png" : "jpeg");
    if (format !== "png") fields.push(["format", format]);
    for (const [name, value] of Object.entries(strokes)) fields.push([name, value]);
    return { endpoint: chosen.length ? "api/v2/process" : "api/bg/remove", fields, files };
  }

  /** A few words on the look, for the announcements. */
  function summary() {
    const chosen = effectRows.filter((row) => row.checked()).map((row) => label(row.name));
    const preset = presetSelect.value && presetSelect.value !== "custom" ? label(presetSelect.value) : null;
    const background = BACKGROUNDS.find(([value]) => value === backgroundKind())[1].toLowerCase();
    return [preset, chosen.length ? chosen.join(", ") : null, `${background} background`].filter(Boolean).join(", ");
  }

  return { requestFor, usesLayout, summary };
}

// A line on what each effect is for; a new effect shows the first words of its own description.
const BLURBS = {
  blackwhite: "Classic black-and-white film, with grain.",
  dither: "Two-colour dots, like a printed poster.",
  popart: "Bold pop-art colours, one picture or four.",
  "8bit": "Retro video-game pixels.",
};

function blurb(effect) {
  return BLURBS[effect.name] || `${effect.description.split(/[:.(]/)[0].trim()}.`;
}

/** One effect: a switch, and its parameters (with its presets) to adjust. */
function effectControl(effect, onChange, onToggle) {
  const id = uid(`effect-${effect.name}`);
  const toggle = h("input", { type: "checkbox", id, value: effect.name, "aria-describedby": `${id}-desc` });
  const params = effect.parameters.map((p) => fieldControl(p.name, {
    ...p, type: p.type === "enum" || p.type === "color" ? "string" : p.type, enum: p.choices,
    format: p.type === "color" ? "color" : undefined,
  }, onChange));
  let presetSelect = null;
  const presetNames = Object.keys(effect.presets || {});
  const body = h("div", { class: "fields" });
  if (presetNames.length) {
    const presetId = uid(`effect-${effect.name}-preset`);
    presetSelect = h("select", { id: presetId },
      h("option", { value: "" }, "Standard"), presetNames.map((name) => h("option", { value: name }, label(name))));
    presetSelect.addEventListener("change", () => { reset(); onChange(); });
    body.append(h("div", { class: "field" }, h("label", { for: presetId }, "Style"), presetSelect));
  }
  body.append(h("p", { class: "hint" }, effect.description), ...params.map((c) => c.el));
  const baseline = () => {
    const values = Object.fromEntries(effect.parameters.map((p) => [p.name, p.default]));
    return { ...values, ...((presetSelect && effect.presets[presetSelect.value]) || {}) };
  };
  function reset() {
    const base = baseline();
    for (const control of params) control.set(base[control.name]);
  }
  reset();
  const adjust = h("details", { class: "adjust" }, h("summary", {}, `Adjust ${label(effect.name).toLowerCase()}`), body);
  adjust.hidden = true;
  toggle.addEventListener("change", () => { adjust.hidden = !toggle.checked; onToggle(); onChange(); });
  const el = h("div", { class: "effect" },
    h("div", { class: "field-check" }, toggle, h("label", { for: id }, label(effect.name))),
    h("p", { class: "field-hint", id: `${id}-desc` }, blurb(effect)), adjust);
  return {
    name: effect.name, el, toggle,
    checked: () => toggle.checked,
    params() {
      const base = baseline();
      const given = presetSelect && presetSelect.value ? { preset: presetSelect.value } : {};
      for (const control of params) {
        const value = control.get();
        if (control.same(value, base[control.name])) continue;
        const type = effect.parameters.find((p) => p.name === control.name).type;
        if (value === "") continue; // cleared: its default ("auto")
        given[control.name] = type === "boolean" ? value === "true"
          : type === "integer" || type === "number" ? Number(value) : value;
      }
      return given;
    },
  };
}
