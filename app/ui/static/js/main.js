// Hash router (#/live, #/upload, #/jobs, #/jobs/ID, #/people, #/unknown, #/nodes, #/events;
// a page's filters ride after '?', as #/jobs?status=failed), sign-in, the key's scopes, the
// shared firehose.
import { auth, authEvents, jobs, keys, keyMay, ApiError } from './api.js';
import { Firehose } from './stream.js';
import { errorText } from './dom.js';
import * as live from './pages/live.js';
import * as upload from './pages/upload.js';
import * as job from './pages/job.js';
import * as jobList from './pages/jobs.js';
import * as people from './pages/people.js';
import * as unknown from './pages/unknown.js';
import * as nodes from './pages/nodes.js';
import * as events from './pages/events.js';

const PAGES = { live, upload, jobs: jobList, people, unknown, nodes, events };

const view = document.getElementById('view');
const dialog = document.getElementById('login');
const keyInput = document.getElementById('login-key');
const loginError = document.getElementById('login-error');
const firehose = new Firehose(document.getElementById('stream-state'));
let cleanup = null;
// The signed-in key ({name, scopes, …} from GET /v1/apikeys/me), so pages offer only what it
// may do; null when the server could not say.
let me = null;

function route() {
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [name = 'live', ...rest] = path.split('/');
  const page = PAGES[name] ? name : 'live';
  for (const link of document.querySelectorAll('.tabs a')) link.classList.toggle('active', link.dataset.page === page);
  if (typeof cleanup === 'function') cleanup();
  view.replaceChildren();
  view.dataset.page = page;
  const params = rest.filter(Boolean).map(decodeURIComponent);
  // #/jobs lists the jobs; #/jobs/ID is one job.
  const module = page === 'jobs' && params.length ? job : PAGES[page];
  cleanup = module.render(view, { firehose, params, query: new URLSearchParams(search), me });
}

function askForKey(message = '') {
  keyInput.value = auth.key;
  loginError.textContent = message;
  if (!dialog.open) dialog.showModal();
  keyInput.focus();
}

async function signIn(event) {
  event.preventDefault();
  auth.set(keyInput.value);
  try {
    await jobs.check();
  } catch (error) {
    loginError.textContent = error instanceof ApiError && error.status
      ? `Refused (${error.status}): ${errorText(error)}`
      : `Could not reach the API: ${errorText(error)}`;
    return;
  }
  dialog.close();
  start();
}

async function start() {
  try { me = await keys.me(); } catch { me = null; }  // an older server: pages find out by trying
  // Controls that change things (class needs-write) are hidden from a key without `write`.
  document.body.dataset.write = keyMay(me, 'write') === false ? 'no' : 'yes';
  // A write-only key (an uploader) may not follow the firehose: it would be refused, again
  // and again, as a bad key.
  if (keyMay(me, 'read') !== false) firehose.connect();
  route();
}

document.getElementById('login-form').addEventListener('submit', signIn);
document.getElementById('login-signout').addEventListener('click', () => {
  auth.clear();
  firehose.disconnect();
  askForKey('Key forgotten.');
});
document.getElementById('change-key').addEventListener('click', () => askForKey());
dialog.addEventListener('cancel', (event) => event.preventDefault());  // no way around it
authEvents.addEventListener('unauthorized', () => askForKey('The API refused the key: sign in again.'));
window.addEventListener('hashchange', route);

// With a stored key (or a server with keys off), go straight in; otherwise ask first.
jobs.check().then(start, (error) => {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) askForKey(auth.key ? 'The stored key was refused.' : '');
  else { start(); }
});
