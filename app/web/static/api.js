// Talking to the service: the catalogues, one processing request (retried while the server is
// busy), its answer read into images and figures, its errors in plain words, and the same request
// written as a curl command. Paths are relative to the page, so a service under a prefix works too.

const KEY_STORAGE = "bgremove.apiKey";

/** The API key this tab was given (sessionStorage only: gone when the tab closes). */
export function apiKey() {
  try {
    return window.sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  try {
    if (key) window.sessionStorage.setItem(KEY_STORAGE, key);
    else window.sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage refused (private mode settings): the key lives as long as the page
  }
}

export async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

/** Whether the server asks for an API key: its OpenAPI document marks the processing endpoints. */
export async function keyRequired() {
  try {
    const spec = await getJSON("openapi.json");
    return Object.values(spec.paths || {}).some((ops) =>
      Object.values(ops).some((op) => (op.security || []).some((s) => "ApiKey" in s)));
  } catch {
    return false; // a 401 will say so anyway
  }
}

/** An error answered by the API (its JSON `{"error": {code, message, field}}`), or by the network. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

// What each error code means to someone who does not read APIs; the server's own message follows.
const PLAIN = {
  invalid_image: "This file is not a photo the service can open.",
  unsupported_image: "This kind of file is not supported. Try a JPEG, PNG, WebP or HEIC photo.",
  missing_file: "No photo was sent.",
  file_too_large: "This photo is too large to upload.",
  image_too_large: "This photo has too many pixels for the service.",
  image_too_complex: "This photo's file is too complicated to open safely.",
  bad_option: "One of the chosen settings was not accepted.",
  unauthorized: "This server needs an API key: enter it at the top of the page.",
  too_many_requests: "Too many requests for now.",
  too_many_connections: "Too many requests for now.",
  overloaded: "The service is busy.",
  timeout: "The service took too long.",
  unavailable: "The service is not answering right now.",
  out_of_memory: "The service ran out of memory for this photo. Try a smaller photo.",
  network: "Could not reach the service. Check the connection and try again.",
};

/** [headline, detail]: what went wrong in plain words, and the server's own message. */
export function explain(error) {
  if (!(error instanceof ApiError)) return [PLAIN.network, String(error.message || error)];
  const headline = PLAIN[error.code] || (error.status >= 500 ? "Something went wrong on the server."
    : "The service could not use this photo.");
  return [headline, error.message];
}

function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = window.setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { window.clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

const MAX_RETRIES = 20;

/**
 * Sends `request` ({endpoint, fields: [[name, value]], files: [[name, Blob, filename]]}) and returns
 * the answer ({response, ms}). A busy server (503 or 429 with Retry-After) is asked again after the
 * time it gave; `onWait(seconds left)` is called each second meanwhile. Errors throw ApiError.
 */
export async function send(request, { signal, onWait } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const body = new FormData();
    for (const [name, blob, filename] of request.files) body.append(name, blob, filename);
    for (const [name, value] of request.fields) body.append(name, value);
    const headers = { Accept: request.accept || "*/*" };
    const key = apiKey();
    if (key) headers["X-API-Key"] = key;
    const started = performance.now();
    let response;
    try {
      response = await fetch(request.endpoint, { method: "POST", body, headers, signal });
    } catch (exc) {
      if (signal?.aborted) throw exc;
      throw new ApiError(0, "network", String(exc.message || exc));
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    if ((response.status === 503 || response.status === 429) && retryAfter >= 0 && attempt < MAX_RETRIES) {
      for (let left = Math.max(1, retryAfter); left > 0; left -= 1) {
        onWait?.(left);
        await wait(1000, signal);
      }
      continue;
    }
    if (!response.ok) throw await readError(response);
    return { response, ms: performance.now() - started };
  }
}

async function readError(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    // not JSON: an HTML error page from a proxy, say
  }
  return new ApiError(response.status, error.code || `http_${response.status}`,
    error.message || `${response.status} ${response.statusText}`, error.field);
}

function base64Blob(text, type) {
  const bytes = Uint8Array.from(window.atob(text), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

const TYPES = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp", heic: "image/heic", avif: "image/avif" };
const EXTENSIONS = { png: "png", jpeg: "jpg", webp: "webp", heic: "heic", avif: "avif" };

/** The server's figures: Server-Timing's stages in ms. */
function serverTiming(header) {
  const stages = [];
  for (const part of (header || "").split(",")) {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && dur) stages.push([name, Number.parseFloat(dur.slice(4))]);
  }
  return stages;
}

function filenameOf(response) {
  const match = /filename="?([^";]+)"?/i.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : null;
}

/**
 * The answer as results: [{name, blob, filename}] (one per effect for /api/v2/process, else one),
 * with the cache status, the timings and the mask's warnings.
 */
export async function readResult({ response, ms }, stem) {
  const cache = response.headers.get("X-Cache") || "";
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) {
    const body = await response.json();
    const images = Object.entries(body.images).map(([name, data]) => ({
      name,
      blob: base64Blob(data, TYPES[body.format] || "application/octet-stream"),
      filename: `${name}_${stem}.${EXTENSIONS[body.format] || body.format}`,
    }));
    const timings = Object.entries(body.metadata.timings_ms || {});
    return { images, cache, ms, timings, width: body.width, height: body.height,
      warnings: body.metadata.mask_warnings || [], scaledFrom: body.metadata.scaled_from };
  }
  const blob = await response.blob();
  const warnings = (response.headers.get("X-Mask-Warnings") || "none").split(",").map((w) => w.trim())
    .filter((w) => w && w !== "none");
  return {
    images: [{ name: "result", blob, filename: filenameOf(response) || `${stem}.png` }],
    cache, ms, timings: serverTiming(response.headers.get("Server-Timing")),
    width: Number(response.headers.get("X-Width")), height: Number(response.headers.get("X-Height")),
    warnings, scaledFrom: response.headers.get("X-Scaled-From"),
  };
}

// What the mask's warnings mean (X-Mask-Warnings), as advice.
const WARNINGS = {
  "undecided-regions": "some edges are uncertain",
  "disconnected-regions": "there are stray bits apart from the pet",
  "low-contrast-edge": "the pet blends into the background in places",
  "no-subject": "no pet was found",
};

export function warningText(warnings) {
  return warnings.map((w) => WARNINGS[w] || w.replace(/-/g, " ")).join("; ");
}

function quote(text) {
  return `'${String(text).replace(/'/g, "'\\''")}'`;
}

/** `request` as a curl command, run from the folder holding the photo (and background image). */
export function curlCommand(request, output) {
  const url = new URL(request.endpoint, document.baseURI).href;
  const parts = ["curl"];
  if (apiKey()) parts.push("-H", '"X-API-Key: $API_KEY"');
  if (request.accept) parts.push("-H", quote(`Accept: ${request.accept}`));
  for (const [name, , filename] of request.files) {
    parts.push("-F", quote(`${name}=@"${filename.replace(/["\\]/g, "\\$&")}"`));
  }
  // --form-string: values as they are (-F would read a value starting with @ or < as a file)
  for (const [name, value] of request.fields) parts.push("--form-string", quote(`${name}=${value}`));
  parts.push(quote(url), "-o", quote(output));
  return parts.join(" ");
}
