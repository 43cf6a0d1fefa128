// Every call the dashboard makes to the Lookout API lives here, and nowhere else.

const KEY_STORAGE = 'lookout.apiKey';

export const auth = {
  get key() { return localStorage.getItem(KEY_STORAGE) || ''; },
  set(key) { localStorage.setItem(KEY_STORAGE, key.trim()); },
  clear() { localStorage.removeItem(KEY_STORAGE); },
};

/** An API answer other than 2xx: `code` and `detail` come from {"error", "detail"}. */
export class ApiError extends Error {
  constructor(status, code, detail, body) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }
}

// Fired on every 401 so the app can ask for a key.
export const authEvents = new EventTarget();

function headers(extra = {}) {
  const key = auth.key;
  return key ? { 'X-API-Key': key, ...extra } : extra;
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const detail = body && (typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail ?? ''));
  if (response.status === 401) authEvents.dispatchEvent(new Event('unauthorized'));
  return new ApiError(response.status, body?.error ?? String(response.status), detail, body);
}

async function request(method, path, { json, form } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.blob();
}

/** GET an image that needs the API key; resolves to an object URL (revoke it when done). */
export async function imageUrl(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return URL.createObjectURL(await response.blob());
}

function socketUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (auth.key) url.searchParams.set('api_key', auth.key);  // browsers cannot set WS headers
  return url.href;
}

// ---- jobs ----------------------------------------------------------------------------------

export const jobs = {
  /** Proves a key, whatever its scopes (a write-only key too): 401 rejects it. */
  check: () => request('GET', '/v1/apikeys/me'),
  /**
   * One page of GET /v1/jobs, newest first: filters `status`, `task`, `source` (upload|node),
   * `node_id` (empty ones left out), `cursor` (the previous page's next_cursor). Resolves to
   * {items, next_cursor}.
   */
  list: (filters = {}, limit = 20) => {
    const query = new URLSearchParams({ limit: String(limit) });
    for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
    return request('GET', `/v1/jobs?${query}`);
  },
  get: (id) => request('GET', `/v1/jobs/${encodeURIComponent(id)}`),
  remove: (id) => request('DELETE', `/v1/jobs/${encodeURIComponent(id)}`),
  imagePath: (id) => `/v1/jobs/${encodeURIComponent(id)}/image`,
  processedImagePath: (id) => `/v1/jobs/${encodeURIComponent(id)}/processed-image`,

  /**
   * POST /v1/images with upload progress (fetch has none). Returns {promise, abort};
   * the promise resolves to the accepted job (202) or rejects with ApiError.
   */
  upload(file, tasks, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open('POST', '/v1/images');
      for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
      xhr.responseType = 'json';
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr.response);
        const body = xhr.response;
        if (xhr.status === 401) authEvents.dispatchEvent(new Event('unauthorized'));
        reject(new ApiError(xhr.status, body?.error, body?.detail, body));
      };
      xhr.onerror = () => reject(new ApiError(0, 'network', 'network error'));
      const form = new FormData();
      form.append('image', file, file.name);
      if (tasks) form.append('tasks', tasks);
      xhr.send(form);
    });
    return { promise, abort: () => xhr.abort() };
  },

  /** WS /v1/jobs/{id}/events: replays then streams; closes after the final status. */
  events: (id) => new WebSocket(socketUrl(`/v1/jobs/${encodeURIComponent(id)}/events`)),
};

/** WS /v1/ws: the firehose of `result` / `error` events (and node status events, issue 5). */
export const firehoseSocket = () => new WebSocket(socketUrl('/v1/ws'));

// ---- the key itself ------------------------------------------------------------------------

export const keys = {
  /** GET /v1/apikeys/me: {name, prefix, scopes, expires_at, auth_enabled}; any key may ask. */
  me: () => request('GET', '/v1/apikeys/me'),
};

/** Whether the key may do `scope` ('read', 'write', 'admin'); null `me`: not known. */
export function keyMay(me, scope) {
  if (!me) return null;
  return me.scopes.includes(scope) || me.scopes.includes('admin');
}

// ---- people (issue 4) ----------------------------------------------------------------------

const listOf = (body) => (Array.isArray(body) ? body : body?.items ?? []);

export const people = {
  /** Every named person: the pages of GET /v1/people followed to the end (100 a page). */
  list: async () => {
    const all = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: '100' });
      if (cursor) query.set('cursor', cursor);
      const page = await request('GET', `/v1/people?${query}`);
      all.push(...listOf(page));
      cursor = page?.next_cursor ?? null;
    } while (cursor);
    return all;
  },
  get: (id) => request('GET', `/v1/people/${encodeURIComponent(id)}`),
  create: (name) => request('POST', '/v1/people', { json: { name } }),
  rename: (id, name) => request('PATCH', `/v1/people/${encodeURIComponent(id)}`, { json: { name } }),
  remove: (id) => request('DELETE', `/v1/people/${encodeURIComponent(id)}`),
  /** multipart `images` (several); 422 carries the reasons per rejected image. */
  enroll(id, files) {
    const form = new FormData();
    for (const file of files) form.append('images', file, file.name);
    return request('POST', `/v1/people/${encodeURIComponent(id)}/faces`, { form });
  },
  removeFace: (personId, faceId) =>
    request('DELETE', `/v1/people/${encodeURIComponent(personId)}/faces/${encodeURIComponent(faceId)}`),
  /** Make an unknown face (a detection) a person's: a new person by `name`, or `person_id`. */
  promote: (faceId, target) => request('POST', `/v1/faces/${encodeURIComponent(faceId)}/promote`, { json: target }),
  identify(file) {
    const form = new FormData();
    form.append('image', file, file.name);
    return request('POST', '/v1/identify', { form });
  },
  // ---- unknown faces (issue 16) ----
  /** Unnamed people (clusters of unknown faces), biggest first. */
  unnamed: async () => listOf(await request('GET', '/v1/people?named=false&limit=100')),
  name: (id, name) => request('PATCH', `/v1/people/${encodeURIComponent(id)}`, { json: { name } }),
  ignore: (id) => request('PATCH', `/v1/people/${encodeURIComponent(id)}`, { json: { ignored: true } }),
  merge: (intoId, personIds) =>
    request('POST', `/v1/people/${encodeURIComponent(intoId)}/merge`, { json: { person_ids: personIds } }),
  /** A face of a past job (a sighting) to a person, or (null) back to unknown. */
  moveFace: (faceId, personId) =>
    request('POST', `/v1/faces/${encodeURIComponent(faceId)}/move`, { json: { person_id: personId } }),
  moveEnrolled: (personId, faceId, targetId) =>
    request('POST', `/v1/people/${encodeURIComponent(personId)}/faces/${encodeURIComponent(faceId)}/move`, { json: { person_id: targetId } }),
  forgetFace: (faceId) => request('DELETE', `/v1/faces/${encodeURIComponent(faceId)}`),
  facesOf: (person) => person?.faces ?? [],
  faceCountOf: (person) => person?.face_count ?? person?.faces?.length ?? 0,
};

const ENROLL_REFUSED = 'cannot enroll: ';

/**
 * Rejected photos from an enrollment error, as [{name, reason}]. The gallery answers 422
 * {"error": "unusable_face", "detail": "cannot enroll: a.jpg: no face found | b.jpg: …"}, and
 * a photo refused before it reaches a worker (not an image, too large) "<photo>: <why>".
 */
export function rejectionsOf(error) {
  const detail = error?.body?.detail;
  if (typeof detail !== 'string') return [];
  const refused = detail.startsWith(ENROLL_REFUSED) ? detail.slice(ENROLL_REFUSED.length).split(' | ') : [detail];
  return refused.filter((item) => item.includes(': ')).map((item) => {
    const at = item.indexOf(': ');
    return { name: item.slice(0, at), reason: item.slice(at + 2) };
  });
}

/**
 * Faces from POST /v1/identify as [{name, similarity, person_id, box}] (null name: unknown;
 * box: [x1, y1, x2, y2] in the upright photo's pixels).
 */
export function identifiedOf(body) {
  const faces = body?.faces ?? body?.matches ?? body?.results ?? body?.detections ?? (Array.isArray(body) ? body : []);
  return faces.map((face) => {
    const identity = face.identity ?? face.attributes?.identity ?? face.match ?? face;
    return {
      name: identity?.name ?? null,
      person_id: identity?.person_id ?? null,
      similarity: identity?.similarity ?? identity?.score ?? null,
      box: face.box ?? null,
    };
  });
}

// ---- nodes (issue 5) -----------------------------------------------------------------------

export const nodes = {
  list: async () => listOf(await request('GET', '/v1/nodes')),
  /** Returns the node with its secret; the secret is never shown again. */
  register: (name) => request('POST', '/v1/nodes', { json: { name } }),
  revoke: (id) => request('DELETE', `/v1/nodes/${encodeURIComponent(id)}`),
};

/** Whether a firehose event is about a node (status change, heartbeat) rather than a job. */
export const isNodeEvent = (event) => typeof event?.type === 'string' && event.type.startsWith('node');

// ---- reading a job's detections ------------------------------------------------------------

/** {person_id, name, similarity} for a recognised face, null for an unknown one. */
export function identityOf(detection) {
  const identity = detection?.attributes?.identity;
  return identity && identity.name ? identity : null;
}

/** The id a face detection is promoted by: its `id` (the face_id of POST /v1/faces/{id}/promote). */
export const faceIdOf = (detection) => detection.id;

/** The name of the node that sent a job's frame (`node_name`), or null for an upload. */
export const nodeNameOf = (job) => job.node_name ?? null;

// ---- outbound events: webhooks and MQTT (issue 17) -----------------------------------------

export const webhooks = {
  list: async () => (await request('GET', '/v1/webhooks')).items,
  /** Returns the webhook with its signing secret; the secret is never shown again. */
  create: (body) => request('POST', '/v1/webhooks', { json: body }),
  update: (id, body) => request('PATCH', `/v1/webhooks/${encodeURIComponent(id)}`, { json: body }),
  remove: (id) => request('DELETE', `/v1/webhooks/${encodeURIComponent(id)}`),
  deliveries: async (id) => (await request('GET', `/v1/webhooks/${encodeURIComponent(id)}/deliveries?limit=50`)).items,
  redeliver: (id, deliveryId) => request('POST', `/v1/webhooks/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(deliveryId)}/redeliver`),
  status: () => request('GET', '/v1/events/status'),
};
