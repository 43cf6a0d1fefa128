// Boxes, landmarks and labels drawn on a canvas over the image (or a dark frame if none).
import { identityOf } from './api.js';

const COLORS = { face: '#38bdf8', object: '#f59e0b', qr: '#a78bfa', text: '#f472b6', plate: '#facc15' };
// Kinds whose landmarks are a polygon (corners) rather than key points.
const OUTLINED = new Set(['qr', 'text', 'plate']);

export function labelOf(detection) {
  if (detection.caption) return detection.caption;  // a caller's own label (Identify's name and similarity)
  if (detection.kind === 'face') return identityOf(detection)?.name ?? 'face';
  if (detection.kind === 'qr') return `QR ${detection.attributes?.payload ?? ''}`.trim();
  if (detection.kind === 'text') return detection.attributes?.text ?? 'text';
  if (detection.kind === 'plate') return `Plate ${detection.attributes?.plate ?? ''}`.trim();
  return detection.label ?? detection.kind;
}

/**
 * Draw `detections` (pixel boxes in the job's image space `width`×`height`) scaled to a
 * canvas at most `maxWidth` wide. `image` may be null (frame not stored): a dark frame is used.
 */
export function drawDetections(canvas, image, { width, height }, detections, { maxWidth = 640 } = {}) {
  const scale = Math.min(1, maxWidth / width);
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const g = canvas.getContext('2d');
  if (image) g.drawImage(image, 0, 0, canvas.width, canvas.height);
  else { g.fillStyle = '#0b1220'; g.fillRect(0, 0, canvas.width, canvas.height); }
  const line = Math.max(1.5, canvas.width / 320);
  g.lineWidth = line;
  g.font = `${Math.max(10, Math.round(canvas.width / 40))}px system-ui, sans-serif`;
  g.textBaseline = 'bottom';
  for (const detection of detections) {
    const color = COLORS[detection.kind] ?? '#e2e8f0';
    const [x1, y1, x2, y2] = detection.box.map((v) => v * scale);
    g.strokeStyle = color;
    const corners = detection.landmarks ?? [];
    if (OUTLINED.has(detection.kind) && corners.length >= 3) {
      g.beginPath();
      corners.forEach(([x, y], i) => (i ? g.lineTo(x * scale, y * scale) : g.moveTo(x * scale, y * scale)));
      g.closePath();
      g.stroke();
    } else {
      g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    if (detection.kind === 'face') {
      g.fillStyle = color;
      for (const [x, y] of detection.landmarks ?? []) g.fillRect(x * scale - line, y * scale - line, line * 2, line * 2);
    }
    const text = labelOf(detection);
    const textWidth = g.measureText(text).width + 6;
    const textHeight = parseInt(g.font, 10) + 4;
    const top = y1 > textHeight ? y1 : y1 + textHeight;
    g.fillStyle = color;
    g.fillRect(x1, top - textHeight, textWidth, textHeight);
    g.fillStyle = '#0b1220';
    g.fillText(text, x1 + 3, top - 1);
  }
  return canvas;
}

/** Load an object URL (or null) into an HTMLImageElement; resolves null on failure. */
export function loadImage(url) {
  if (!url) return Promise.resolve(null);
  return new Promise((resolve) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => resolve(null);
    image.src = url;
  });
}
