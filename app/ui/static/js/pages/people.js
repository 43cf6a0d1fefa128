// People (issue 4): list, create, enroll photos (with the reasons for rejected ones), delete a
// face or a person, identify a photo. Promoting an unknown face is on the Job page.
import { people, rejectionsOf, identifiedOf } from '../api.js';
import { h, errorText, percent } from '../dom.js';

export function render(view) {
  const list = h('div', { class: 'people', id: 'people' });
  const listError = h('p', { class: 'error', id: 'people-error' });
  const nameInput = h('input', { id: 'person-name', placeholder: 'Name', required: true, 'aria-label': 'New person’s name' });
  const createError = h('span', { class: 'error' });
  const identifyInput = h('input', { type: 'file', id: 'identify-input', accept: 'image/*', onchange: identify });
  const identifyResult = h('div', { id: 'identify-result', 'aria-live': 'polite' });

  view.append(
    h('h1', {}, 'People'),
    h('form', { class: 'row', id: 'create-person', onsubmit: create }, nameInput, h('button', { type: 'submit' }, 'Add person'), createError),
    listError,
    list,
    h('h2', {}, 'Identify'),
    h('div', { class: 'row' }, h('label', {}, 'Photo', identifyInput)),
    identifyResult);

  async function refresh() {
    try {
      const all = await people.list();
      listError.textContent = '';
      list.replaceChildren(...all.map(personCard));
      if (!all.length) list.append(h('p', { class: 'muted' }, 'Nobody enrolled yet.'));
    } catch (error) {
      listError.textContent = error.status === 404 ? 'This server has no People API (GET /v1/people).' : errorText(error);
    }
  }

  async function create(event) {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    try { await people.create(name); nameInput.value = ''; createError.textContent = ''; await refresh(); }
    catch (error) { createError.textContent = errorText(error); }
  }

  function personCard(person) {
    const faces = people.facesOf(person);
    const report = h('div', { class: 'enroll-report', 'aria-live': 'polite' });
    const enrollInput = h('input', { type: 'file', multiple: true, accept: 'image/*', class: 'enroll-input',
      'aria-label': `Photos of ${person.name}`, onchange: async () => {
        const files = [...enrollInput.files];
        report.replaceChildren(h('span', { class: 'muted' }, `Enrolling ${files.length} photo(s)…`));
        try {
          await people.enroll(person.id, files);
          await refresh();
        } catch (error) {
          const rejected = rejectionsOf(error);
          report.replaceChildren(h('div', { class: 'error' }, errorText(error)),
            rejected.length ? h('ul', { class: 'rejections' }, rejected.map((r) => h('li', {}, h('strong', {}, r.name), ': ', r.reason))) : null);
        }
        enrollInput.value = '';
      } });
    return h('section', { class: 'person', dataset: { personId: person.id, name: person.name } },
      h('div', { class: 'row' },
        h('strong', { class: 'person-name' }, person.name),
        h('span', { class: 'muted face-count' }, `${people.faceCountOf(person)} face(s)`)),
      faces.length ? h('div', { class: 'faces' }, faces.map((face) => h('span', { class: 'chip face-id' },
        `face ${String(face.id).slice(0, 8)}`,
        h('button', { type: 'button', class: 'ghost', title: 'Delete this face', 'aria-label': 'Delete face',
          onclick: async () => { try { await people.removeFace(person.id, face.id); await refresh(); } catch (e) { report.textContent = errorText(e); } } }, '×')))) : null,
      h('label', {}, 'Enroll photos', enrollInput),
      report,
      h('div', { class: 'row' }, h('button', { type: 'button', class: 'danger delete-person', onclick: async () => {
        try { await people.remove(person.id); await refresh(); } catch (e) { report.textContent = errorText(e); }
      } }, 'Delete person')));
  }

  async function identify() {
    const file = identifyInput.files[0];
    if (!file) return;
    identifyResult.replaceChildren(h('span', { class: 'muted' }, 'Identifying…'));
    try {
      const matches = identifiedOf(await people.identify(file));
      identifyResult.replaceChildren(matches.length
        ? h('ul', { class: 'identified' }, matches.map((m) => h('li', {}, m.name ? h('strong', { class: 'identified-name' }, m.name) : h('span', { class: 'muted' }, 'unknown'),
          m.similarity !== null ? ` (${percent(m.similarity)})` : '')))
        : h('span', { class: 'muted' }, 'No face found.'));
    } catch (error) {
      identifyResult.replaceChildren(h('span', { class: 'error' }, errorText(error)));
    }
    identifyInput.value = '';
  }

  refresh();
}
