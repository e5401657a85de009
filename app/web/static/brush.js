// The mask brush: strokes painted over a picture that lies exactly over the upload (the cut-out in
// the photo's own framing), kept in the upload's pixels, the way keep_mask / remove_mask take them:
// {"width": px, "lines": [[[x, y], ...], ...]}. One width per card (the API takes one per field):
// a share of the photo's width, so a stroke keeps its size on any screen.

const COLORS = { keep: "rgba(16, 185, 129, 0.55)", remove: "rgba(239, 68, 68, 0.55)" };
const MAX_LINES = 64; // per field, as the API takes them
const MAX_POINTS = 4096; // in all

/** Where an <img> with object-fit: contain shows its picture, in client coordinates. */
export function contentRect(img) {
  const box = img.getBoundingClientRect();
  const width = img.naturalWidth || 1;
  const height = img.naturalHeight || 1;
  const ratio = Math.min(box.width / width, box.height / height);
  return { left: box.left + (box.width - width * ratio) / 2, top: box.top + (box.height - height * ratio) / 2,
    width: width * ratio, height: height * ratio };
}

export class Brush {
  /**
   * `canvas` lies over `img` (the picture painted on); `uploadSize()` gives the upload's [w, h];
   * `onStroke()` is called when a stroke is finished (or undone, or cleared).
   */
  constructor(canvas, img, uploadSize, onStroke) {
    this.canvas = canvas;
    this.img = img;
    this.uploadSize = uploadSize;
    this.onStroke = onStroke;
    this.strokes = []; // [{kind, points: [[x, y], ...]}] in upload px, oldest first
    this.kind = "remove";
    this.share = 0.04; // brush width as a share of the photo's width
    this.current = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    canvas.addEventListener("pointercancel", () => { this.current = null; this.draw(); });
  }

  widthPx() {
    return Math.max(1, Math.round(this.uploadSize()[0] * this.share));
  }

  full() {
    const points = this.strokes.reduce((n, s) => n + s.points.length, 0);
    return points >= MAX_POINTS - 2 || this.strokes.filter((s) => s.kind === this.kind).length >= MAX_LINES;
  }

  toUpload(event) {
    const rect = contentRect(this.img);
    const [width, height] = this.uploadSize();
    const x = Math.min(width, Math.max(0, ((event.clientX - rect.left) / rect.width) * width));
    const y = Math.min(height, Math.max(0, ((event.clientY - rect.top) / rect.height) * height));
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  down(event) {
    if (event.button !== 0 || this.full() || !this.img.naturalWidth) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.current = { kind: this.kind, points: [this.toUpload(event)] };
    this.draw();
  }

  move(event) {
    if (!this.current) return;
    const point = this.toUpload(event);
    const [lx, ly] = this.current.points[this.current.points.length - 1];
    const used = this.strokes.reduce((n, s) => n + s.points.length, 0) + this.current.points.length;
    // a point every quarter brush is smooth enough, and keeps a long stroke within the API's points
    if (Math.hypot(point[0] - lx, point[1] - ly) >= this.widthPx() / 4 && used < MAX_POINTS) {
      this.current.points.push(point);
      this.draw();
    }
  }

  up(event) {
    if (!this.current) return;
    const point = this.toUpload(event);
    const last = this.current.points[this.current.points.length - 1];
    if (point[0] !== last[0] || point[1] !== last[1]) this.current.points.push(point);
    this.strokes.push(this.current);
    this.current = null;
    this.draw();
    this.onStroke();
  }

  undo() {
    this.strokes.pop();
    this.draw();
    this.onStroke();
  }

  clear() {
    this.strokes = [];
    this.draw();
    this.onStroke();
  }

  /** The strokes as the API's fields: {keep_mask: JSON, remove_mask: JSON}, those painted only. */
  fields() {
    const out = {};
    for (const kind of ["keep", "remove"]) {
      const lines = this.strokes.filter((s) => s.kind === kind).map((s) => s.points);
      if (lines.length) out[`${kind}_mask`] = JSON.stringify({ width: this.widthPx(), lines });
    }
    return out;
  }

  /** Redraws every stroke at the size the picture has now. */
  draw() {
    const canvas = this.canvas;
    const box = canvas.getBoundingClientRect();
    const scale = window.devicePixelRatio || 1;
    canvas.width = Math.round(box.width * scale);
    canvas.height = Math.round(box.height * scale);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(scale, 0, 0, scale, 0, 0);
    ctx.clearRect(0, 0, box.width, box.height);
    if (!this.img.naturalWidth) return;
    const rect = contentRect(this.img);
    const [width, height] = this.uploadSize();
    const sx = rect.width / width;
    const sy = rect.height / height;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Math.max(1, this.widthPx() * sx);
    for (const stroke of this.current ? [...this.strokes, this.current] : this.strokes) {
      ctx.strokeStyle = COLORS[stroke.kind];
      ctx.beginPath();
      stroke.points.forEach(([x, y], i) => {
        const px = rect.left - box.left + x * sx;
        const py = rect.top - box.top + y * sy;
        if (i === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      });
      if (stroke.points.length === 1) ctx.lineTo(rect.left - box.left + stroke.points[0][0] * sx + 0.01,
        rect.top - box.top + stroke.points[0][1] * sy);
      ctx.stroke();
    }
  }
}
