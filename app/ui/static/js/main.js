// Hash router (#/live, #/upload, #/jobs/ID, #/people, #/unknown, #/nodes, #/events), sign-in,
// the shared firehose.
import { auth, authEvents, jobs, ApiError } from './api.js';
import { Firehose } from './stream.js';
import { errorText } from './dom.js';
import * as live from './pages/live.js';
import * as upload from './pages/upload.js';
import * as job from './pages/job.js';
import * as people from './pages/people.js';
import * as unknown from './pages/unknown.js';
import * as nodes from './pages/nodes.js';
import * as events from './pages/events.js';

const PAGES = { live, upload, jobs: job, people, unknown, nodes, events };

const view = document.getElementById('view');
const dialog = document.getElementById('login');
const keyInput = document.getElementById('login-key');
const loginError = document.getElementById('login-error');
const firehose = new Firehose(document.getElementById('stream-state'));
let cleanup = null;

function route() {
  const [name = 'live', ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const page = PAGES[name] ? name : 'live';
  for (const link of document.querySelectorAll('.tabs a')) {
    link.classList.toggle('active', link.dataset.page === page || (page === 'jobs' && link.dataset.page === 'live'));
  }
  if (typeof cleanup === 'function') cleanup();
  view.replaceChildren();
  view.dataset.page = page;
  cleanup = PAGES[page].render(view, { firehose, params: rest.map(decodeURIComponent) });
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

function start() {
  firehose.connect();
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
