// Job: the annotated image, faces (identity, similarity, age, gender), objects, QR, text,
// plates, timings.
import { jobs, people, imageUrl, identityOf, faceIdOf, nodeNameOf } from '../api.js';
import { h, timeElement, formatMs, percent, errorText } from '../dom.js';
import { drawDetections, loadImage } from '../draw.js';

export function render(view, { params: [id] }) {
  const urls = [];
  const status = h('p', { class: 'muted' }, 'Loading…');
  view.append(h('h1', {}, 'Job ', h('code', {}, id ?? '')), status);
  if (!id) { status.textContent = 'No job id.'; return; }
  let socket = null;
  let left = false;
  let retryMs = 500;  // between a closed events socket and the next look at the job
  let timer = null;

  async function load() {
    let job;
    try { job = await jobs.get(id); } catch (error) {
      status.className = 'error';
      status.textContent = error.status === 404 ? 'No such job (deleted, or another key’s).' : errorText(error);
      return;
    }
    if (!job.status || !['done', 'failed'].includes(job.status)) {
      status.textContent = `Job is ${job.status}; waiting for its result…`;
      socket = jobs.events(id);
      // Closed after its events (the result): look again now. Closed without a word (refused
      // or cut: a limit, an outage, 4429, 4503, 1013): look again later, each time later, or
      // the page would hammer the API it is waiting for.
      let heard = false;
      socket.onmessage = () => { heard = true; };
      socket.onclose = () => {
        socket = null;
        if (left) return;
        if (heard) { retryMs = 500; load(); return; }
        timer = setTimeout(load, retryMs);
        retryMs = Math.min(10000, retryMs * 2);
      };
      return;
    }
    status.remove();
    view.append(await renderJob(job));
  }

  async function figure(job) {
    const detections = job.detections ?? [];
    // The server-drawn JPEG first; else boxes drawn here on the original; else on a dark frame.
    try {
      const url = await imageUrl(jobs.processedImagePath(job.id));
      urls.push(url);
      return h('img', { src: url, id: 'annotated', alt: `Job ${job.id} with ${detections.length} detections drawn` });
    } catch { /* not stored (node frames, expired): draw here */ }
    let image = null;
    try {
      const url = await imageUrl(jobs.imagePath(job.id));
      urls.push(url);
      image = await loadImage(url);
    } catch { /* not stored */ }
    return drawDetections(h('canvas', { id: 'annotated' }), image, job.image, detections, { maxWidth: 1280 });
  }

  async function renderJob(job) {
    const detections = job.detections ?? [];
    const faces = detections.filter((d) => d.kind === 'face');
    const objects = detections.filter((d) => d.kind === 'object');
    const codes = detections.filter((d) => d.kind === 'qr');
    const texts = detections.filter((d) => d.kind === 'text');
    const plates = detections.filter((d) => d.kind === 'plate');
    const asked = job.tasks ?? [];
    const source = nodeNameOf(job);
    const deleteArea = h('div', { class: 'row needs-write', id: 'delete-area' });
    const deleteButton = h('button', { type: 'button', class: 'danger', id: 'delete-job', onclick: askDelete }, 'Delete job');
    deleteArea.append(deleteButton);

    function askDelete() {
      const error = h('span', { class: 'error' });
      deleteArea.replaceChildren(
        h('span', {}, 'Delete the job, its images and detections?'),
        h('button', { type: 'button', class: 'danger', id: 'confirm-delete', onclick: async () => {
          try {
            await jobs.remove(job.id);
            view.replaceChildren(h('h1', {}, 'Job deleted'), h('p', { id: 'deleted' }, 'The job, its images and detections are gone. ', h('a', { href: '#/jobs' }, 'Back to Jobs')));
          } catch (e) { error.textContent = errorText(e); }
        } }, 'Delete'),
        h('button', { type: 'button', class: 'ghost', onclick: () => deleteArea.replaceChildren(deleteButton) }, 'Keep'),
        error);
    }

    return h('div', { class: 'job-layout' },
      h('div', { class: 'figure' }, await figure(job)),
      h('div', {},
        h('dl', { class: 'timings', id: 'timings' },
          h('dt', {}, 'Status'), h('dd', { id: 'job-status' }, job.status),
          h('dt', {}, 'Source'), h('dd', {}, source ?? 'upload'),
          h('dt', {}, 'Tasks'), h('dd', {}, (job.tasks ?? []).join(', ')),
          h('dt', {}, 'Image'), h('dd', {}, `${job.image.width}×${job.image.height} ${job.image.content_type ?? ''}`),
          h('dt', {}, 'Created'), h('dd', {}, timeElement(job.created_at, { withDate: true })),
          h('dt', {}, 'Finished'), h('dd', {}, timeElement(job.finished_at, { withDate: true })),
          h('dt', {}, 'Queue'), h('dd', {}, formatMs(job.timings?.queue_ms)),
          h('dt', {}, 'Decode'), h('dd', {}, formatMs(job.timings?.decode_ms)),
          h('dt', {}, 'Inference'), h('dd', {}, formatMs(job.timings?.inference_ms)),
          h('dt', {}, 'Total'), h('dd', {}, formatMs(job.timings?.total_ms))),
        job.error ? h('p', { class: 'error' }, job.error) : null,
        deleteArea),
      // A section for each kind the job asked for (identify asks for faces) or found: a text
      // job says nothing about faces it never looked for.
      h('section', { class: 'wide' },
        asked.includes('faces') || asked.includes('identify') || faces.length
          ? h('div', { id: 'faces-section' },
            h('h2', {}, `Faces (${faces.length})`),
            faces.length ? facesTable(faces) : h('p', { class: 'muted' }, 'No faces.'))
          : null,
        asked.includes('objects') || objects.length
          ? h('div', { id: 'objects-section' },
            h('h2', {}, `Objects (${objects.length})`),
            objects.length ? objectsTable(objects) : h('p', { class: 'muted' }, 'No objects.'))
          : null,
        asked.includes('qr') || codes.length
          ? h('div', { id: 'qr-section' },
            h('h2', {}, `QR codes (${codes.length})`),
            codes.length ? h('ul', { id: 'qr-codes' }, codes.map((c) => h('li', {}, h('code', {}, c.attributes?.payload ?? '')))) : h('p', { class: 'muted' }, 'No QR codes.'))
          : null,
        asked.includes('text') || texts.length ? textSection(job, texts) : null,
        asked.includes('plates') || plates.length ? platesSection(plates) : null));
  }

  function textSection(job, texts) {
    return h('div', { id: 'text-section' },
      h('h2', {}, `Text (${texts.length} regions)`),
      texts.length
        ? [h('pre', { id: 'full-text', class: 'full-text' }, job.text ?? texts.map((t) => t.attributes?.text ?? '').join('\n')),
          h('div', { class: 'table-wrap' }, h('table', { id: 'text-regions' },
            h('thead', {}, h('tr', {}, ['Line', 'Text', 'Confidence', 'Polygon'].map((t) => h('th', {}, t)))),
            h('tbody', {}, texts.map((t) => h('tr', {},
              h('td', {}, (t.attributes?.line ?? 0) + 1),
              h('td', {}, t.attributes?.text ?? ''),
              h('td', {}, t.score.toFixed(2)),
              h('td', {}, (t.landmarks ?? []).map((p) => p.map(Math.round).join(',')).join(' ')))))))]
        : h('p', { class: 'muted' }, 'No text.'));
  }

  function platesSection(plates) {
    return h('div', { id: 'plates-section' },
      h('h2', {}, `Plates (${plates.length})`),
      plates.length
        ? h('div', { class: 'table-wrap' }, h('table', { id: 'plates' },
          h('thead', {}, h('tr', {}, ['Plate', 'Confidence', 'Vehicle', 'Vehicle box'].map((t) => h('th', {}, t)))),
          h('tbody', {}, plates.map((p) => h('tr', {},
            h('td', {}, h('code', {}, p.attributes?.plate ?? '')),
            h('td', {}, p.score.toFixed(2)),
            h('td', {}, p.attributes?.vehicle?.label ?? ''),
            h('td', {}, (p.attributes?.vehicle?.box ?? []).map(Math.round).join(', ')))))))
        : h('p', { class: 'muted' }, 'No plates.'));
  }

  function facesTable(faces) {
    return h('div', { class: 'table-wrap' }, h('table', { id: 'faces' },
      h('thead', {}, h('tr', {}, ['#', 'Identity', 'Similarity', 'Age', 'Gender', 'Score', 'Box', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, faces.map((face, i) => {
        const identity = identityOf(face);
        const faceId = faceIdOf(face);
        return h('tr', {},
          h('td', {}, i + 1),
          h('td', { class: 'identity' }, identity ? identity.name : h('span', { class: 'muted' }, 'unknown')),
          h('td', {}, identity?.manual ? 'placed by hand' : identity ? percent(identity.similarity) : '—'),
          h('td', {}, face.attributes?.age ?? '—'),
          h('td', {}, face.attributes?.gender ?? '—'),
          h('td', {}, face.score.toFixed(2)),
          h('td', {}, face.box.map(Math.round).join(', ')),
          h('td', {}, !identity && faceId ? promoteControl(faceId) : ''));
      }))));
  }

  function promoteControl(faceId) {
    const box = h('span', { class: 'row needs-write' });
    const start = h('button', { type: 'button', class: 'ghost', onclick: () => {
      const name = h('input', { placeholder: 'Name', 'aria-label': 'New person’s name' });
      const error = h('span', { class: 'error' });
      box.replaceChildren(name, h('button', { type: 'button', onclick: async () => {
        try { await people.promote(faceId, { name: name.value.trim() }); box.replaceChildren(`Promoted to ${name.value.trim()}`); }
        catch (e) { error.textContent = errorText(e); }
      } }, 'Promote'), error);
      name.focus();
    } }, 'Promote…');
    box.append(start);
    return box;
  }

  function objectsTable(objects) {
    return h('div', { class: 'table-wrap' }, h('table', { id: 'objects' },
      h('thead', {}, h('tr', {}, ['Label', 'Score', 'Box'].map((t) => h('th', {}, t)))),
      h('tbody', {}, objects.map((o) => h('tr', {}, h('td', {}, o.label ?? ''), h('td', {}, o.score.toFixed(2)), h('td', {}, o.box.map(Math.round).join(', ')))))));
  }

  load();
  return () => { left = true; clearTimeout(timer); socket?.close(); for (const url of urls) URL.revokeObjectURL(url); };
}
