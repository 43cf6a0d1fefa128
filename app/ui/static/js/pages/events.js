// Events out (issue 17): add a webhook (its secret shown once), see its deliveries (status,
// attempts, last response code; redeliver a dead one), and the MQTT bridge's status.
import { webhooks } from '../api.js';
import { h, fill, errorText, newestOnly, timeElement } from '../dom.js';

const POLL_MS = 3000;

export function render(view) {
  const urlInput = h('input', { id: 'webhook-url', type: 'url', required: true, placeholder: 'https://…', 'aria-label': 'Target URL' });
  const typeBoxes = h('fieldset', { id: 'webhook-types', class: 'row' }, h('legend', {}, 'Event types'));
  const filterInput = h('input', { id: 'webhook-labels', placeholder: 'labels, e.g. person,car (optional)', 'aria-label': 'Object labels filter' });
  const created = h('div', { id: 'webhook-created', 'aria-live': 'polite' });
  const formError = h('p', { class: 'error', id: 'webhook-error', role: 'alert' });
  const list = h('tbody', {});
  const deliveries = h('section', { id: 'deliveries' });
  const mqtt = h('section', { id: 'mqtt-status' }, h('h2', {}, 'MQTT'), h('p', { class: 'muted' }, 'Loading…'));
  let selected = null;

  view.append(
    h('h1', {}, 'Events out'),
    mqtt,
    h('h2', {}, 'Webhooks'),
    h('form', { id: 'add-webhook', class: 'needs-write', onsubmit: add }, urlInput, typeBoxes, filterInput,
      h('button', { type: 'submit' }, 'Add webhook')),
    formError,
    created,
    h('div', { class: 'table-wrap' }, h('table', { id: 'webhooks' },
      h('thead', {}, h('tr', {}, ['URL', 'Events', 'Enabled', ''].map((t) => h('th', {}, t)))), list)),
    deliveries);

  const refreshes = newestOnly();
  async function refresh() {
    const current = refreshes();
    // Apart: the status needs Redis, the webhooks only Postgres (one down, the other shows).
    const [status, hooks] = await Promise.allSettled([webhooks.status(), webhooks.list()]);
    if (!current()) return;
    if (status.status === 'fulfilled') {
      if (!typeBoxes.querySelector('input')) {
        for (const type of status.value.event_types) {
          typeBoxes.append(h('label', {}, h('input', { type: 'checkbox', name: 'type', value: type, checked: type === 'face.unknown' || type === 'face.identified' }), ` ${type}`));
        }
      }
      renderMqtt(status.value);
    } else {
      fill(mqtt, h('h2', {}, 'MQTT'), h('p', { class: 'error', id: 'mqtt-state' }, errorText(status.reason)));
    }
    if (hooks.status === 'rejected') { formError.textContent = errorText(hooks.reason); return; }
    list.replaceChildren(...hooks.value.map(row));
    if (!hooks.value.length) list.append(h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No webhooks yet.')));
    try { if (selected) await showDeliveries(selected); } catch (error) { formError.textContent = errorText(error); }
  }

  function renderMqtt(status) {
    const m = status.mqtt;
    const state = !m.configured ? 'not configured' : m.connected ? 'connected' : 'disconnected';
    fill(mqtt, h('h2', {}, 'MQTT'),
      h('p', { id: 'mqtt-state', dataset: { state } },
        h('span', { class: m.connected ? 'status-online' : 'status-offline' }, state),
        m.broker ? ` to ${m.broker}` : '',
        m.since ? [' since ', timeElement(m.since, { withDate: true })] : ''),
      m.configured ? h('p', { class: 'muted' }, `${m.published} messages published; ${m.lag ?? 0} events waiting`) : h('p', { class: 'muted' }, 'Set LOOKOUT_MQTT__URL to publish events to a broker.'),
      m.last_error ? h('p', { class: 'error' }, m.last_error) : null,
      h('p', { class: 'muted', id: 'webhook-queue' }, `Webhook deliveries pending: ${status.deliveries_pending}, dead: ${status.deliveries_dead}`));
  }

  function row(hook) {
    return h('tr', { dataset: { webhookId: hook.id } },
      h('td', { class: 'webhook-url' }, hook.url),
      h('td', {}, hook.event_types.join(', ')),
      h('td', {}, hook.enabled ? 'yes' : 'no'),
      h('td', {},
        h('button', { type: 'button', class: 'ghost show-deliveries', onclick: () => { selected = hook.id; showDeliveries(hook.id); } }, 'Deliveries'),
        h('button', { type: 'button', class: 'danger delete-webhook needs-write', onclick: async () => {
          try { await webhooks.remove(hook.id); if (selected === hook.id) { selected = null; deliveries.replaceChildren(); } await refresh(); } catch (e) { formError.textContent = errorText(e); }
        } }, 'Delete')));
  }

  async function showDeliveries(id) {
    const items = await webhooks.deliveries(id);
    const rows = items.map((d) => h('tr', { class: 'delivery', dataset: { status: d.status, eventType: d.event_type } },
      h('td', {}, d.event_type),
      h('td', { class: `delivery-status status-${d.status === 'delivered' ? 'online' : 'offline'}` }, d.status),
      h('td', { class: 'delivery-attempts' }, String(d.attempts)),
      h('td', { class: 'delivery-code' }, d.last_status_code ?? '—'),
      h('td', {}, timeElement(d.created_at)),
      h('td', { class: 'error' }, d.last_error ?? ''),
      // A pending delivery that failed waits for its next try (up to an hour): "Retry now".
      h('td', {}, d.status === 'pending' && !d.attempts ? '' : h('button', { type: 'button', class: 'ghost redeliver needs-write', onclick: async () => {
        try { await webhooks.redeliver(id, d.id); await showDeliveries(id); } catch (e) { formError.textContent = errorText(e); }
      } }, d.status === 'pending' ? 'Retry now' : 'Redeliver'))));
    deliveries.replaceChildren(h('h2', {}, 'Deliveries'),
      h('div', { class: 'table-wrap' }, h('table', { id: 'delivery-list' },
        h('thead', {}, h('tr', {}, ['Event', 'Status', 'Attempts', 'Last code', 'Queued', 'Last error', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, ...(rows.length ? rows : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No deliveries yet.'))])))));
  }

  async function add(event) {
    event.preventDefault();
    formError.textContent = '';
    const types = [...typeBoxes.querySelectorAll('input:checked')].map((box) => box.value);
    if (!types.length) { formError.textContent = 'Pick at least one event type.'; return; }
    const labels = filterInput.value.split(',').map((s) => s.trim()).filter(Boolean);
    try {
      const hook = await webhooks.create({ url: urlInput.value.trim(), event_types: types, filters: { labels } });
      urlInput.value = '';
      created.replaceChildren(h('div', { class: 'notice warn' },
        h('p', {}, 'Webhook added. Its signing secret (Standard Webhooks) is shown once — copy it now:'),
        h('div', { class: 'secret', id: 'webhook-secret' }, hook.secret),
        h('button', { type: 'button', class: 'ghost', onclick: () => created.replaceChildren() }, 'I have copied it')));
      await refresh();
    } catch (error) {
      formError.textContent = errorText(error);
    }
  }

  const timer = setInterval(refresh, POLL_MS);
  refresh();
  return () => clearInterval(timer);
}
