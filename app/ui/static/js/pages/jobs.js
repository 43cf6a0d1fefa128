// Jobs: every job the key may see (uploads, curl, nodes), newest first, from GET /v1/jobs;
// filters (status, task, source) and "Load more" over the API's cursor. Each row opens #/jobs/ID.
// The filters live in the hash (#/jobs?status=failed&source=node) so a filtered list can be
// reloaded, bookmarked and shared.
import { jobs, nodes, keyMay, nodeNameOf } from '../api.js';
import { h, timeElement, formatMs, errorText, newestOnly, timeZone, plural } from '../dom.js';

const PAGE_SIZE = 20;
const STATUSES = ['queued', 'running', 'done', 'failed'];
const TASKS = ['faces', 'objects', 'qr', 'text', 'plates', 'identify'];
const FILTERS = ['status', 'task', 'source', 'node_id'];

export function render(view, { query, me }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) ?? '']));
  let cursor = null;
  let loading = false;
  const loads = newestOnly();  // a listing's answers arriving after a newer listing began are dropped

  const statusSelect = select('job-status-filter', 'Status', ['', 'All statuses'], STATUSES.map((s) => [s, s]));
  const taskSelect = select('job-task-filter', 'Task', ['', 'All tasks'], TASKS.map((t) => [t, t]));
  // Source: '', 'upload', 'node' or 'node:<id>' (one node); node options come from the fleet
  // (admin keys) and from the nodes of the rows shown.
  const sourceSelect = select('job-source-filter', 'Source', ['', 'All sources'], [['upload', 'Uploads'], ['node', 'Any node']]);
  const body = h('tbody', {});
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'jobs' },
    h('thead', {}, h('tr', {}, ['Job', 'Created', 'Status', 'Source', 'Tasks', 'Found', 'Total'].map((t) => h('th', {}, t)))),
    body));
  const note = h('p', { class: 'muted', id: 'jobs-note', 'aria-live': 'polite' }, 'Loading…');
  const listError = h('p', { class: 'error', id: 'jobs-error' });
  const more = h('button', { type: 'button', id: 'jobs-more', class: 'ghost', hidden: true, onclick: () => load() }, 'Load more');

  statusSelect.value = filters.status;
  taskSelect.value = filters.task;
  if (filters.node_id) noteNode(filters.node_id, null);
  sourceSelect.value = filters.node_id ? `node:${filters.node_id}` : filters.source;
  for (const control of [statusSelect, taskSelect, sourceSelect]) control.addEventListener('change', refilter);

  view.append(
    h('h1', {}, 'Jobs'),
    h('div', { class: 'toolbar', id: 'job-filters' },
      labelled('Status', statusSelect), labelled('Task', taskSelect), labelled('Source', sourceSelect),
      h('button', { type: 'button', class: 'ghost', id: 'jobs-refresh', onclick: reload }, 'Refresh'),
      h('span', { class: 'muted' }, `Times in ${timeZone}`)),
    listError,
    table,
    h('div', { class: 'row' }, more, note));

  function select(id, label, [allValue, allText], options) {
    return h('select', { id, 'aria-label': label },
      h('option', { value: allValue }, allText),
      options.map(([value, text]) => h('option', { value }, text)));
  }

  function labelled(text, control) { return h('label', {}, text, control); }

  /** A source option for one node; `name` null until a row or the fleet names it. */
  function noteNode(id, name) {
    const value = `node:${id}`;
    const known = [...sourceSelect.options].find((option) => option.value === value);
    if (!known) sourceSelect.append(h('option', { value }, name ?? `node ${id.slice(0, 8)}`));
    else if (name) known.textContent = name;
  }

  function refilter() {
    const source = sourceSelect.value;
    filters.status = statusSelect.value;
    filters.task = taskSelect.value;
    filters.source = source.startsWith('node:') ? '' : source;
    filters.node_id = source.startsWith('node:') ? source.slice('node:'.length) : '';
    const search = new URLSearchParams(Object.entries(filters).filter(([, value]) => value)).toString();
    // replaceState, not location.hash: no hashchange, so the page (and the focused control) stays.
    history.replaceState(null, '', `#/jobs${search ? `?${search}` : ''}`);
    reload();
  }

  function reload() {
    cursor = null;
    loading = false;
    more.hidden = true;
    body.replaceChildren();
    load();
  }

  async function load() {
    if (loading) return;
    loading = true;
    more.disabled = true;
    note.textContent = 'Loading…';
    const current = loads();
    try {
      const page = await jobs.list({ ...filters, cursor }, PAGE_SIZE);
      if (!current()) return;
      listError.textContent = '';
      body.append(...page.items.map(row));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const shown = body.children.length;
      note.textContent = shown
        ? `${plural(shown, 'job')}${cursor ? '' : ', all shown'}`
        : (Object.values(filters).some(Boolean) ? 'No job matches these filters.' : 'No jobs yet: upload an image or start a node.');
    } catch (error) {
      if (!current()) return;
      listError.textContent = errorText(error);
      note.textContent = '';
    } finally {
      if (current()) { loading = false; more.disabled = false; }
    }
  }

  function row(job) {
    const source = nodeNameOf(job);
    if (job.node_id) noteNode(job.node_id, source);
    const counts = Object.entries(job.counts ?? {});
    return h('tr', { class: 'row-link', dataset: { jobId: job.id, status: job.status }, onclick: (event) => openJob(event, job.id) },
      h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}`, class: 'job-link', title: job.id }, h('code', {}, job.id.slice(0, 8)))),
      h('td', {}, timeElement(job.created_at, { withDate: true })),
      h('td', { class: `job-status status-${job.status}` }, job.status),
      h('td', { class: 'job-source' }, source ?? (job.node_id ? 'node (removed)' : 'upload')),
      h('td', { class: 'job-tasks' }, (job.tasks ?? []).join(', ')),
      h('td', { class: 'job-counts' }, job.error
        ? h('span', { class: 'error', title: job.error }, 'error')
        : (counts.length ? counts.map(([label, n]) => `${label} × ${n}`).join(', ') : h('span', { class: 'muted' }, 'nothing'))),
      h('td', {}, formatMs(job.timings?.total_ms)));
  }

  // A click anywhere on a row opens its job, as its id's link does (which keeps the keyboard,
  // and the new tab of a middle or modified click); a drag that selects text does not.
  function openJob(event, id) {
    if (event.target.closest('a') || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (window.getSelection()?.toString()) return;
    location.hash = `#/jobs/${encodeURIComponent(id)}`;
  }

  async function fleet() {
    if (!keyMay(me, 'admin')) return;  // the node list needs an admin key
    try { for (const node of await nodes.list()) noteNode(node.id, node.name); } catch { /* rows still name their nodes */ }
    if (filters.node_id) sourceSelect.value = `node:${filters.node_id}`;
  }

  fleet();
  load();
}
