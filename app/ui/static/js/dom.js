// Small DOM helpers: h() builds elements, fill() refills one, formatters use the browser's locale and time zone.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name in element && typeof value !== 'string') element[name] = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  return fill(element, ...children);
}

/**
 * Replace element's children, read as h() reads them: arrays flattened, null / undefined /
 * false skipped (the DOM's replaceChildren would write a null as the text "null").
 */
export function fill(element, ...children) {
  element.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/**
 * For a page's refresh(): call it at the start of each refresh; what it returns says whether that
 * refresh is still the newest. A slow answer overtaken by a newer refresh's (the page's first
 * list, still in flight when a person is added) is dropped rather than drawn over the newer one.
 */
export function newestOnly() {
  let newest = 0;
  return () => {
    const ticket = ++newest;
    return () => ticket === newest;
  };
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;

/** A <time> with the instant in the browser's time zone; `datetime` keeps the ISO value. */
export function timeElement(iso, { withDate = false } = {}) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h('time', { datetime: date.toISOString(), title: `${dateTimeFormat.format(date)} (${timeZone})` },
    (withDate ? dateTimeFormat : timeFormat).format(date));
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

// '1 face', '6 faces': every noun the pages count takes an s.
export const plural = (n, noun) => `${n} ${noun}${n === 1 ? '' : 's'}`;

export const percent = (x) => (x === null || x === undefined ? '—' : `${Math.round(x * 100)}%`);

export function ago(iso) {
  if (!iso) return 'never';
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

export function errorText(error) {
  return error?.detail || error?.message || String(error);
}
