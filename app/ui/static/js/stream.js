// One firehose WebSocket for the whole app, reconnecting; pages subscribe to its events.
import { firehoseSocket, authEvents } from './api.js';

const MAX_RECENT = 200;
const RETRY_MAX_MS = 10000;

export class Firehose extends EventTarget {
  constructor(indicator) {
    super();
    this.indicator = indicator;
    this.recent = [];  // newest last; what the Live page shows when it opens
    this.socket = null;
    this.retryMs = 500;
    this.timer = null;
  }

  connect() {
    this.disconnect();
    const socket = firehoseSocket();
    this.socket = socket;
    this.setState('connecting');
    socket.onopen = () => { this.retryMs = 500; this.setState('open'); };
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
