// Live updates over Server-Sent Events, resumed without gaps: every (re)connection asks for
// the messages after the newest one seen. The browser reconnects by itself after a dropped
// stream (sending Last-Event-ID), but gives up for good when a reconnection is answered with
// an error status, as the client service does while the backend is down; then this module
// reconnects itself, with a jittered backoff.

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 15000;

export class LiveFeed {
  /**
   * @param {string} path the book's stream, `<messages path>/stream`
   * @param {(message: object) => void} onMessage
   * @param {(state: "live" | "reconnecting" | "down") => void} onState
   */
  constructor(path, onMessage, onState) {
    this.path = path;
    this.onMessage = onMessage;
    this.onState = onState;
    this.lastId = 0;
    this.source = null;
    this.retryMs = FIRST_RETRY_MS;
    this.timer = null;
  }

  start(afterId) {
    this.lastId = Math.max(this.lastId, afterId);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.source?.close();
    const source = new EventSource(`${this.path}?after=${this.lastId}`);
    this.source = source;
    source.onopen = () => {
      this.retryMs = FIRST_RETRY_MS;
      this.onState("live");
    };
    source.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (Number.isSafeInteger(message?.id)) this.lastId = Math.max(this.lastId, message.id);
      this.onMessage(message);
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.onState("down");
        const wait = this.retryMs * (0.5 + Math.random() / 2);
        this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
        this.timer = setTimeout(() => this.connect(), wait);
      } else {
        this.onState("reconnecting");
      }
    };
  }
}
