// The Button's page: the live state from /v1/states/stream (EventSource
// reconnects on its own and sends Last-Event-ID), presses with proof of
// work when the service asks for it (solved in a worker so the page never
// freezes), and every refusal said plainly.
"use strict";

const $ = (id) => document.getElementById(id);
const button = $("press");
const statusLine = $("status");
let newestId = -1;

function say(text, kind) {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind || "info";
}

function show(state) {
  if (state.id <= newestId) return;
  newestId = state.id;
  $("counter").textContent = state.counter.toLocaleString("en");
  $("phase").textContent = state.phase;
  $("phase").dataset.phase = state.phase;
  $("entropy").value = state.entropy;
  $("entropy-value").textContent = state.entropy.toFixed(3);
  revealUntil = state.reveal_until_ms || 0;
  tickReveal();
}

let revealUntil = 0;
function tickReveal() {
  const left = revealUntil - Date.now();
  $("reveal").textContent = left > 0 ? `open, ${(left / 1000).toFixed(1)} s left` : "closed";
}
setInterval(tickReveal, 200);

function connect() {
  const stream = new EventSource("/v1/states/stream");
  stream.addEventListener("state", (e) => {
    $("connection").textContent = "live";
    show(JSON.parse(e.data));
  });
  stream.onerror = () => {
    $("connection").textContent = "reconnecting…";
  };
}

let worker = null;
function solve(challenge) {
  worker = worker || new Worker("/assets/pow-worker.js");
  return new Promise((resolve) => {
    worker.onmessage = (e) => resolve(e.data.nonce);
    worker.postMessage({ challenge_id: challenge.challenge_id, difficulty: challenge.difficulty });
  });
}

// The proof of work a press needs, or null when the service asks none.
async function proof() {
  const response = await fetch("/v1/challenge", { cache: "no-store" });
  if (response.status === 404) return null;
  if (!response.ok) throw new Refusal(response.status, await errorOf(response), response);
  const challenge = await response.json();
  say(`Solving a ${challenge.difficulty}-bit puzzle…`);
  challenge.nonce = await solve(challenge);
  return challenge;
}

class Refusal extends Error {
  constructor(status, code, response) {
    super(code);
    this.status = status;
    this.code = code;
    this.retryAfter = Number(response.headers.get("retry-after")) || 0;
  }
}

async function errorOf(response) {
  try {
    return (await response.json()).error || `http_${response.status}`;
  } catch {
    return `http_${response.status}`;
  }
}

function explain(refusal) {
  const wait = refusal.retryAfter ? ` Try again in ${refusal.retryAfter} s.` : "";
  switch (refusal.status) {
    case 429: return `Too many presses from here.${wait}`;
    case 503: return `The button is out of reach for a moment (${refusal.code}).${wait || " Try again shortly."}`;
    case 400: return `The press was refused (${refusal.code}).`;
    default: return `The press failed (${refusal.code}).`;
  }
}

async function press() {
  button.disabled = true;
  // One key per click: a retry of this press can never count twice.
  const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
  try {
    const pow = await proof();
    const body = pow ? { pow } : {};
    const response = await fetch("/v1/events/press", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify(body),
    });
    if (response.status !== 202) throw new Refusal(response.status, await errorOf(response), response);
    say("Pressed. It counts once.");
  } catch (e) {
    say(e instanceof Refusal ? explain(e) : "No answer from the service. Check your connection.", "error");
  } finally {
    button.disabled = false;
  }
}

// Countries are counted by the reducer beside the states, not in them:
// read every few seconds.
async function countries() {
  try {
    const response = await fetch("/v1/countries", { cache: "no-store" });
    if (!response.ok) return;
    const { countries } = await response.json();
    const list = $("countries");
    list.replaceChildren(
      ...countries.map(({ country, presses }) => {
        const item = document.createElement("li");
        item.textContent = `${country === "unknown" ? "unknown" : country}: ${presses.toLocaleString("en")}`;
        return item;
      }),
    );
    if (!countries.length) list.replaceChildren(Object.assign(document.createElement("li"), { textContent: "none yet" }));
  } catch {
    // The next round will try again.
  }
}
setInterval(countries, 5000);
countries();

button.addEventListener("click", press);
fetch("/v1/states/current").then((r) => (r.ok ? r.json() : null)).then((s) => s && show(s)).catch(() => {});
connect();
