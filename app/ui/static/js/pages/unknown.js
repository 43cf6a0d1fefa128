// Unknown (issue 16): the faces nobody enrolled, grouped by the clustering into unnamed people,
// biggest first. Each shows its faces (a face that is not this person goes back to unknown),
// its size and when it was last seen; a name box makes it a person (its faces join the
// gallery); clusters merge by selecting them, or into a named person; a cluster can be ignored.
import { people } from '../api.js';
import { h, errorText, ago, newestOnly, plural } from '../dom.js';
import { thumbnail } from './people.js';

const REFRESH_MS = 10_000;  // the clustering runs every few seconds on the server

export function render(view) {
  const list = h('div', { class: 'clusters', id: 'clusters' });
  const message = h('p', { class: 'error', id: 'unknown-error', role: 'alert' });
  const mergeButton = h('button', { type: 'button', id: 'merge-selected', disabled: true, onclick: mergeSelected }, 'Merge selected');
  let named = [];

  view.append(
    h('h1', {}, 'Unknown'),
    h('p', { class: 'muted' }, 'Faces nobody enrolled, grouped by person. Name a group to recognise them from now on.'),
    h('div', { class: 'row' }, h('span', { class: 'needs-write' }, mergeButton), h('button', { type: 'button', class: 'ghost', id: 'refresh-unknown', onclick: refresh }, 'Refresh')),
    message,
    list);

  function selected() {
    return [...list.querySelectorAll('.pick:checked')].map((box) => box.value);
  }

  async function act(step) {
    try { await step(); message.textContent = ''; await refresh(); } catch (error) { message.textContent = errorText(error); }
  }

  async function mergeSelected() {
    const [into, ...rest] = selected();  // the list is biggest first: merge into the biggest
    if (into && rest.length) await act(() => people.merge(into, rest));
  }

  function clusterCard(cluster) {
    const nameInput = h('input', { class: 'cluster-name', placeholder: 'Who is this?', 'aria-label': 'Name this person', required: true });
    const mergeInto = h('select', { class: 'merge-into', 'aria-label': 'Merge into a named person' },
      h('option', { value: '' }, 'Merge into…'), named.map((p) => h('option', { value: p.id }, p.name)));
    return h('section', { class: 'cluster', dataset: { personId: cluster.id, faces: cluster.sightings.map((s) => s.face_id).join(',') } },
      h('div', { class: 'row' },
        h('label', { class: 'needs-write' }, h('input', { type: 'checkbox', class: 'pick', value: cluster.id, onchange: () => { mergeButton.disabled = selected().length < 2; } }), ' select'),
        h('strong', { class: 'cluster-size' }, plural(cluster.sighting_count, 'face')),
        h('span', { class: 'muted last-seen', title: cluster.last_seen ?? '' }, `last seen ${ago(cluster.last_seen)}`)),
      h('div', { class: 'faces' }, cluster.sightings.map((s) => h('div', { class: 'face-tile', dataset: { faceId: s.face_id } },
        thumbnail(s.thumbnail_url, `unknown face ${s.face_id}`),
        h('button', { type: 'button', class: 'ghost not-this-person needs-write', title: 'Not this person', onclick: () => act(() => people.moveFace(s.face_id, null)) }, '× not them')))),
      h('form', { class: 'row name-form needs-write', onsubmit: (event) => {
        event.preventDefault();
        const name = nameInput.value.trim();
        if (name) act(() => people.name(cluster.id, name));
      } }, nameInput, h('button', { type: 'submit' }, 'Name')),
      h('div', { class: 'row needs-write' },
        mergeInto,
        h('button', { type: 'button', class: 'merge-into-button', onclick: () => { if (mergeInto.value) act(() => people.merge(mergeInto.value, [cluster.id])); } }, 'Merge'),
        h('button', { type: 'button', class: 'ghost ignore', onclick: () => act(() => people.ignore(cluster.id)) }, 'Ignore')));
  }

  const refreshes = newestOnly();
  async function refresh() {
    const current = refreshes();
    try {
      const [clusters, everyone] = await Promise.all([people.unnamed(), people.list()]);
      if (!current()) return;
      named = everyone;
      list.replaceChildren(...clusters.map(clusterCard));
      if (!clusters.length) list.append(h('p', { class: 'muted', id: 'no-clusters' }, 'No unknown faces grouped yet.'));
      mergeButton.disabled = true;
    } catch (error) {
      if (current()) message.textContent = errorText(error);
    }
  }

  refresh();
  const timer = setInterval(() => { if (!list.querySelector('input:focus, select:focus, .pick:checked')) refresh(); }, REFRESH_MS);
  return () => clearInterval(timer);
}
