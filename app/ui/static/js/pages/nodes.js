// Nodes (issue 5): fleet status (online, fps, latency, last seen, dark warnings), updated by
// polling and by node events on the firehose; register (secret shown once) and revoke.
import { nodes, isNodeEvent, keyMay } from '../api.js';
import { h, errorText, timeElement, ago, formatMs, newestOnly } from '../dom.js';

const POLL_MS = 5000;

export function render(view, { firehose, me }) {
  // Nodes are managed with an admin key: a read/write key gets no form it cannot use, not even
  // for the moment before the list answers 403.
  if (keyMay(me, 'admin') === false) {
    view.append(h('h1', {}, 'Nodes'), h('p', { class: 'muted', id: 'nodes-error' }, 'Managing nodes needs an admin key.'));
    return undefined;
  }
  const body = h('tbody', {});
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'nodes' },
    h('thead', {}, h('tr', {}, ['Node', 'Status', 'Capture fps', 'Send fps', 'p50 latency', 'Frames/min', 'Last seen', 'Last error', ''].map((t) => h('th', {}, t)))),
    body));
  const listError = h('p', { class: 'error', id: 'nodes-error' });
  const nameInput = h('input', { id: 'node-name', placeholder: 'Node name', 'aria-label': 'New node’s name' });
  const registered = h('div', { id: 'registered', 'aria-live': 'polite' });

  const form = h('form', { class: 'row', id: 'register-node', onsubmit: register }, nameInput, h('button', { type: 'submit' }, 'Register node'));
  view.append(
    h('h1', {}, 'Nodes'),
    form,
    registered,
    listError,
    table);

  const refreshes = newestOnly();
  async function refresh() {
    const current = refreshes();
    try {
      const fleet = await nodes.list();
      if (!current()) return;
      listError.textContent = '';
      body.replaceChildren(...fleet.map(row));
      if (!fleet.length) body.append(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No nodes registered.')));
    } catch (error) {
      if (!current()) return;
      if (error.status === 403) {
        // The key's scopes were not known (or changed): the same answer as above, late.
        form.remove();
        table.remove();
        listError.className = 'muted';
        listError.textContent = 'Managing nodes needs an admin key.';
        return;
      }
      listError.textContent = error.status === 404 ? 'This server has no Nodes API (GET /v1/nodes).' : errorText(error);
    }
  }

  function row(node) {
    const status = node.online ? 'online' : 'offline';
    // A dark scene is a warning beside the status, never instead of it.
    return h('tr', { dataset: { nodeId: node.id, name: node.name, status, dark: String(node.dark_scene) } },
      h('td', { class: 'node-name' }, node.name),
      h('td', { class: `status-${status} node-status` }, status,
        node.dark_scene ? h('div', { class: 'warn node-dark' }, 'dark scene') : null),
      h('td', { class: 'node-fps' }, node.fps ?? '—'),
      h('td', { class: 'node-send-fps' }, node.send_fps ?? '—'),
      h('td', { class: 'node-latency' }, formatMs(node.latency_ms_p50 ?? null)),
      h('td', {}, node.frames_per_min ?? '—'),
      h('td', { class: 'node-last-seen' }, node.last_seen_at ? [timeElement(node.last_seen_at), ' ', h('span', { class: 'muted' }, `(${ago(node.last_seen_at)})`)] : 'never'),
      h('td', { class: 'error' }, node.last_error ?? ''),
      h('td', {}, h('button', { type: 'button', class: 'danger revoke', onclick: async () => {
        try { await nodes.revoke(node.id); await refresh(); } catch (e) { listError.textContent = errorText(e); }
      } }, 'Revoke')));
  }

  async function register(event) {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    try {
      const node = await nodes.register(name);
      nameInput.value = '';
      registered.replaceChildren(h('div', { class: 'notice warn' },
        h('p', {}, `Node “${node.name ?? name}” registered (id `, h('code', { class: 'node-id' }, node.id), '). Its secret is shown once — copy it now:'),
        h('div', { class: 'secret', id: 'node-secret' }, node.secret ?? ''),
        h('button', { type: 'button', class: 'ghost', onclick: () => registered.replaceChildren() }, 'I have copied it')));
      await refresh();
    } catch (error) {
      registered.replaceChildren(h('p', { class: 'error' }, errorText(error)));
    }
  }

  const onEvent = (message) => isNodeEvent(message.detail) && refresh();
  firehose.addEventListener('event', onEvent);
  const timer = setInterval(refresh, POLL_MS);
  refresh();
  return () => { clearInterval(timer); firehose.removeEventListener('event', onEvent); };
}
