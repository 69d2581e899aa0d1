// A real redis-server, backend and client on free loopback ports, for the browser tests.
// Binaries come from target/debug (built by `make test-ui`) unless GUESTBOOK_BIN is set.
// Only processes started here are ever stopped, by their own handles.

import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.GUESTBOOK_BIN ?? path.join(ROOT, "target", "debug");

export const ADMIN_TOKEN = "ui-test-admin-token-0123456789";

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => (port === 6379 ? freePort().then(resolve, reject) : resolve(port)));
    });
  });
}

async function waitFor(url, child, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${child.spawnfile} exited with ${child.exitCode}`);
    try {
      const answer = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (answer.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(50);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

function start(command, args, env) {
  const child = spawn(command, args, {
    env: { ...process.env, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", process.env.UI_TEST_LOGS ? "inherit" : "ignore"],
  });
  return child;
}

async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** A backend on `port` against Redis at `redisPort`. */
class Backend {
  constructor(port, redisPort) {
    this.port = port;
    this.redisPort = redisPort;
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
  }

  async start() {
    this.child = start(path.join(BIN, "guestbook-backend"), [], {
      LISTEN_ADDR: `127.0.0.1:${this.port}`,
      REDIS_URL: `redis://127.0.0.1:${this.redisPort}`,
      FAULT_INJECTION: "true",
      ADMIN_TOKEN,
      SHUTDOWN_DELAY_SECS: "0",
      DRAIN_TIMEOUT_SECS: "1",
    });
    await waitFor(`${this.url}/liveness`, this.child);
  }

  /** Gone at once, as a crashed or killed pod. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }

  stop() {
    return stop(this.child);
  }
}

/**
 * redis-server, two backends sharing it (the client calls the first; the second stands for
 * another replica) and the client serving frontend/.
 */
export async function startStack() {
  const [redisPort, backendPort, otherPort, clientPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const processes = [];
  const redis = start("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {});
  processes.push(redis);
  const backend = new Backend(backendPort, redisPort);
  const other = new Backend(otherPort, redisPort);
  const clientUrl = `http://127.0.0.1:${clientPort}`;
  let client = null;
  try {
    await sleep(100);
    await Promise.all([backend.start(), other.start()]);
    client = start(path.join(BIN, "guestbook-client"), [], {
      LISTEN_ADDR: `127.0.0.1:${clientPort}`,
      BACKEND_URL: backend.url,
      FRONTEND_DIR: path.join(ROOT, "frontend"),
      BREAKER_RESET_SECS: "2",
      SHUTDOWN_DELAY_SECS: "0",
      DRAIN_TIMEOUT_SECS: "1",
    });
    await waitFor(`${clientUrl}/liveness`, client);
  } catch (err) {
    await Promise.all([stop(client), backend.stop(), other.stop(), stop(redis)]);
    throw err;
  }
  return {
    clientUrl,
    backend,
    other,
    async stop() {
      await stop(client);
      await Promise.all([backend.stop(), other.stop()]);
      await stop(redis);
    },
  };
}

/** Where book `book`'s messages are on `base`; the default book's when `book` is undefined. */
function messagesUrl(base, book) {
  return book === undefined ? `${base}/api/messages` : `${base}/api/books/${book}/messages`;
}

/** Posts a message to `base` (the client or a backend) as an API user would. */
export async function postMessage(base, author, text, key, book) {
  const headers = { "content-type": "application/json" };
  if (key) headers["idempotency-key"] = key;
  const answer = await fetch(messagesUrl(base, book), {
    method: "POST",
    headers,
    body: JSON.stringify({ author, text }),
    signal: AbortSignal.timeout(10000),
  });
  if (!answer.ok) throw new Error(`POST answered ${answer.status}: ${await answer.text()}`);
  return answer.json();
}

/** Every stored message of `book` (the default one when undefined), oldest first. */
export async function allMessages(base, book) {
  const answer = await fetch(`${messagesUrl(base, book)}?limit=1000`, { signal: AbortSignal.timeout(10000) });
  if (!answer.ok) throw new Error(`GET answered ${answer.status}`);
  return (await answer.json()).messages;
}

export async function clearMessages(base, book) {
  const answer = await fetch(messagesUrl(base, book), {
    method: "DELETE",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: AbortSignal.timeout(10000),
  });
  if (!answer.ok) throw new Error(`DELETE answered ${answer.status}`);
}

/**
 * How many requests `base` (the client or a backend) has answered on its /api routes (its
 * catch-all for other /api paths included), from its `http_request_duration_seconds` counts:
 * what a refused book name must not add to. The UI's own files are not an /api route.
 */
export async function apiRequestsServed(base) {
  const answer = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10000) });
  if (!answer.ok) throw new Error(`GET /metrics answered ${answer.status}`);
  let total = 0;
  for (const line of (await answer.text()).split("\n")) {
    if (!line.startsWith("http_request_duration_seconds_count{")) continue;
    if (!/route="\/api[/"]/.test(line)) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}
