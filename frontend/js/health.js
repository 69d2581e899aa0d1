// The calm banner: shown while the stream is down or the last call failed, with words for
// what the client service reported (an open circuit, or a backend that is not answering).
// The keys are the kinds api.js derives from an error body's `code` (`circuit-open`), or
// `unavailable`, `offline` and `stream` where no code applies.

const TEXT = {
  "circuit-open":
    "The guestbook is pausing calls to its backend after repeated errors. Your text is kept; this page catches up by itself once it recovers.",
  unavailable:
    "The guestbook's backend is not answering right now. Your text is kept; this page catches up by itself once it is back.",
  offline:
    "This page cannot reach the guestbook. Your text is kept; it will reconnect by itself.",
  stream: "Live updates are paused while the guestbook reconnects. New messages will appear once it is back.",
};

export class Health {
  /** @param {HTMLElement} banner @param {HTMLElement} text */
  constructor(banner, text) {
    this.banner = banner;
    this.text = text;
    this.request = null;
    this.streamDown = false;
  }

  requestFailed(kind) {
    this.request = kind;
    this.render();
  }

  requestSucceeded() {
    this.request = null;
    this.render();
  }

  stream(state) {
    this.streamDown = state === "down";
    // The stream answering means the backend answers: an earlier failed call is history.
    if (state === "live") this.request = null;
    this.render();
  }

  get troubled() {
    return this.request !== null || this.streamDown;
  }

  render() {
    const key = this.request ?? (this.streamDown ? "stream" : null);
    if (key === null) {
      this.banner.hidden = true;
      return;
    }
    const text = TEXT[key] ?? TEXT.unavailable;
    if (this.text.textContent !== text) this.text.textContent = text;
    this.banner.hidden = false;
  }
}
