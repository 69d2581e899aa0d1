// The compose stack as a user meets it: Debian's chromium on the client's published port
// (GUESTBOOK_URL, default http://127.0.0.1:8081). Run by `make compose-check`
// (scripts/compose.sh), which starts the stack first; not part of `make test-ui`.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chromium } from "playwright-core";

const URL = process.env.GUESTBOOK_URL ?? "http://127.0.0.1:8081";
// Generous: a functional bound for a busy machine, not a speed measurement.
const SEEN = { timeout: 20000 };

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
});

async function openPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  const answer = await page.goto(URL);
  assert.equal(answer.status(), 200, `GET ${URL}`);
  await page.locator("html[data-ready=true]").waitFor({ state: "attached", ...SEEN });
  return { page, errors, close: () => context.close() };
}

test("the UI loads through the published port, and a post in one page appears in another", async () => {
  const poster = await openPage();
  const watcher = await openPage();
  assert.match(await poster.page.title(), /guestbook/i);
  const text = `compose check ${randomUUID()}`;
  await poster.page.getByLabel("Your name").fill("Compose");
  await poster.page.getByLabel("Message", { exact: true }).fill(text);
  await poster.page.getByRole("button", { name: "Post message" }).click();

  const seen = (page) => page.locator("#messages .message .body", { hasText: text });
  await seen(poster.page).waitFor(SEEN);
  // The second page learns of it without a reload (the live stream, through the client).
  await seen(watcher.page).waitFor(SEEN);
  assert.deepEqual([...poster.errors, ...watcher.errors], []);
  await poster.close();
  await watcher.close();
});
