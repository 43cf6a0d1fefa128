// People (issue 4): list, create, enroll photos (with the reasons for rejected ones), delete a
// face or a person, identify a photo. Promoting an unknown face is on the Job page. Issue 16:
// each face as its thumbnail, deleted (×) or moved to another person or back to unknown.
import { people, rejectionsOf, identifiedOf, imageUrl } from '../api.js';
import { h, fill, errorText, newestOnly, percent, plural } from '../dom.js';
import { drawDetections, loadImage } from '../draw.js';

/** A face's thumbnail (fetched with the API key), or a "no picture" box. */
export function thumbnail(url, label) {
  if (!url) return h('span', { class: 'thumb no-picture', title: 'No picture kept (node policy)' }, 'no picture');
  const img = h('img', { class: 'thumb', alt: label, width: 56, height: 56 });
  imageUrl(url).then((src) => { img.src = src; img.addEventListener('load', () => URL.revokeObjectURL(src), { once: true }); },
    () => { img.alt = `${label} (unavailable)`; });
  return img;
}

export function render(view) {
  const list = h('div', { class: 'people', id: 'people' });
  const listError = h('p', { class: 'error', id: 'people-error' });
  const nameInput = h('input', { id: 'person-name', placeholder: 'Name', required: true, 'aria-label': 'New person’s name' });
  const createError = h('span', { class: 'error' });
  const identifyInput = h('input', { type: 'file', id: 'identify-input', accept: 'image/*', onchange: identify });
  const identifyResult = h('div', { id: 'identify-result', 'aria-live': 'polite' });

  view.append(
    h('h1', {}, 'People'),
    h('form', { class: 'row needs-write', id: 'create-person', onsubmit: create }, nameInput, h('button', { type: 'submit' }, 'Add person'), createError),
    listError,
    list,
    h('h2', { class: 'needs-write' }, 'Identify'),
    h('div', { class: 'row needs-write' }, h('label', {}, 'Photo', identifyInput)),
    identifyResult);

  const refreshes = newestOnly();
  async function refresh() {
    const current = refreshes();
    try {
      const all = await people.list();
      if (!current()) return;
      listError.textContent = '';
      list.replaceChildren(...all.map((person) => personCard(person, all)));
      if (!all.length) list.append(h('p', { class: 'muted' }, 'Nobody enrolled yet.'));
    } catch (error) {
      if (!current()) return;
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

  function faceTile(person, face, everyone, report) {
    const others = everyone.filter((p) => p.id !== person.id);
    const move = h('select', { class: 'move-face needs-write', 'aria-label': 'Move this face', onchange: async () => {
      if (!move.value) return;
      const target = move.value === 'unknown' ? null : move.value;
      try { await people.moveEnrolled(person.id, face.id, target); await refresh(); } catch (e) { report.textContent = errorText(e); move.value = ''; }
    } },
    h('option', { value: '' }, 'Move…'),
    h('option', { value: 'unknown' }, 'Not this person'),
    others.map((p) => h('option', { value: p.id }, `To ${p.name}`)));
    return h('div', { class: 'face-tile', dataset: { faceId: face.id, sourceFaceId: face.source_face_id ?? '' } },
      thumbnail(face.thumbnail_url, `face of ${person.name}`),
      h('button', { type: 'button', class: 'ghost delete-face needs-write', title: `Delete face ${String(face.id).slice(0, 8)}`, 'aria-label': 'Delete face',
        onclick: async () => { try { await people.removeFace(person.id, face.id); await refresh(); } catch (e) { report.textContent = errorText(e); } } }, '× delete'),
      move);
  }

  function personCard(person, everyone) {
    const faces = people.facesOf(person);
    const report = h('div', { class: 'enroll-report', 'aria-live': 'polite' });
    const enrollInput = h('input', { type: 'file', multiple: true, accept: 'image/*', class: 'enroll-input',
      'aria-label': `Photos of ${person.name}`, onchange: async () => {
        const files = [...enrollInput.files];
        report.replaceChildren(h('span', { class: 'muted' }, `Enrolling ${plural(files.length, 'photo')}…`));
        try {
          await people.enroll(person.id, files);
          await refresh();
        } catch (error) {
          // The API refuses the whole batch when one photo is unusable: say so once, then each
          // photo's reason (the error's detail is those same reasons, so it is not shown too).
          const rejected = rejectionsOf(error);
          report.replaceChildren(...(rejected.length
            ? [h('div', { class: 'error' }, `Nothing enrolled: ${rejected.length} of ${plural(files.length, 'photo')} refused.`),
              h('ul', { class: 'rejections' }, rejected.map((r) => h('li', {}, h('strong', {}, r.name), ': ', r.reason)))]
            : [h('div', { class: 'error' }, errorText(error))]));
        }
        enrollInput.value = '';
      } });
    return h('section', { class: 'person', dataset: { personId: person.id, name: person.name } },
      h('div', { class: 'row' },
        h('strong', { class: 'person-name' }, person.name),
        h('span', { class: 'muted face-count' }, plural(people.faceCountOf(person), 'face'))),
      faces.length ? h('div', { class: 'faces' }, faces.map((face) => faceTile(person, face, everyone, report))) : null,
      person.sighting_count ? h('span', { class: 'muted sightings' }, `seen ${plural(person.sighting_count, 'time')} among unknown faces`) : null,
      h('label', { class: 'needs-write' }, 'Enroll photos', enrollInput),
      report,
      h('div', { class: 'row needs-write' }, h('button', { type: 'button', class: 'danger delete-person', onclick: async () => {
        try { await people.remove(person.id); await refresh(); } catch (e) { report.textContent = errorText(e); }
      } }, 'Delete person')));
  }

  async function identify() {
    const file = identifyInput.files[0];
    if (!file) return;
    identifyResult.replaceChildren(h('span', { class: 'muted' }, 'Identifying…'));
    try {
      const matches = identifiedOf(await people.identify(file));
      fill(identifyResult,
        matches.length ? await identifiedFigure(file, matches) : null,
        matches.length
          ? h('ul', { class: 'identified' }, matches.map((m) => h('li', {}, m.name ? h('strong', { class: 'identified-name' }, m.name) : h('span', { class: 'muted' }, 'unknown'),
            m.similarity !== null ? ` (${percent(m.similarity)})` : '')))
          : h('span', { class: 'muted' }, 'No face found.'));
    } catch (error) {
      identifyResult.replaceChildren(h('span', { class: 'error' }, errorText(error)));
    }
    identifyInput.value = '';
  }

  /**
   * The photo, read from the file picked (nothing is fetched back), with each face's box and
   * its name and similarity. Boxes are in the upright photo's pixels, which is what the browser
   * shows (it applies EXIF orientation, as the API does).
   */
  async function identifiedFigure(file, matches) {
    const url = URL.createObjectURL(file);
    try {
      const image = await loadImage(url);
      if (!image) return null;  // a format this browser cannot show: the list below still says who
      const faces = matches.filter((m) => m.box).map((m) => ({
        kind: 'face', box: m.box, landmarks: [],
        caption: m.name ? `${m.name} ${percent(m.similarity)}` : 'unknown',
      }));
      const canvas = drawDetections(h('canvas', { id: 'identify-image', class: 'identify-image' }), image,
        { width: image.naturalWidth, height: image.naturalHeight }, faces, { maxWidth: 960 });
      canvas.setAttribute('role', 'img');
      canvas.setAttribute('aria-label', `The photo with ${plural(faces.length, 'face')}: ${faces.map((f) => f.caption).join(', ')}`);
      return canvas;
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  refresh();
}
