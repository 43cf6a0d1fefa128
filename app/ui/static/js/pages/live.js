// Live: the firehose as cards (thumbnail with boxes, identities, counts, node, time).
import { imageUrl, jobs, identityOf, nodeNameOf, isNodeEvent } from '../api.js';
import { h, timeElement, timeZone } from '../dom.js';
import { drawDetections, loadImage } from '../draw.js';

const MAX_CARDS = 60;
const UPLOADS = '(uploads)';

export function render(view, { firehose }) {
  let paused = false;
  let held = [];  // events that arrived while paused
  let nodeFilter = '';
  const nodeNames = new Set();

  const feed = h('div', { class: 'feed', id: 'feed', 'aria-live': 'polite' });
  const empty = h('p', { class: 'muted', id: 'feed-empty' }, 'Waiting for results… upload an image or start a node. Earlier jobs are on the ',
    h('a', { href: '#/jobs' }, 'Jobs'), ' page.');
  const heldNote = h('span', { class: 'muted', id: 'held' });
  const pauseButton = h('button', { type: 'button', id: 'pause', class: 'ghost', onclick: togglePause }, 'Pause');
  const nodeSelect = h('select', { id: 'node-filter', onchange: () => { nodeFilter = nodeSelect.value; applyFilter(); } },
    h('option', { value: '' }, 'All sources'));

  view.append(
    h('h1', {}, 'Live'),
    h('div', { class: 'toolbar' },
      pauseButton,
      h('label', {}, 'Source', nodeSelect),
      heldNote,
      h('span', { class: 'muted' }, `Times in ${timeZone}`)),
    empty,
    feed,
  );

  function togglePause() {
    paused = !paused;
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    pauseButton.setAttribute('aria-pressed', String(paused));
    if (!paused) {
      for (const event of held) add(event);
      held = [];
    }
    heldNote.textContent = '';
  }

  function sourceOf(job) { return nodeNameOf(job) ?? UPLOADS; }

  function noteSource(source) {
    if (nodeNames.has(source)) return;
    nodeNames.add(source);
    nodeSelect.append(h('option', { value: source }, source));
  }

  function applyFilter() {
    for (const card of feed.children) card.hidden = Boolean(nodeFilter) && card.dataset.source !== nodeFilter;
  }

  function add(event) {
    if (isNodeEvent(event) || !(event.job || event.type === 'error')) return;
    // An `error` event carries only job_id and error: a card without image or detections.
    const job = event.job ?? { id: event.job_id, error: event.error, image: { width: 320, height: 180 }, created_at: eventTime(event.at) };
    const source = sourceOf(job);
    noteSource(source);
    feed.querySelector(`[data-job-id="${job.id}"]`)?.remove();  // a redelivered result
    const card = renderCard({ ...event, job }, source);  // an error event has no job of its own
    card.hidden = Boolean(nodeFilter) && source !== nodeFilter;
    feed.prepend(card);
    while (feed.children.length > MAX_CARDS) feed.lastElementChild.remove();
    empty.hidden = true;
  }

  const onEvent = (message) => {
    if (paused) {
      if (!isNodeEvent(message.detail)) held.push(message.detail);
      heldNote.textContent = `${held.length} new while paused`;
      return;
    }
    add(message.detail);
  };
  for (const event of firehose.recent) add(event);
  firehose.addEventListener('event', onEvent);
  return () => firehose.removeEventListener('event', onEvent);
}

// A firehose entry's `at`: RFC 3339 text; epoch seconds in entries written before that.
function eventTime(at) {
  if (typeof at === 'number') return new Date(at * 1000).toISOString();
  return typeof at === 'string' ? at : null;
}

function renderCard(event, source) {
  const job = event.job;
  const detections = job.detections ?? [];
  const faces = detections.filter((d) => d.kind === 'face');
  const known = faces.map(identityOf).filter(Boolean);
  const canvas = h('canvas', { 'aria-label': `${faces.length} faces` });
  drawDetections(canvas, null, job.image, detections, { maxWidth: 480 });
  // The image needs the key; a node frame that was not stored has none (links.image null:
  // boxes on dark, and no request that could only 404 against the key's rate limit).
  if (job.links?.image !== null) {
    imageUrl(jobs.imagePath(job.id))
      .then(async (url) => {
        const image = await loadImage(url);
        drawDetections(canvas, image, job.image, detections, { maxWidth: 480 });
        URL.revokeObjectURL(url);
      })
      .catch(() => {});
  }
  const counts = Object.entries(job.counts ?? {});
  return h('article', { class: `card ${event.type === 'error' ? 'failed' : ''}`, dataset: { jobId: job.id, source, faces: String(faces.length) } },
    h('a', { class: 'thumb', href: `#/jobs/${job.id}`, title: 'Open the job' }, canvas),
    h('div', { class: 'meta' },
      h('div', { class: 'row' },
        h('strong', { class: 'source' }, source),
        timeElement(job.finished_at ?? job.created_at)),
      event.type === 'error'
        ? h('div', { class: 'error' }, job.error ?? event.error ?? 'failed')
        : h('div', { class: 'chips counts' },
          counts.length ? counts.map(([label, n]) => h('span', { class: `chip ${label === 'face' ? 'face' : label === 'qr' ? 'qr' : 'object'}`, dataset: { label } }, `${label} × ${n}`))
            : h('span', { class: 'muted' }, 'nothing found')),
      known.length ? h('div', { class: 'chips identities' }, known.map((identity) => h('span', { class: 'chip known' }, identity.name))) : null,
    ));
}
