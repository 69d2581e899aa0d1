// The server's limits (crates/backend/src/domain/message.rs, crates/api/src/book.rs), checked
// before sending so a person sees the problem beside the field instead of after a round trip.
// The server checks again; this only saves a trip.

export const MAX_AUTHOR_CHARS = 64;
export const MAX_TEXT_CHARS = 1000;

// Unicode category Cc, as Rust's char::is_control.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

/** Characters as the server counts them: Unicode scalar values, after trimming. */
export function charCount(value) {
  return [...normalise(value)].length;
}

function normalise(value) {
  return value.trim().replace(/\r\n/g, "\n");
}

/** Problems with an author and a text, by field; an empty object when both are fine. */
export function validate(author, text) {
  const problems = {};
  const a = normalise(author);
  const t = normalise(text);
  if (a.length === 0) problems.author = "Please enter your name.";
  else if ([...a].length > MAX_AUTHOR_CHARS) problems.author = `Your name can be at most ${MAX_AUTHOR_CHARS} characters.`;
  else if (CONTROL.test(a)) problems.author = "Your name cannot contain control characters.";
  if (t.length === 0) problems.text = "Please write a message.";
  else if ([...t].length > MAX_TEXT_CHARS) problems.text = `A message can be at most ${MAX_TEXT_CHARS} characters.`;
  else if ([...t].some((c) => c !== "\n" && CONTROL.test(c))) problems.text = "A message cannot contain control characters other than line breaks.";
  return problems;
}

// crates/api/src/book.rs: MAX_BOOK_NAME and BOOK_NAME_RULE, kept word for word so the page and
// an API answer explain a refused name the same way.
export const MAX_BOOK_NAME = 64;
export const BOOK_NAME_RULE = "a book name is 1-64 characters of A-Z, a-z, 0-9, '-' and '_'";

// ASCII only and anchored at both ends: without the `u` or `i` flags `[A-Za-z]` cannot match
// "é" or a Kelvin sign, and without `m` the `$` cannot match before a trailing newline.
const BOOK_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Whether `name` is a book name the server accepts (guestbook_api::is_valid_book_name). */
export function isValidBookName(name) {
  return typeof name === "string" && BOOK_NAME.test(name);
}
