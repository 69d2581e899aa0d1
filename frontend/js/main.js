// The guestbook page: one book's newest messages (the default book at `/`, book NAME at
// `/?book=NAME`), older ones on demand, live updates, and a form whose every submission
// carries an Idempotency-Key, so a double click, the client's retries or a flaky network never
// post twice. A name the server would refuse opens nothing: the page says why and calls nothing.

import { listMessages, listNewer, postMessage, ServiceError } from "./api.js";
import { bookAddress, bookFromQuery, messagesPath } from "./book.js";
import { Health } from "./health.js";
import { LiveFeed } from "./live.js";
import { MessageList } from "./messages.js";
import { BOOK_NAME_RULE, charCount, isValidBookName, validate } from "./validate.js";

const PAGE = 20;
const ANNOUNCED = 5;
const AUTHOR_KEY = "guestbook.author";

const $ = (id) => document.getElementById(id);

const opened = bookFromQuery(window.location.search);
const base = messagesPath(opened.book);

const list = new MessageList($("messages"), $("empty"));
const health = new Health($("banner"), $("banner-text"));
const form = $("message-form");
const author = $("author");
const text = $("text");
const submit = $("submit");
const formStatus = $("form-status");
const older = $("older");

/** An Idempotency-Key; crypto.randomUUID needs a secure context, getRandomValues does not. */
function newKey() {
  if (typeof crypto.randomUUID === "function" && window.isSecureContext) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function announce(message) {
  const log = $("announcer");
  const line = document.createElement("p");
  line.textContent = `New message from ${message.author}: ${message.text}`;
  log.append(line);
  while (log.childElementCount > ANNOUNCED) log.firstElementChild.remove();
}

// ---- the form -------------------------------------------------------------------------

function showProblem(field, problem) {
  const error = $(`${field.id}-error`);
  error.textContent = problem ?? "";
  error.hidden = !problem;
  if (problem) field.setAttribute("aria-invalid", "true");
  else field.removeAttribute("aria-invalid");
}

function updateCounts() {
  $("author-count").textContent = String(charCount(author.value));
  $("text-count").textContent = String(charCount(text.value));
}

function setStatus(message, failed = false) {
  formStatus.textContent = message;
  formStatus.classList.toggle("failed", failed);
}

// The draft's key is kept until it is posted, so trying again after a failure cannot post
// twice; editing the text makes it another message with another key (the server refuses a
// key reused with a different body).
let draft = null;
let posting = false;

async function onSubmit(event) {
  event.preventDefault();
  if (posting) return;
  const problems = validate(author.value, text.value);
  showProblem(author, problems.author);
  showProblem(text, problems.text);
  if (problems.author || problems.text) {
    (problems.author ? author : text).focus();
    setStatus("Please fix the marked fields.", true);
    return;
  }
  if (!draft || draft.author !== author.value || draft.text !== text.value) {
    draft = { author: author.value, text: text.value, key: newKey() };
  }
  posting = true;
  submit.disabled = true;
  setStatus("Posting…");
  try {
    const message = await postMessage(base, draft.author.trim(), draft.text.trim(), draft.key);
    list.add(message, { fresh: true });
    draft = null;
    text.value = "";
    updateCounts();
    try {
      localStorage.setItem(AUTHOR_KEY, author.value.trim());
    } catch {
      // Storage may be off (private mode): remembering the name is a nicety.
    }
    setStatus("Posted.");
    health.requestSucceeded();
  } catch (err) {
    const kind = err instanceof ServiceError ? err.kind : "unavailable";
    const code = err instanceof ServiceError ? err.code : null;
    const status = err instanceof ServiceError ? err.status : 0;
    if (kind === "invalid") {
      setStatus(`Not posted: ${err.message}`, true);
    } else if (code === "circuit-open" || status === 429) {
      // Refused before anything was sent on: certainly not posted.
      setStatus("Not posted: the guestbook is not taking messages right now. Your message is kept here; try again in a moment.", true);
      health.requestFailed(kind);
    } else {
      // No answer, or a 503 from a write that may have gone through (a timeout after Redis
      // stored it, say): say so, and keep the key, so that posting again is always safe.
      setStatus("Not confirmed: no answer came, so your message may or may not have been posted. It is kept here; posting it again is safe and never makes a second copy.", true);
      health.requestFailed(kind);
    }
  } finally {
    posting = false;
    submit.disabled = false;
  }
}

form.addEventListener("submit", onSubmit);
for (const field of [author, text]) {
  field.addEventListener("input", () => {
    updateCounts();
    if (field.hasAttribute("aria-invalid")) showProblem(field, validate(author.value, text.value)[field.id]);
  });
}
// Ctrl+Enter (or Cmd+Enter) in the message posts it, as in most chat boxes.
text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
});

// ---- the list -----------------------------------------------------------------------------

async function loadOlder() {
  older.disabled = true;
  try {
    const page = await listMessages(base, { before: list.oldestId, limit: PAGE });
    page.forEach((message) => list.add(message));
    older.hidden = page.length < PAGE;
    health.requestSucceeded();
  } catch (err) {
    health.requestFailed(err instanceof ServiceError ? err.kind : "unavailable");
  } finally {
    older.disabled = false;
  }
}

older.addEventListener("click", loadOlder);

const feed = new LiveFeed(
  `${base}/stream`,
  (message) => {
    if (list.add(message, { fresh: true })) announce(message);
  },
  (state) => health.stream(state),
);

// The first page, retried until it comes; the stream then starts after its newest message,
// so nothing posted in between is missed.
async function start(wait = 1000) {
  try {
    const page = await listMessages(base, { limit: PAGE });
    page.forEach((message) => list.add(message));
    list.showEmptyIfNone();
    older.hidden = page.length < PAGE;
    health.requestSucceeded();
    feed.start(list.newestId);
  } catch (err) {
    health.requestFailed(err instanceof ServiceError ? err.kind : "unavailable");
    setTimeout(() => start(Math.min(wait * 2, 15000)), wait);
  }
}

// While a failed call keeps the banner up, look again every few seconds, so the banner clears
// once the backend answers even if nobody posts. With the circuit open the client answers at
// once without calling the backend, so this costs the backend nothing.
function watchRecovery() {
  setInterval(async () => {
    if (health.request === null || health.streamDown) return;
    try {
      const newer = await listNewer(base, list.newestId, PAGE);
      newer.forEach((message) => list.add(message, { fresh: true }));
      health.requestSucceeded();
    } catch (err) {
      health.requestFailed(err instanceof ServiceError ? err.kind : "unavailable");
    }
  }, 3000);
}

// ---- which book -----------------------------------------------------------------------

const bookForm = $("book-form");
const bookInput = $("book");

function showBook() {
  if (opened.problem !== null) {
    // Nothing of the book is shown or wired: no list, no form, no stream, no polling.
    $("compose").hidden = true;
    $("messages-card").hidden = true;
    $("book-problem-text").textContent = opened.problem;
    $("book-problem").hidden = false;
    document.title = "Not a guestbook name · Guestbook";
    // The name as typed, to be corrected in place (an input's value is never parsed as HTML).
    bookInput.value = new URLSearchParams(window.location.search).get("book") ?? "";
  } else if (opened.book !== null) {
    $("title").textContent = `Guestbook: ${opened.book}`;
    document.title = `${opened.book} · Guestbook`;
  }
  $("book-default").hidden = opened.book === null && opened.problem === null;
}

// Checked here so a bad name is explained beside the field; the page it would open checks again.
bookForm.addEventListener("submit", (event) => {
  event.preventDefault();
  // No name holds a space, so surrounding spaces can only be a slip.
  const name = bookInput.value.trim();
  let problem = null;
  if (name === "") problem = "Please enter a guestbook's name.";
  else if (!isValidBookName(name)) problem = `Not a guestbook name: ${BOOK_NAME_RULE}.`;
  showProblem(bookInput, problem);
  if (problem) {
    bookInput.focus();
    return;
  }
  window.location.assign(bookAddress(name));
});
bookInput.addEventListener("input", () => {
  if (bookInput.hasAttribute("aria-invalid")) showProblem(bookInput, null);
});

showBook();
if (opened.problem === null) {
  try {
    author.value = localStorage.getItem(AUTHOR_KEY) ?? "";
  } catch {
    // See above: storage may be off.
  }
  updateCounts();
  submit.disabled = false;
  watchRecovery();
  setInterval(() => list.refreshTimes(), 30000);
  start();
}
document.documentElement.dataset.ready = "true";
