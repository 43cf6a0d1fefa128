// Upload: drop (or pick) several images; each shows its progress, then its result when done.
import { jobs, imageUrl, identityOf } from '../api.js';
import { h, errorText, formatMs } from '../dom.js';
import { drawDetections, loadImage } from '../draw.js';

const TASKS = ['faces', 'identify', 'objects', 'qr', 'text', 'plates'];
const CHECKED = new Set(['faces', 'identify', 'objects']);

export function render(view) {
  const sockets = new Set();
  let left = false;
  const input = h('input', { type: 'file', id: 'file-input', accept: 'image/jpeg,image/png,image/webp,image/bmp,image/gif,image/tiff', multiple: true, hidden: true,
    onchange: () => { send([...input.files]); input.value = ''; } });
  const zone = h('div', { class: 'dropzone', id: 'dropzone', role: 'button', tabindex: '0',
    onclick: () => input.click(),
    onkeydown: (e) => (e.key === 'Enter' || e.key === ' ') && input.click(),
    ondragover: (e) => { e.preventDefault(); zone.classList.add('over'); },
    ondragleave: () => zone.classList.remove('over'),
    ondrop: (e) => { e.preventDefault(); zone.classList.remove('over'); send([...e.dataTransfer.files]); },
  }, h('strong', {}, 'Drop images here'), h('div', { class: 'muted' }, 'or click to choose — JPEG, PNG or WebP, several at once'));
  const checks = TASKS.map((task) => h('input', { type: 'checkbox', name: 'task', value: task, checked: CHECKED.has(task) }));
  const list = h('div', { class: 'uploads', id: 'uploads' });

  view.append(
    h('h1', {}, 'Upload'),
    h('p', { class: 'read-only-note muted', id: 'read-only-upload' },
      'This key is read-only: uploading needs a key with the write scope.'),
    h('div', { class: 'toolbar needs-write' }, h('span', { class: 'muted' }, 'Find:'),
      TASKS.map((task, i) => h('label', {}, checks[i], task))),
    h('div', { class: 'needs-write' }, zone), input, list);

  function send(files) {
    const tasks = checks.filter((c) => c.checked).map((c) => c.value).join(',') || 'faces';
    for (const file of files) list.prepend(uploadRow(file, tasks));
  }

  function uploadRow(file, tasks) {
    const progress = h('progress', { max: 1, value: 0 });
    const state = h('span', { class: 'state' }, 'uploading');
    const result = h('div', { class: 'result' });
    const canvas = h('canvas', { width: 96, height: 64 });
    const row = h('div', { class: 'upload', dataset: { file: file.name, state: 'uploading' } },
      canvas,
      h('div', {}, h('div', { class: 'row' }, h('strong', {}, file.name), state), progress, result));
    const setState = (value, text = value) => { row.dataset.state = value; state.textContent = text; };

    const { promise } = jobs.upload(file, tasks, (fraction) => { progress.value = fraction; });
    promise.then((job) => {
      progress.value = 1;
      row.dataset.jobId = job.id;
      setState(job.status, job.status);
      if (job.status === 'done') return show(job);
      follow(job.id);
    }, (error) => {
      setState('rejected', `rejected (${error.status || 'network'})`);
      result.replaceChildren(h('div', { class: 'error' }, errorText(error)));
    });

    function follow(id) {
      const socket = jobs.events(id);
      sockets.add(socket);
      let ended = false;
      socket.onmessage = (message) => {
        const event = JSON.parse(message.data);
        if (event.type === 'status') setState(event.status);
        else if (event.type === 'result') { ended = true; show(event.job); }
        else if (event.type === 'error') { ended = true; failed(event.error); }
      };
      // Closed before the job ended (many uploads at once over the WebSocket limit, 4429; an
      // outage, 4503): ask for the job instead, less and less often, until it ends.
      socket.onclose = () => {
        sockets.delete(socket);
        if (!ended && !left) setTimeout(() => poll(id, 1000), 1000);
      };
    }

    async function poll(id, delayMs) {
      if (left) return;
      try {
        const job = await jobs.get(id);
        if (job.status === 'done') return show(job);
        if (job.status === 'failed') return failed(job.error);
        setState(job.status);
      } catch (error) {
        if (error.status === 404) return failed('the job is gone (deleted)');
      }
      const next = Math.min(10000, delayMs * 2);
      setTimeout(() => poll(id, next), next);
    }

    function failed(reason) {
      setState('failed');
      result.replaceChildren(h('div', { class: 'error' }, reason ?? 'failed'));
    }

    async function show(job) {
      setState('done');
      const detections = job.detections ?? [];
      const names = detections.map(identityOf).filter(Boolean).map((i) => i.name);
      const counts = Object.entries(job.counts ?? {}).map(([label, n]) => `${label} × ${n}`).join(', ') || 'nothing found';
      result.replaceChildren(
        h('div', { class: 'summary' }, counts, names.length ? ` — ${names.join(', ')}` : ''),
        h('div', { class: 'muted' }, `total ${formatMs(job.timings?.total_ms)} · `, h('a', { href: `#/jobs/${job.id}` }, 'open job')));
      try {
        const url = await imageUrl(jobs.imagePath(job.id));
        drawDetections(canvas, await loadImage(url), job.image, detections, { maxWidth: 192 });
        URL.revokeObjectURL(url);
      } catch { drawDetections(canvas, null, job.image, detections, { maxWidth: 192 }); }
    }
    return row;
  }

  return () => { left = true; for (const socket of sockets) socket.close(); };
}
