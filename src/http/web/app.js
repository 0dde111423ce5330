// DocFlow's page: sign in, upload several files with progress, list my
// documents with their jobs' live status, read a result page by page,
// download, delete, re-run, cancel; admins also see the dead-letter queue.
// Plain browser JavaScript against the public API: no build step, and no
// inline script or style, so the strict CSP holds.
"use strict";

const API = "/api/v1";
const PAGE_SIZE = 10;
const JOBS_PER_DOCUMENT = 5;
const UPLOADS_AT_ONCE = 2;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

// The session lives in localStorage so that it survives a reload and is
// shared by every tab (docs/security.md says why, and what it costs).
const KEYS = { access: "docflow.access", refresh: "docflow.refresh", email: "docflow.email" };
const session = {
  get access() { return localStorage.getItem(KEYS.access); },
  get refresh() { return localStorage.getItem(KEYS.refresh); },
  get email() { return localStorage.getItem(KEYS.email); },
  save(tokens, email) {
    localStorage.setItem(KEYS.access, tokens.access_token);
    localStorage.setItem(KEYS.refresh, tokens.refresh_token);
    if (email) localStorage.setItem(KEYS.email, email);
  },
  clear() { for (const key of Object.values(KEYS)) localStorage.removeItem(key); },
};

// An API error as the person should read it: the envelope's message.
class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? error.message : `The server answered ${status}.`);
    this.status = status;
    this.code = error ? error.code : `http_${status}`;
  }
}
const UNREACHABLE = "The server cannot be reached. Check your connection and try again.";

async function call(path, { method = "GET", json, headers = {}, auth = true, retried = false } = {}) {
  const init = { method, headers: { ...headers } };
  const access = session.access;
  if (auth && access) init.headers.Authorization = `Bearer ${access}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch {
    throw new Error(UNREACHABLE);
  }
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401 && auth && !retried) {
    if (body?.error?.code === "token_expired") {
      if (await refreshSession(access)) return call(path, { method, json, headers, auth, retried: true });
    } else if (access === session.access) {
      // Revoked or unknown (and not replaced by another tab meanwhile).
      signedOut("Your session has ended. Please sign in again.");
    }
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// Refresh tokens rotate, and one presented twice revokes the session (a
// stolen copy). Tabs share the token, so they take turns under a Web Lock,
// and a tab that finds a newer access token than the one that expired
// uses it instead of refreshing again.
async function refreshSession(expiredAccess) {
  const refresh = async () => {
    if (session.access && session.access !== expiredAccess) return true;
    if (!session.refresh) return false;
    try {
      const tokens = await call("/auth/refresh", { method: "POST", json: { refresh_token: session.refresh }, auth: false });
      session.save(tokens);
      return true;
    } catch (err) {
      if (err.status === 401) signedOut("Your session has ended. Please sign in again.");
      return false;
    }
  };
  return navigator.locks ? navigator.locks.request("docflow-refresh", refresh) : refresh();
}

function show(message, kind = "error") {
  const box = $("message");
  box.textContent = message;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !message;
}

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key in node && key !== "list") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function button(label, onclick, className = "secondary small", extra = {}) {
  return element("button", { type: "button", className, onclick, ...extra }, label);
}

async function withBusy(node, action) {
  node.disabled = true;
  try {
    await action();
  } catch (err) {
    show(err.message);
  } finally {
    node.disabled = false;
  }
}

const sizeFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
function humanSize(bytes) {
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${sizeFormat.format(value)} ${units[unit]}`;
}
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const words = (name) => name.replaceAll("_", " ");
// Result fields as a person names them; the rest in plain words.
const LABELS = {
  pdf_version: "PDF version", page_count: "Pages", pages_without_text: "Pages without text",
  ocr: "OCR", ocr_page_count: "Pages read by OCR", ocr_pages_skipped: "Pages past the OCR limit",
  form_fields: "Form fields", chars: "Characters", dpi: "DPI", exif_orientation: "EXIF orientation",
  language_confidence: "Language confidence", truncated_reason: "Why truncated",
};
const label = (key) => LABELS[key] || words(key).replace(/^./, (first) => first.toUpperCase());

function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

// ---- Signing in and out ----------------------------------------------

async function authenticate(register) {
  const email = $("email").value.trim();
  const password = $("password").value;
  if (!email || password.length < 10) {
    show("Enter your email and a password of at least 10 characters.");
    return;
  }
  const trigger = register ? $("register") : $("login");
  await withBusy(trigger, async () => {
    if (register) await call("/auth/register", { method: "POST", json: { email, password }, auth: false });
    const tokens = await call("/auth/login", { method: "POST", json: { email, password }, auth: false });
    session.save(tokens, email);
    $("password").value = "";
    show("");
    signedIn();
  });
}

async function signedIn() {
  $("who").textContent = session.email || "you";
  $("session").hidden = false;
  $("sign-in").hidden = true;
  $("work").hidden = false;
  pager.cursors = [null];
  pager.index = 0;
  await loadDocuments();
  try {
    const me = await call("/auth/me");
    $("who").textContent = me.email;
    const admin = me.role === "admin";
    $("role").hidden = !admin;
    $("admin").hidden = !admin;
    if (admin) await loadDeadLetters();
  } catch (err) {
    if (session.access) show(err.message);
  }
}

function signedOut(message) {
  session.clear();
  stopWatching(new Set());
  $("session").hidden = true;
  $("sign-in").hidden = false;
  $("work").hidden = true;
  $("result").hidden = true;
  $("admin").hidden = true;
  $("documents").replaceChildren();
  $("uploads").replaceChildren();
  show(message || "", "info");
}

async function signOut() {
  const refresh = session.refresh;
  try {
    await call("/auth/logout", { method: "POST", json: { refresh_token: refresh } });
  } catch {
    // Signing out here still ends the session in this browser.
  }
  signedOut("You are signed out.");
}

// ---- Uploads ------------------------------------------------------------

const uploadQueue = [];
let uploadsRunning = 0;

function addFiles(files) {
  if (!session.access) return;
  for (const file of files) {
    const bar = element("progress", { max: 1, value: 0 });
    const state = element("span", { className: "upload-state" }, "waiting");
    const item = element("li", { className: "upload", dataset: { name: file.name, state: "waiting" } },
      element("span", { className: "upload-name" }, file.name), bar, state);
    $("uploads").prepend(item);
    uploadQueue.push({ file, item, bar, state });
  }
  pumpUploads();
}

function pumpUploads() {
  while (uploadsRunning < UPLOADS_AT_ONCE && uploadQueue.length) {
    const next = uploadQueue.shift();
    uploadsRunning += 1;
    runUpload(next).finally(() => {
      uploadsRunning -= 1;
      pumpUploads();
    });
  }
}

function setUpload(upload, state, text) {
  upload.item.dataset.state = state;
  upload.state.textContent = text;
}

async function runUpload(upload) {
  setUpload(upload, "uploading", "uploading");
  try {
    const doc = await sendFile(upload.file, (fraction) => {
      upload.bar.value = fraction;
      upload.state.textContent = `${Math.round(fraction * 100)} %`;
    });
    upload.bar.value = 1;
    setUpload(upload, "processing", "starting the job");
    const job = await startJob(doc.id);
    setUpload(upload, "done", `uploaded, job ${job.status}`);
    await loadDocuments({ firstPage: true });
  } catch (err) {
    setUpload(upload, "failed", err.message);
  }
}

// fetch() reports no upload progress, XMLHttpRequest does.
function sendFile(file, onProgress, retried = false) {
  const access = session.access;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/documents/upload`);
    xhr.setRequestHeader("Authorization", `Bearer ${access}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) resolve(xhr.response);
      else reject(new ApiError(xhr.status, xhr.response));
    });
    xhr.addEventListener("error", () => reject(new Error(UNREACHABLE)));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  }).catch(async (err) => {
    if (!retried && err.code === "token_expired" && (await refreshSession(access))) {
      return sendFile(file, onProgress, true);
    }
    throw err;
  });
}

async function startJob(documentId) {
  const job = await call("/jobs", {
    method: "POST",
    json: { document_id: documentId, ocr: $("ocr-mode").value },
    headers: { "Idempotency-Key": newKey() },
  });
  jobs.set(job.id, job);
  return job;
}

// ---- Documents and their jobs -----------------------------------------

const pager = { cursors: [null], index: 0, next: null };
const jobs = new Map(); // job id -> the job as last seen
const documents = new Map(); // document id -> the document
let listing = 0; // which loadDocuments call is the latest

async function loadDocuments({ firstPage = false } = {}) {
  if (firstPage) {
    pager.cursors = [null];
    pager.index = 0;
  }
  const mine = ++listing;
  const query = new URLSearchParams({ limit: PAGE_SIZE });
  const cursor = pager.cursors[pager.index];
  if (cursor) query.set("cursor", cursor);
  let page;
  let jobLists;
  try {
    page = await call(`/documents?${query}`);
    jobLists = await Promise.all(page.items.map((doc) =>
      call(`/jobs?document_id=${doc.id}&limit=${JOBS_PER_DOCUMENT}`).then((list) => list.items)));
  } catch (err) {
    if (session.access) show(`Cannot list your documents: ${err.message}`);
    return;
  }
  if (mine !== listing) return;
  pager.next = page.next_cursor || null;
  $("newer").disabled = pager.index === 0;
  $("older").disabled = !pager.next;
  const count = page.total_exact ? page.total : `${page.total}+`;
  $("documents-count").textContent = page.total ? `${count} in all` : "";
  $("documents-empty").hidden = page.items.length > 0;
  documents.clear();
  const rows = page.items.map((doc, i) => {
    documents.set(doc.id, doc);
    for (const job of jobLists[i]) jobs.set(job.id, { ...jobs.get(job.id), ...job });
    return documentRow(doc, jobLists[i].map((job) => job.id));
  });
  $("documents").replaceChildren(...rows);
  const active = new Set(jobLists.flat().filter((job) => !FINAL.has(job.status)).map((job) => job.id));
  stopWatching(active);
  for (const id of active) watch(id);
}

function documentRow(doc, jobIds) {
  const jobList = element("ul", { className: "jobs", "aria-label": `Jobs of ${doc.filename}` },
    ...jobIds.map((id) => jobRow(jobs.get(id))));
  if (!jobIds.length) jobList.append(element("li", { className: "muted" }, "No job yet."));
  const row = element("li", { className: "document", dataset: { id: doc.id, name: doc.filename } },
    element("div", { className: "document-head" },
      element("strong", { className: "filename" }, doc.filename),
      element("span", { className: "muted" }, `${doc.content_type} · ${humanSize(doc.size_bytes)} · ${when(doc.created_at)}`)),
    jobList,
    element("div", { className: "actions" },
      button("Download", (event) => withBusy(event.currentTarget, () => download(doc)), "secondary small download"),
      button("Run again", (event) => withBusy(event.currentTarget, () => rerun(doc)), "secondary small rerun"),
      button("Delete", (event) => withBusy(event.currentTarget, () => remove(doc)), "danger small delete")));
  return row;
}

function jobRow(job) {
  const status = element("span", { className: `status ${job.status}` }, words(job.status));
  const details = [];
  if (job.attempts > 1 || (job.attempts && job.status === "failed")) details.push(`attempt ${job.attempts} of ${job.max_attempts}`);
  details.push(when(job.completed_at || job.updated_at || job.created_at));
  const item = element("li", { className: "job", dataset: { jobId: job.id, status: job.status } },
    status, " ", element("span", { className: "muted" }, details.join(" · ")));
  if (job.last_error && job.status !== "succeeded") item.append(element("div", { className: "job-error" }, job.last_error));
  if (job.timeline && job.timeline.length) {
    item.append(element("div", { className: "timeline muted" }, job.timeline.join(" → ")));
  }
  const actions = element("span", { className: "job-actions" });
  if (job.status === "succeeded") {
    actions.append(button("Show result", (event) => withBusy(event.currentTarget, () => openResult(job.id)), "small show-result"));
  }
  if (job.status === "queued" || job.status === "processing") {
    actions.append(button("Cancel", (event) => withBusy(event.currentTarget, () => cancel(job.id)), "secondary small cancel"));
  }
  item.append(actions);
  return item;
}

function updateJob(id, change) {
  const job = { ...jobs.get(id), ...change };
  jobs.set(id, job);
  for (const old of document.querySelectorAll(`li.job[data-job-id="${id}"]`)) old.replaceWith(jobRow(job));
}

async function download(doc) {
  const link = await call(`/documents/${doc.id}/download-url`);
  // The signed link works without credentials: hand it to the browser.
  const anchor = element("a", { href: link.url, download: doc.filename, hidden: true });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
}

async function rerun(doc) {
  const job = await startJob(doc.id);
  show(`Processing ${doc.filename} again (job ${job.status}).`, "info");
  await loadDocuments();
}

async function cancel(jobId) {
  const job = await call(`/jobs/${jobId}/cancel`, { method: "POST" });
  updateJob(jobId, job);
}

async function remove(doc) {
  if (!window.confirm(`Delete “${doc.filename}” and everything read from it? This cannot be undone.`)) return;
  await call(`/documents/${doc.id}`, { method: "DELETE" });
  if ($("result").dataset.documentId === doc.id) closeResult();
  show(`Deleted ${doc.filename}.`, "info");
  await loadDocuments();
}

// ---- Live status ---------------------------------------------------------

// One EventSource per unfinished job on screen. EventSource cannot send
// headers, so each connection gets a short-lived job-scoped token; a
// reconnect resumes after the last event seen.
const watches = new Map(); // job id -> { source, lastEventId, done, failures }

function watch(jobId) {
  if (watches.has(jobId)) return;
  const state = { source: null, lastEventId: null, done: false, failures: 0 };
  watches.set(jobId, state);
  connect(jobId, state);
}

function stopWatching(keep) {
  for (const [id, state] of watches) {
    if (keep.has(id)) continue;
    state.done = true;
    if (state.source) state.source.close();
    watches.delete(id);
  }
}

async function connect(jobId, state) {
  if (state.done || watches.get(jobId) !== state) return;
  let token;
  try {
    token = await call(`/jobs/${jobId}/stream-token`, { method: "POST" });
  } catch (err) {
    if (err.status === 404 || err.status === 401) {
      state.done = true;
      return;
    }
    return retry(jobId, state);
  }
  if (state.done) return;
  let url = token.events_url;
  if (state.lastEventId !== null) url += `&last_event_id=${encodeURIComponent(state.lastEventId)}`;
  const source = new EventSource(url);
  state.source = source;
  source.addEventListener("status", (message) => {
    const event = JSON.parse(message.data);
    state.lastEventId = message.lastEventId;
    state.failures = 0;
    const seen = jobs.get(jobId) || {};
    const timeline = [...(seen.timeline || []), words(event.status)];
    const status = event.status === "retry_scheduled" || event.status === "requeued" ? "queued" : event.status;
    updateJob(jobId, { status, attempts: event.attempts, last_error: event.error, updated_at: event.updated_at, timeline });
    if (FINAL.has(event.status)) {
      state.done = true;
      source.close();
      watches.delete(jobId);
      if (event.status === "succeeded") refreshJob(jobId);
    }
  });
  source.addEventListener("error", () => {
    // The stream ended (time cap, restart, network, or a 204 because the
    // job had already finished): ask for the job, then resume if needed.
    source.close();
    if (!state.done) retry(jobId, state);
  });
}

async function retry(jobId, state) {
  state.failures += 1;
  try {
    const job = await call(`/jobs/${jobId}`);
    if (FINAL.has(job.status)) {
      state.done = true;
      watches.delete(jobId);
      updateJob(jobId, job);
      return;
    }
  } catch (err) {
    if (err.status === 404 || err.status === 401) {
      state.done = true;
      watches.delete(jobId);
      return;
    }
  }
  const delay = Math.min(30_000, 1000 * 2 ** Math.min(state.failures - 1, 5));
  setTimeout(() => connect(jobId, state), delay);
}

async function refreshJob(jobId) {
  try {
    const job = await call(`/jobs/${jobId}`);
    delete job.result;
    updateJob(jobId, job);
  } catch {
    // The live status already shows the outcome.
  }
}

// ---- Results ---------------------------------------------------------------

async function openResult(jobId) {
  const job = await call(`/jobs/${jobId}`);
  const result = job.result && job.result.result;
  if (!result) throw new Error("This job has no result.");
  const doc = documents.get(job.document_id);
  const panel = $("result");
  panel.dataset.documentId = job.document_id;
  panel.dataset.jobId = jobId;
  $("result-name").textContent = doc ? doc.filename : "";
  renderMetadata(result, doc);
  renderPages(result);
  panel.hidden = false;
  panel.focus();
  panel.scrollIntoView({ block: "start" });
}

function closeResult() {
  const panel = $("result");
  panel.hidden = true;
  delete panel.dataset.documentId;
  delete panel.dataset.jobId;
}

function renderMetadata(result, doc) {
  const rows = [];
  const add = (name, value) => {
    const cell = formatValue(value);
    if (cell === null) return;
    rows.push(element("tr", {}, element("th", { scope: "row" }, name), element("td", {}, cell)));
  };
  if (doc) {
    add("File", doc.filename);
    add("Type", doc.content_type);
    add("Size", humanSize(doc.size_bytes));
  }
  add("Kind", result.kind);
  for (const [key, value] of Object.entries(result)) {
    if (key === "kind" || key === "text" || key === "pages" || key === "parts") continue;
    add(label(key), value);
  }
  $("metadata").tBodies[0].replaceChildren(...rows);
}

// Metadata as a person reads it: nested objects as small tables, lists
// as lists, nothing as raw JSON.
function formatValue(value) {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") return value.toLocaleString();
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    if (!value.length) return null;
    if (value.every((item) => typeof item !== "object" || item === null)) return value.join(", ");
    const list = element("ul", { className: "plain" });
    for (const item of value) {
      const cell = formatValue(item);
      if (cell !== null) list.append(element("li", {}, cell));
    }
    return list;
  }
  const table = element("table", { className: "nested" });
  for (const [key, inner] of Object.entries(value)) {
    const cell = formatValue(inner);
    if (cell !== null) table.append(element("tr", {}, element("th", { scope: "row" }, label(key)), element("td", {}, cell)));
  }
  return table.rows.length ? table : null;
}

function renderPages(result) {
  const container = $("pages");
  // Slides and sheets of Office documents, each under its name.
  if (Array.isArray(result.parts) && result.parts.length) {
    container.replaceChildren(...result.parts.map((part, i) =>
      element("article", { className: "page", dataset: { page: i + 1 } },
        element("h4", {}, part.name),
        part.text && part.text.trim()
          ? element("pre", { className: "text" }, part.text)
          : element("p", { className: "no-text" }, "No text here."))));
    return;
  }
  if (!Array.isArray(result.pages)) {
    const text = result.text || "";
    container.replaceChildren(text.trim()
      ? element("pre", { className: "text" }, text)
      : element("p", { className: "no-text" }, "No text found."));
    return;
  }
  container.replaceChildren(...result.pages.map((page) => {
    const notes = [];
    if (page.source === "ocr") {
      notes.push(page.ocr_confidence !== null && page.ocr_confidence !== undefined
        ? `read by OCR, confidence ${Math.round(page.ocr_confidence)} %`
        : "read by OCR");
    }
    if (page.ocr_error) notes.push(`OCR failed: ${page.ocr_error}`);
    const hasText = page.text && page.text.trim();
    return element("article", { className: "page", dataset: { page: page.number, source: page.source } },
      element("h4", {}, `Page ${page.number}`, notes.length ? element("span", { className: "muted" }, ` — ${notes.join("; ")}`) : null),
      hasText ? element("pre", { className: "text" }, page.text) : element("p", { className: "no-text" }, "No text on this page."));
  }));
}

async function copyText() {
  const text = [...$("pages").querySelectorAll("pre.text")].map((pre) => pre.textContent).join("\n\n");
  try {
    await navigator.clipboard.writeText(text);
    show("The text is copied.", "info");
  } catch {
    // Without clipboard access (plain http), select it for Ctrl+C.
    const range = document.createRange();
    range.selectNodeContents($("pages"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    show("The text is selected: press Ctrl+C (⌘C) to copy it.", "info");
  }
}

// ---- Dead-letter queue (admins) ------------------------------------------

async function loadDeadLetters() {
  let page;
  try {
    page = await call("/admin/failed-jobs?limit=50");
  } catch (err) {
    show(`Cannot list failed jobs: ${err.message}`);
    return;
  }
  $("dead-count").textContent = page.total ? `${page.total} in all` : "";
  $("dead-empty").hidden = page.items.length > 0;
  $("dead-letters").replaceChildren(...page.items.map((dead) =>
    element("li", { className: "dead-letter", dataset: { jobId: dead.job_id, reason: dead.reason } },
      element("div", {}, element("span", { className: "status failed" }, words(dead.reason)), " ",
        element("span", { className: "muted" }, `job ${dead.job_id} · ${dead.attempts} attempt(s) · ${when(dead.failed_at)}`)),
      element("div", { className: "job-error" }, dead.error),
      button("Requeue", (event) => withBusy(event.currentTarget, async () => {
        await call(`/admin/failed-jobs/${dead.job_id}/requeue`, { method: "POST" });
        show(`Job ${dead.job_id} is queued again.`, "info");
        await loadDeadLetters();
        await loadDocuments();
      }), "small requeue"))));
}

// ---- Wiring ------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (event) => { event.preventDefault(); authenticate(false); });
  $("register").addEventListener("click", () => authenticate(true));
  $("upload-form").addEventListener("submit", (event) => event.preventDefault());
  $("file").addEventListener("change", () => {
    addFiles([...$("file").files]);
    $("file").value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    addFiles([...event.dataTransfer.files]);
  });
  $("sign-out").addEventListener("click", signOut);
  $("reload-documents").addEventListener("click", () => loadDocuments());
  $("newer").addEventListener("click", () => {
    pager.index = Math.max(0, pager.index - 1);
    loadDocuments();
  });
  $("older").addEventListener("click", () => {
    if (!pager.next) return;
    pager.cursors[pager.index + 1] = pager.next;
    pager.index += 1;
    loadDocuments();
  });
  $("copy-text").addEventListener("click", copyText);
  $("close-result").addEventListener("click", closeResult);
  $("reload-dead").addEventListener("click", loadDeadLetters);
  // Signing out in one tab signs out the others.
  window.addEventListener("storage", (event) => {
    if (event.key === KEYS.refresh && !event.newValue && !$("work").hidden) signedOut("You signed out in another tab.");
    if (event.key === KEYS.refresh && event.newValue && !event.oldValue && $("work").hidden) signedIn();
  });
  if (session.refresh) signedIn();
});
