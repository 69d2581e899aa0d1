// Which guestbook ("book") the page shows: `/` the default one, `/?book=NAME` book NAME. The
// name is checked here, before any call, so a name the server would refuse is explained on the
// page and never reaches /api (where it could only earn a 400).

import { BOOK_NAME_RULE, isValidBookName } from "./validate.js";

// A refused name is echoed back to the person; a megabyte of query string need not be.
const SHOWN_CHARS = 80;

/**
 * The book a location's query names.
 * @param {string} search `location.search`
 * @returns {{ book: string | null, problem: string | null }} `book` is null for the default
 *   book, and `problem` says for people why the query names no book the page can open
 */
export function bookFromQuery(search) {
  const names = new URLSearchParams(search).getAll("book");
  if (names.length === 0) return { book: null, problem: null };
  // Two names: whichever one the page picked, the address would say something else too.
  if (names.length > 1) return { book: null, problem: "This address names more than one guestbook; open one at a time." };
  const [name] = names;
  if (name === "") return { book: null, problem: `This address asks for a guestbook but gives no name: ${BOOK_NAME_RULE}.` };
  if (!isValidBookName(name)) {
    return { book: null, problem: `“${shorten(name)}” is not a guestbook name: ${BOOK_NAME_RULE}.` };
  }
  return { book: name, problem: null };
}

/**
 * Where a book's messages are. The default book stays at `/api/messages`: the page does not
 * know the server's name for it (`GUESTBOOK_NAME`), and that path always means it.
 * @param {string | null} book
 */
export function messagesPath(book) {
  // encodeURIComponent is a no-op on a valid name; it keeps the path one segment regardless.
  return book === null ? "/api/messages" : `/api/books/${encodeURIComponent(book)}/messages`;
}

/** The page's address for `book` (null: the default book). */
export function bookAddress(book) {
  return book === null ? "/" : `/?${new URLSearchParams({ book })}`;
}

function shorten(name) {
  const chars = [...name];
  return chars.length > SHOWN_CHARS ? `${chars.slice(0, SHOWN_CHARS).join("")}…` : name;
}
