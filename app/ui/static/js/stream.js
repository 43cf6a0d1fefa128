// One firehose WebSocket for the whole app, reconnecting; pages subscribe to its events.
import { firehoseSocket, authEvents } from './api.js';

const MAX_RECENT = 200;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
// A socket that stayed open this long was a working connection: the next retry starts over.
// (Not on open: a server over a limit or in an outage accepts, then closes at once.)
const STABLE_MS = 5000;

export class Firehose extends EventTarget {
  constructor(indicator) {
    super();
    this.indicator = indicator;
    this.recent = [];  // newest last; what the Live page shows when it opens
    this.socket = null;
    this.retryMs = RETRY_MIN_MS;
    this.timer = null;
  }

  connect() {
    this.disconnect();
    const socket = firehoseSocket();
    this.socket = socket;
    this.setState('connecting');
    let openedAt = null;
    socket.onopen = () => { openedAt = Date.now(); this.setState('open'); };
    socket.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      this.recent.push(event);
      if (this.recent.length > MAX_RECENT) this.recent.shift();
      this.dispatchEvent(new CustomEvent('event', { detail: event }));
    };
    socket.onclose = (close) => {
      if (this.socket !== socket) return;  // replaced on purpose
      this.setState('closed', close.reason);
      if (close.code === 4401 || close.code === 4403) {
        authEvents.dispatchEvent(new Event('unauthorized'));
        return;
      }
      if (openedAt !== null && Date.now() - openedAt >= STABLE_MS) this.retryMs = RETRY_MIN_MS;
      this.timer = setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    };
  }

  disconnect() {
    clearTimeout(this.timer);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close();
    }
  }

  setState(state, reason = '') {
    this.state = state;
    this.indicator.dataset.state = state;
    this.indicator.title = `Live stream: ${state}${reason ? ` (${reason})` : ''}`;
  }
}
