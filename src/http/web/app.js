// DocFlow's page: sign in, upload, start a job, follow it live, show the
// result. Plain browser JavaScript against the public API; no build step.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
const session = {
  get access() { return sessionStorage.getItem("docflow.access"); },
  get refresh() { return sessionStorage.getItem("docflow.refresh"); },
  get email() { return sessionStorage.getItem("docflow.email"); },
  save(tokens, email) {
    sessionStorage.setItem("docflow.access", tokens.access_token);
    sessionStorage.setItem("docflow.refresh", tokens.refresh_token);
    if (email) sessionStorage.setItem("docflow.email", email);
  },
  clear() { sessionStorage.clear(); },
};

// An API error as the person should read it: the envelope's message.
class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? error.message : `The server answered ${status}.`);
    this.status = status;
    this.code = error ? error.code : "http_" + status;
  }
}

async function call(path, { method = "GET", json, form, headers = {}, auth = true, retried = false } = {}) {
  const init = { method, headers: { ...headers } };
  if (auth && session.access) init.headers.Authorization = `Bearer ${session.access}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && auth && !retried && session.refresh && body?.error?.code === "token_expired") {
    if (await refreshSession()) return call(path, { method, json, form, headers, auth, retried: true });
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

async function refreshSession() {
  try {
    const tokens = await call("/auth/refresh", { method: "POST", json: { refresh_token: session.refresh }, auth: false });
    session.save(tokens);
    return true;
  } catch {
    signedOut("Your session has ended. Please sign in again.");
    return false;
  }
}

function show(message, kind = "error") {
  const box = $("message");
  box.textContent = message;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !message;
}

function busy(button, on) { button.disabled = on; }

function signedIn() {
  $("who").textContent = session.email || "you";
  $("session").hidden = false;
  $("sign-in").hidden = true;
  $("work").hidden = false;
}

function signedOut(message) {
  session.clear();
  $("session").hidden = true;
  $("sign-in").hidden = false;
  $("work").hidden = true;
  show(message || "", "info");
}

async function authenticate(register) {
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || password.length < 8) {
    show("Enter your email and a password of at least 8 characters.");
    return;
  }
  const button = register ? $("register") : $("login");
  busy(button, true);
  try {
    if (register) await call("/auth/register", { method: "POST", json: { email, password }, auth: false });
    const tokens = await call("/auth/login", { method: "POST", json: { email, password }, auth: false });
    session.save(tokens, email);
    show("");
    signedIn();
  } catch (err) {
    show(err.message);
  } finally {
    busy(button, false);
  }
}

function newKey() {
  return window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

async function uploadAndProcess(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    show("Choose a file first.");
    return;
  }
  busy($("upload"), true);
  show("");
  $("result").hidden = true;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const doc = await call("/documents/upload", { method: "POST", form });
    const job = await call("/jobs", { method: "POST", json: { document_id: doc.id }, headers: { "Idempotency-Key": newKey() } });
    follow(job.id);
  } catch (err) {
    show(err.message);
  } finally {
    busy($("upload"), false);
  }
}

let current = null; // { jobId, source, lastEventId, done }

function follow(jobId) {
  if (current && current.source) current.source.close();
  current = { jobId, source: null, lastEventId: null, done: false };
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  $("timeline").replaceChildren();
  setStatus("queued", null);
  open(current);
}

// EventSource cannot send headers, so each connection gets a fresh
// job-scoped token; a reconnect resumes after the last event seen.
async function open(watch) {
  if (watch !== current || watch.done) return;
  let token;
  try {
    token = await call(`/jobs/${watch.jobId}/stream-token`, { method: "POST" });
  } catch (err) {
    if (watch === current) show(`Cannot follow the job: ${err.message}`);
    return;
  }
  // Another job (or sign-out) may have taken over while the token came.
  if (watch !== current || watch.done) return;
  let url = token.events_url;
  if (watch.lastEventId !== null) url += `&last_event_id=${encodeURIComponent(watch.lastEventId)}`;
  const source = new EventSource(url);
  watch.source = source;
  source.addEventListener("status", (message) => {
    const event = JSON.parse(message.data);
    watch.lastEventId = message.lastEventId;
    setStatus(event.status, event);
    if (event.status === "succeeded" || event.status === "failed" || event.status === "cancelled") {
      watch.done = true;
      source.close();
      showOutcome(watch.jobId, event);
    }
  });
  source.addEventListener("error", () => {
    // The stream ended (time cap, restart, network): resume with a new token.
    source.close();
    if (!watch.done) setTimeout(() => open(watch), 1000);
  });
}

function setStatus(status, event) {
  const label = $("job-status");
  label.textContent = status.replace("_", " ");
  label.className = `status ${status}`;
  label.dataset.status = status;
  $("job-attempts").textContent = event && event.attempts ? `(attempt ${event.attempts})` : "";
  if (event) {
    const item = document.createElement("li");
    const when = new Date(event.updated_at).toLocaleTimeString();
    item.textContent = `${when} — ${status.replace("_", " ")}${event.error ? `: ${event.error}` : ""}`;
    $("timeline").append(item);
  }
}

async function showOutcome(jobId, event) {
  if (event.status === "failed") {
    show(`Processing failed: ${event.error || "no reason given"}`);
    return;
  }
  if (event.status === "cancelled") {
    show("The job was cancelled.");
    return;
  }
  try {
    const job = await call(`/jobs/${jobId}`);
    const result = job.result && job.result.result;
    if (!result) {
      show("The job finished but has no result.");
      return;
    }
    renderResult(result);
  } catch (err) {
    show(`Cannot load the result: ${err.message}`);
  }
}

function renderResult(result) {
  const list = $("metadata");
  list.replaceChildren();
  const add = (name, value) => {
    if (value === undefined || value === null || value === "") return;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    list.append(dt, dd);
  };
  add("Kind", result.kind);
  for (const [key, value] of Object.entries(result)) {
    if (key === "kind" || key === "text" || key === "pages") continue;
    add(key.replaceAll("_", " "), value);
  }
  if (Array.isArray(result.pages)) add("pages", result.pages.length);
  $("text").textContent = result.text || "(no text found)";
  $("result").hidden = false;
}

async function signOut() {
  try {
    await call("/auth/logout", { method: "POST", json: { refresh_token: session.refresh } });
  } catch {
    // Signing out locally still ends the session on this page.
  }
  if (current && current.source) current.source.close();
  current = null;
  signedOut("You are signed out.");
}

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (event) => { event.preventDefault(); authenticate(false); });
  $("register").addEventListener("click", () => authenticate(true));
  $("upload-form").addEventListener("submit", uploadAndProcess);
  $("sign-out").addEventListener("click", signOut);
  if (session.access) signedIn();
});
