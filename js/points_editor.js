// Points editor for "Track Points (DiffTrack)": click on the frame to add a point, drag to move it, right-click to
// delete it. The points live in the node's `points` widget (JSON, pixels of the frames), so they are saved with the
// workflow. The frame shown is the query frame the node sent back after its last run, or an image the user picks
// with "Load frame…" (e.g. a still of the video) before any run.
import { app } from "../../scripts/app.js";

const NODE = "DiffTrackTrackPoints";
const DEFAULT_SIZE = [832, 480]; // frame size assumed until a frame has been seen (the shipped workflows' size)
const HIT_RADIUS = 10; // canvas pixels

// The points in the widget's text, or null when the text is not a list of points the node would read: then the
// editor leaves the text alone (a click must never overwrite what the user is typing) and says so.
function readPoints(text) {
  if (!text || !text.trim()) return [];
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return null;
  }
  const points = (Array.isArray(data) ? data : [data]).map((p) =>
    Array.isArray(p) ? { x: p[0], y: p[1], ...(p.length > 2 ? { t: p[2] } : {}) } : p,
  );
  return points.every((p) => Number.isFinite(p?.x) && Number.isFinite(p?.y)) ? points : null;
}

function colour(index, count) {
  return `hsl(${Math.round((360 * index) / Math.max(count, 1))}, 85%, 60%)`;
}

class PointsEditor {
  constructor(node) {
    this.node = node;
    this.points = node.widgets.find((w) => w.name === "points");
    this.queryFrame = node.widgets.find((w) => w.name === "query_frame");
    this.frame = null;
    this.dragging = -1;
    this.element = document.createElement("div");
    this.element.className = "difftrack-points-editor";
    this.element.style.cssText =
      "width:100%;height:100%;display:flex;flex-direction:column;justify-content:center;align-items:center;gap:4px;";
    this.picker = document.createElement("input");
    this.picker.type = "file";
    this.picker.accept = "image/*";
    this.picker.style.display = "none";
    this.picker.addEventListener("change", () => {
      const file = this.picker.files?.[0];
      if (file) this.showFrame(URL.createObjectURL(file));
    });
    const load = document.createElement("button");
    load.textContent = "Load frame…";
    load.title = "Show an image (e.g. the video's query frame) to place points on before the first run";
    load.style.cssText = "font-size:11px;padding:1px 8px;";
    load.addEventListener("click", () => this.picker.click());
    this.element.append(this.picker, load);
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "max-width:100%;max-height:100%;object-fit:contain;cursor:crosshair;background:#222;";
    this.element.appendChild(this.canvas);
    this.canvas.addEventListener("pointerdown", (e) => this.down(e));
    this.canvas.addEventListener("pointermove", (e) => this.move(e));
    // A drag ends wherever the pointer is released: the canvas holds the pointer capture during a drag, so the
    // release (or a cancel) reaches it even outside its box.
    for (const end of ["pointerup", "pointercancel", "lostpointercapture"]) {
      this.canvas.addEventListener(end, () => (this.dragging = -1));
    }
    this.canvas.addEventListener("contextmenu", (e) => this.remove(e));
    const changed = this.points.callback;
    this.points.callback = (...args) => {
      changed?.apply(this.points, args);
      this.draw();
    };
    this.draw();
  }

  size() {
    return this.frame ? [this.frame.naturalWidth, this.frame.naturalHeight] : DEFAULT_SIZE;
  }

  toFrame(event) {
    const box = this.canvas.getBoundingClientRect();
    const [width, height] = this.size();
    const clamp = (value, limit) => Math.min(Math.max(Math.round(value), 0), limit - 1); // a drag may leave the box
    return {
      x: clamp(((event.clientX - box.left) / box.width) * width, width),
      y: clamp(((event.clientY - box.top) / box.height) * height, height),
    };
  }

  nearest(event) {
    const box = this.canvas.getBoundingClientRect();
    const [width, height] = this.size();
    const scale = box.width / width;
    const at = this.toFrame(event);
    let best = -1;
    let bestDistance = HIT_RADIUS / scale;
    (readPoints(this.points.value) ?? []).forEach((p, i) => {
      const distance = Math.hypot(p.x - at.x, p.y - at.y);
      if (distance <= bestDistance) [best, bestDistance] = [i, distance];
    });
    return best;
  }

  store(points) {
    this.points.value = JSON.stringify(points);
    this.points.callback?.(this.points.value);
    this.node.setDirtyCanvas?.(true, true);
    this.draw();
  }

  down(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    event.stopPropagation();
    const points = readPoints(this.points.value);
    if (points === null) return this.draw(); // malformed text: say so, change nothing
    const hit = this.nearest(event);
    if (hit >= 0) {
      this.dragging = hit;
      this.canvas.setPointerCapture?.(event.pointerId);
      return;
    }
    this.store([...points, { ...this.toFrame(event), t: this.queryFrame?.value ?? 0 }]);
  }

  move(event) {
    if (this.dragging < 0) return;
    const points = readPoints(this.points.value);
    if (points === null || !points[this.dragging]) return (this.dragging = -1);
    Object.assign(points[this.dragging], this.toFrame(event));
    this.store(points);
  }

  remove(event) {
    event.preventDefault();
    event.stopPropagation();
    const points = readPoints(this.points.value);
    const hit = points === null ? -1 : this.nearest(event);
    if (hit >= 0) this.store(points.filter((_, i) => i !== hit));
  }

  showFrame(url) {
    const image = new Image();
    image.onload = () => {
      this.frame = image;
      this.draw();
    };
    image.src = url;
  }

  draw() {
    const [width, height] = this.size();
    this.canvas.width = width;
    this.canvas.height = height;
    const context = this.canvas.getContext("2d");
    if (this.frame) context.drawImage(this.frame, 0, 0);
    else {
      context.fillStyle = "#aaa";
      context.font = `${Math.round(height / 18)}px sans-serif`;
      context.fillText("Run once to see the query frame; click to add points", width * 0.05, height * 0.1);
    }
    const points = readPoints(this.points.value);
    if (points === null) {
      context.fillStyle = "rgba(0, 0, 0, 0.6)";
      context.fillRect(0, height * 0.4, width, height * 0.2);
      context.fillStyle = "#ff8080";
      context.font = `bold ${Math.round(height / 20)}px sans-serif`;
      context.fillText("The points text is malformed: fix or clear it to edit here", width * 0.05, height * 0.52);
      this.canvas.title = 'Not a JSON list of points like [{"x": 120, "y": 80}]; clicks leave it unchanged';
      return;
    }
    this.canvas.title = "";
    const radius = Math.max(4, width / 120);
    points.forEach((p, i) => {
      context.beginPath();
      context.arc(p.x, p.y, radius, 0, 2 * Math.PI);
      context.fillStyle = colour(i, points.length);
      context.fill();
      context.lineWidth = radius / 3;
      context.strokeStyle = "#111";
      context.stroke();
      context.fillStyle = "#fff";
      context.font = `bold ${Math.round(radius * 2.2)}px sans-serif`;
      context.fillText(String(i), p.x + radius * 1.3, p.y - radius * 1.3);
    });
  }
}

app.registerExtension({
  name: "difftrack.PointsEditor",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      this.difftrackEditor = new PointsEditor(this);
      this.addDOMWidget("points_editor", "difftrack_points_editor", this.difftrackEditor.element, {
        serialize: false,
        getMinHeight: () => 260,
      });
      this.setSize?.([Math.max(this.size[0], 420), this.size[1] + 240]);
      return result;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      const frame = message?.difftrack_frame?.[0];
      if (frame) {
        const query = new URLSearchParams({ filename: frame.filename, subfolder: frame.subfolder ?? "", type: frame.type });
        this.difftrackEditor?.showFrame(`/api/view?${query}`);
      }
    };
    const configured = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = configured?.apply(this, arguments);
      this.difftrackEditor?.draw(); // points loaded with a workflow
      return result;
    };
  },
});
