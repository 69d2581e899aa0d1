// The list of messages, newest first, each rendered as text: user data never reaches
// innerHTML, so "<script>" in a message is shown, not run (the upstream guestbook's XSS).

import { fullTime, relativeTime } from "./time.js";

export class MessageList {
  /** @param {HTMLOListElement} element @param {HTMLElement} empty */
  constructor(element, empty) {
    this.element = element;
    this.empty = empty;
    /** @type {Map<number, HTMLLIElement>} */
    this.items = new Map();
  }

  get newestId() {
    let newest = 0;
    for (const id of this.items.keys()) newest = Math.max(newest, id);
    return newest;
  }

  get oldestId() {
    let oldest = Infinity;
    for (const id of this.items.keys()) oldest = Math.min(oldest, id);
    return oldest === Infinity ? undefined : oldest;
  }

  /**
   * Adds a message unless it is already shown (the stream, a page and a post can all deliver
   * the same one). Returns whether it was new.
   */
  add(message, { fresh = false } = {}) {
    if (!isMessage(message) || this.items.has(message.id)) return false;
    const item = render(message);
    if (fresh) item.classList.add("fresh");
    let before = null;
    for (const child of this.element.children) {
      if (Number(child.dataset.id) < message.id) {
        before = child;
        break;
      }
    }
    this.element.insertBefore(item, before);
    this.items.set(message.id, item);
    this.empty.hidden = true;
    return true;
  }

  showEmptyIfNone() {
    this.empty.hidden = this.items.size > 0;
  }

  refreshTimes(now = Date.now()) {
    for (const item of this.items.values()) {
      const time = item.querySelector("time");
      if (time) time.textContent = relativeTime(new Date(time.dateTime), now);
    }
  }
}

function isMessage(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    Number.isSafeInteger(value.id) &&
    typeof value.author === "string" &&
    typeof value.text === "string" &&
    typeof value.created_at === "string"
  );
}

function render(message) {
  const item = document.createElement("li");
  item.className = "message";
  item.dataset.id = String(message.id);

  const head = document.createElement("div");
  head.className = "message-head";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = message.author;
  const time = document.createElement("time");
  time.className = "when";
  const created = new Date(message.created_at);
  if (!Number.isNaN(created.getTime())) {
    time.dateTime = created.toISOString();
    time.title = fullTime(created);
    time.textContent = relativeTime(created);
  }
  head.append(author, time);

  const body = document.createElement("p");
  body.className = "body";
  body.textContent = message.text;

  item.append(head, body);
  return item;
}
