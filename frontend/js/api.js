// Calls to the client service's /api (proxied to the backend through retries and a circuit
// breaker). Every call has a time limit; failures become ServiceError with a kind the page
// can explain to a person. Errors are `{"error": "<for people>", "code": "<for programs>"}`:
// the page branches on `code` only, never on the wording of `error`.

const TIMEOUT_MS = 10000;

export class ServiceError extends Error {
  /**
   * @param {"circuit-open" | "unavailable" | "invalid" | "offline"} kind
   * @param {string} message
   * @param {number} status the HTTP status, 0 when no answer came
   * @param {string | null} code the error body's `code` (`circuit-open`, `invalid`, ...), if any
   */
  constructor(kind, message, status = 0, code = null) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch {
    throw new ServiceError("offline", "The guestbook could not be reached.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy's HTML error page, say: the status alone decides.
  }
  if (response.ok) return body;
  const detail = body && typeof body.error === "string" ? body.error : `status ${response.status}`;
  const code = body && typeof body.code === "string" ? body.code : null;
  throw new ServiceError(kindOf(code, response.status), detail, response.status, code);
}

/** What the page makes of an error answer: its `code` first, the status when there is none. */
function kindOf(code, status) {
  if (code === "circuit-open") return "circuit-open";
  if (status >= 500 || status === 429) return "unavailable";
  return "invalid";
}

/** The newest messages of the book at `base` (see book.js), newest first; with `before`, the ones older than that id. */
export function listMessages(base, { before, limit }) {
  const query = new URLSearchParams({ order: "desc", limit: String(limit) });
  if (before !== undefined) query.set("before", String(before));
  return call(`${base}?${query}`).then((body) => body.messages);
}

/** Messages of the book at `base` newer than `after`, oldest first. */
export function listNewer(base, after, limit) {
  const query = new URLSearchParams({ after: String(after), limit: String(limit) });
  return call(`${base}?${query}`).then((body) => body.messages);
}

/** Posts a message to the book at `base`; the same key with the same content never makes a second one. */
export function postMessage(base, author, text, idempotencyKey) {
  return call(base, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": idempotencyKey },
    body: JSON.stringify({ author, text }),
  });
}
