// log.js — the log page (/jobs/<ID>): the job's header, the live stream, on-demand history,
// search, permalinks, folding and keyboard shortcuts. Rendering lives in view.js.
//
// Where lines come from: a running job is followed with one EventSource on
// /api/jobs/<ID>/events, started at the tail (`tail=`). Everything else (earlier lines, a
// finished job, a permalink far up) comes from /api/jobs/<ID>/lines pages, fetched only for the
// blocks the view needs. Both feed the same sparse store, keyed by line number, so overlaps and
// reconnects never show a line twice.

import { plainText } from "./ansi.js";
import {
  backoff, commandText, copyText, el, getJson, hideToken, jobDuration, metaNodes, parseTime,
  statusText,
} from "./common.js";
import { BLOCK, blockOf, formatRange, LineStore, LOST, parseRange } from "./model.js";
import { ProblemsPanel } from "./problems.js";
import { LogView } from "./view.js";

hideToken();

const TAIL_LINES = 1000;
const PAGE_LINES = 5000;
const MAX_STORED_BLOCKS = 3000;

const $ = (id) => document.getElementById(id);
const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const api = `/api/jobs/${encodeURIComponent(jobId)}`;

const store = new LineStore();
const view = new LogView(
  {
    scroller: $("log"), rows: $("rows"), topSpace: $("top-space"), bottomSpace: $("bottom-space"),
    earlier: $("earlier"), later: $("later"), empty: $("empty"),
  },
  store,
);

let job = null;
let ended = false;

// ---- header ------------------------------------------------------------------------------------

function showJob(next) {
  job = next;
  document.title = `${job.name} · logstream`;
  $("name").textContent = job.name;
  $("command").textContent = commandText(job.command);
  $("command").title = commandText(job.command);
  const status = $("status");
  status.textContent = statusText(job);
  status.className = `status st-${job.status}`;
  view.startedMs = parseTime(job.started_at);
  // Only a job this server runs can be cancelled from here (task-runner mode).
  $("cancel").hidden = !(job.cancellable && job.status === "running");
  showMeta();
  $("ci").replaceChildren(...metaNodes(job.meta));
}

async function cancelJob() {
  const button = $("cancel");
  button.disabled = true;
  try {
    await getJson(`${api}/cancel`, { method: "POST" });
    flash("cancelling: SIGTERM sent, SIGKILL follows after 10 s");
  } catch (error) {
    flash(`could not cancel: ${error.message}`);
    button.disabled = false;
  }
}

function showMeta() {
  if (!job) return;
  const parts = [];
  const started = parseTime(job.started_at);
  if (started != null) parts.push(`started ${new Date(started).toLocaleString()}`);
  const took = jobDuration(job);
  if (took) parts.push(job.status === "running" ? `running for ${took}` : `took ${took}`);
  parts.push(`${Math.max(store.last, job.lines || 0).toLocaleString()} lines`);
  $("meta").textContent = parts.join(" · ");
}

function setConnection(state, text) {
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = text ?? state;
}

function finish(result) {
  if (!ended && source) notifyEnd(result);
  ended = true;
  closeStream();
  const finishedAt = result.finished_at ? parseTime(result.finished_at) : Date.now();
  showJob({ ...job, ...result, finished_at: job.finished_at ?? new Date(finishedAt).toISOString() });
  view.ended = true;
  view.endedMs = finishedAt;
  view.schedule();
  setConnection("ended", "ended");
  $("follow").hidden = true;
  $("follow-toggle").hidden = true;
}

// ---- desktop notification when a followed job ends --------------------------------------------

/** Ask once, on the user's first click (browsers allow asking only then), while a job runs. */
function askToNotifyOnce() {
  if (!("Notification" in window) || Notification.permission !== "default") return;
  if (localStorage.getItem("logstream.notify-asked")) return;
  const ask = () => {
    if (ended) return;
    localStorage.setItem("logstream.notify-asked", "1");
    Notification.requestPermission().catch(() => {});
  };
  document.addEventListener("click", ask, { once: true });
}

function notifyEnd(result) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") return;
  const name = job?.name ?? jobId;
  const count = problems.count("error");
  const errors = count ? ` · ${count} ${count === 1 ? "error" : "errors"}` : "";
  const note = new Notification(`${name}: ${result.status}`, {
    body: `exit code ${result.exit_code ?? "–"}${errors}`,
    tag: `logstream-${jobId}`,
  });
  note.onclick = () => window.focus();
}

// ---- the live stream ---------------------------------------------------------------------------

let source = null;
let cursor = 0; // the last line the stream gave us
let attempt = 0;
let pendingTime = null;
let retryTimer = 0;

function connect(query) {
  closeStream();
  setConnection("connecting", attempt ? "reconnecting…" : "connecting…");
  const es = new EventSource(`${api}/events?${query}`);
  source = es;
  es.onopen = () => {
    attempt = 0;
    setConnection("live", "live");
    // The stream sends the problems found after where it starts (`tail=` skips lines, and
    // their problems): those found between the list loaded at start and that point come
    // from the list, loaded again now that the stream has started. Entries are not doubled.
    problems.load(api).catch(() => {});
  };
  es.onmessage = (event) => receiveLine(event, "o");
  es.addEventListener("stderr", (event) => receiveLine(event, "e"));
  es.addEventListener("time", (event) => {
    pendingTime = Number(event.data);
  });
  es.addEventListener("gap", (event) => {
    const first = JSON.parse(event.data).first;
    markLost(cursor + 1, first - 1);
    cursor = Math.max(cursor, first - 1);
  });
  es.addEventListener("problem", (event) => problems.add(JSON.parse(event.data)));
  es.addEventListener("end", (event) => finish(JSON.parse(event.data)));
  es.onerror = () => {
    if (ended || source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // A non-200 answer (or 204) closes an EventSource for good: reconnect ourselves.
      reconnectLater();
    } else {
      // The browser retries by itself after a dropped connection, sending Last-Event-ID.
      setConnection("reconnecting", "reconnecting…");
    }
  };
}

function receiveLine(event, stream) {
  const seq = Number(event.lastEventId);
  if (!(seq > 0)) return;
  const text = event.data.includes("\n") ? event.data.replace(/\n/g, "\r") : event.data;
  if (pendingTime !== null) {
    store.addMark(seq, pendingTime);
    pendingTime = null;
  }
  store.put(seq, stream, text);
  if (seq > cursor) cursor = seq;
  view.schedule();
}

function closeStream() {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
}

function reconnectLater() {
  closeStream();
  const delay = backoff(attempt++);
  setConnection("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)}s…`);
  retryTimer = setTimeout(async () => {
    try {
      const latest = await getJson(api);
      showJob(latest);
      if (latest.status !== "running" && cursor >= latest.lines) {
        finish(latest);
        return;
      }
    } catch (error) {
      if (error.status === 404) {
        setConnection("error", "job not found");
        return;
      }
      reconnectLater();
      return;
    }
    connect(cursor ? `last_event_id=${cursor}` : `tail=${TAIL_LINES}`);
  }, delay);
}

// ---- history on demand -------------------------------------------------------------------------

const loading = new Set();

function markLost(from, to) {
  for (let seq = from; seq <= to && seq - from < 1_000_000; seq++) store.put(seq, "o", LOST);
}

/** Fetch the lines of `blocks` (incomplete blocks near the viewport), a page per contiguous run. */
function loadBlocks(blocks) {
  const todo = blocks.filter((b) => !loading.has(b)).sort((a, b) => a - b);
  let i = 0;
  while (i < todo.length) {
    let j = i;
    while (j + 1 < todo.length && todo[j + 1] === todo[j] + 1 && (j + 2 - i) * BLOCK <= PAGE_LINES) j++;
    const run = todo.slice(i, j + 1);
    i = j + 1;
    const from = store.firstMissing(run[0]) || run[0] * BLOCK + 1;
    const to = Math.min(store.last, (run[run.length - 1] + 1) * BLOCK);
    if (from > to) continue;
    for (const b of run) loading.add(b);
    fetchLines(from - 1, to - from + 1)
      .catch(() => new Promise((resolve) => setTimeout(resolve, 2000)))
      .finally(() => {
        for (const b of run) loading.delete(b);
        evictFarBlocks();
        view.schedule();
      });
  }
}

async function fetchLines(after, limit) {
  const page = await getJson(`${api}/lines?after=${after}&limit=${limit}`);
  if (page.first > after + 1) markLost(after + 1, Math.min(page.first - 1, after + limit));
  for (const [seq, ms] of page.times) store.addMark(seq, ms);
  for (const [seq, stream, text] of page.lines) store.put(seq, stream, text);
  if (page.last > store.last && !ended) store.last = Math.max(store.last, page.last);
  return page;
}

/** Keep memory bounded on huge logs: forget the blocks farthest from what is on screen. */
function evictFarBlocks() {
  if (store.blocks.size <= MAX_STORED_BLOCKS) return;
  const here = blockOf(view.firstVisible() || store.last || 1);
  const far = [...store.blocks.keys()].sort((a, b) => Math.abs(b - here) - Math.abs(a - here));
  for (const b of far.slice(0, store.blocks.size - MAX_STORED_BLOCKS)) {
    if (!view.rendered.has(b)) store.drop(b);
  }
}

view.onNeed = loadBlocks;

// ---- follow, permalinks, selection -------------------------------------------------------------

view.onFollow = (on) => {
  $("follow").hidden = on || (ended && atEnd());
  $("follow-toggle").setAttribute("aria-pressed", String(on));
};

function atEnd() {
  const sc = $("log");
  return sc.scrollHeight - sc.clientHeight - sc.scrollTop <= 2;
}

function jumpToEnd() {
  view.setFollow(true);
}

function select(range, { reveal = false, updateUrl = true } = {}) {
  view.setSelection(range);
  if (updateUrl) {
    const hash = range ? formatRange(range) : "";
    history.replaceState(history.state, "", location.pathname + location.search + hash);
  }
  const bar = $("selection");
  bar.hidden = !range;
  if (range) {
    $("selection-what").textContent =
      range[0] === range[1] ? `Line ${range[0]}` : `Lines ${range[0]}–${range[1]}`;
  }
  if (range && reveal) view.reveal(range[0]);
}

let selectionAnchor = null;

$("rows").addEventListener("click", (event) => {
  const target = event.target;
  const row = target.closest(".r");
  if (!row) return;
  const seq = Number(row.dataset.s);
  if (target.closest(".fold") || (row.classList.contains("gh") && target.closest(".x"))) {
    if (!window.getSelection().toString()) view.toggleGroup(seq);
    return;
  }
  if (target.closest(".n")) {
    event.preventDefault();
    if (event.shiftKey && selectionAnchor) {
      select([Math.min(selectionAnchor, seq), Math.max(selectionAnchor, seq)]);
    } else {
      selectionAnchor = seq;
      const sel = view.selection;
      select(sel && sel[0] === seq && sel[1] === seq ? null : [seq, seq]);
    }
  }
  if (target.closest(".cp")) copyLines([seq, seq], target.closest(".cp"));
});

// One copy button, moved into the hovered row's gutter (cheaper than one per row).
const copyButton = el("button", "cp", "⧉");
copyButton.type = "button";
copyButton.title = "Copy this line";
copyButton.setAttribute("aria-label", "Copy this line");
$("rows").addEventListener("mouseover", (event) => {
  const row = event.target.closest(".r");
  if (!row || row.classList.contains("ld")) return;
  const gutter = row.querySelector(".n");
  if (gutter && copyButton.parentElement !== gutter) gutter.append(copyButton);
});
copyButton.addEventListener("click", (event) => {
  event.preventDefault();
  event.stopPropagation();
  const row = copyButton.closest(".r");
  if (row) copyLines([Number(row.dataset.s), Number(row.dataset.s)], copyButton);
});

async function copyLines(range, feedbackTarget) {
  const [from, to] = range;
  if (to - from > 100_000) return flash("too many lines to copy; use Download");
  for (let seq = from; seq <= to; seq += 0) {
    if (store.has(seq)) {
      seq++;
      continue;
    }
    const page = await fetchLines(seq - 1, Math.min(10_000, to - seq + 1));
    if (!page.lines.length) break;
    seq = page.lines[page.lines.length - 1][0] + 1;
  }
  const out = [];
  for (let seq = from; seq <= to; seq++) {
    const line = store.get(seq);
    out.push(line && line.text !== null ? plainText(line.text) : "");
  }
  const ok = await copyText(out.join("\n"));
  flash(ok ? `copied ${out.length === 1 ? "line" : `${out.length} lines`}` : "copy failed");
  if (feedbackTarget) feedbackTarget.classList.add("done");
  setTimeout(() => feedbackTarget && feedbackTarget.classList.remove("done"), 800);
}

let flashTimer = 0;
function flash(text) {
  const note = $("flash");
  note.textContent = text;
  note.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    note.hidden = true;
  }, 1500);
}

$("copy-sel").addEventListener("click", () => view.selection && copyLines(view.selection));
$("copy-link").addEventListener("click", async () => {
  const ok = await copyText(location.href);
  flash(ok ? "copied link" : "copy failed");
});
$("clear-sel").addEventListener("click", () => select(null));

window.addEventListener("hashchange", () => {
  const range = parseRange(location.hash);
  select(range, { reveal: true, updateUrl: false });
});

// ---- search ------------------------------------------------------------------------------------

const search = { query: "", matches: [], index: -1, truncated: false, atLast: 0, timer: 0, seq: 0 };

async function runSearch(query, { keepPlace = false } = {}) {
  const ticket = ++search.seq;
  if (!query) {
    Object.assign(search, { query: "", matches: [], index: -1, truncated: false });
    view.setSearch("", [], 0);
    showSearchCount();
    return;
  }
  $("search-count").textContent = "…";
  let result;
  try {
    result = await getJson(`${api}/search?q=${encodeURIComponent(query)}&limit=100000`);
  } catch (error) {
    $("search-count").textContent = "error";
    return;
  }
  if (ticket !== search.seq) return; // a newer search started meanwhile
  const previous = search.matches[search.index];
  search.query = query;
  search.matches = result.matches;
  search.truncated = result.truncated;
  search.atLast = store.last;
  if (keepPlace && previous) search.index = search.matches.indexOf(previous);
  else {
    // Start at the first match from the top of the screen on.
    const from = view.firstVisible() || 1;
    const at = search.matches.findIndex((seq) => seq >= from);
    search.index = search.matches.length ? (at >= 0 ? at : 0) : -1;
  }
  showMatch(!keepPlace);
}

function showMatch(reveal = true) {
  const current = search.matches[search.index] ?? 0;
  view.setSearch(search.query, search.matches, current);
  showSearchCount();
  if (current && reveal && !view.isVisible(current)) view.reveal(current, 0.4);
}

function showSearchCount() {
  const count = $("search-count");
  if (!search.query) count.textContent = "";
  else if (!search.matches.length) count.textContent = "no matches";
  else {
    const total = `${search.matches.length.toLocaleString()}${search.truncated ? "+" : ""}`;
    count.textContent = `${search.index + 1} / ${total}`;
  }
}

async function nextMatch(step) {
  const query = $("search").value;
  if (query !== search.query || (!ended && store.last !== search.atLast)) {
    await runSearch(query, { keepPlace: query === search.query });
    if (query !== search.query || step === 0) return;
  }
  if (!search.matches.length) return;
  const n = search.matches.length;
  search.index = (((search.index + step) % n) + n) % n;
  showMatch();
}

$("search").addEventListener("input", () => {
  clearTimeout(search.timer);
  search.timer = setTimeout(() => runSearch($("search").value), 250);
});
$("search").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    clearTimeout(search.timer);
    nextMatch(event.shiftKey ? -1 : search.query === $("search").value ? 1 : 0);
  } else if (event.key === "Escape") {
    event.preventDefault();
    $("search").value = "";
    runSearch("");
    $("log").focus();
  }
});
$("search-form").addEventListener("submit", (event) => event.preventDefault());
$("next").addEventListener("click", () => nextMatch(1));
$("prev").addEventListener("click", () => nextMatch(-1));

// ---- toolbar and keyboard ----------------------------------------------------------------------

function toggle(button, on) {
  button.setAttribute("aria-pressed", String(on));
  return on;
}

function setWrap(on) {
  view.setWrap(toggle($("wrap"), on));
  localStorage.setItem("logstream.wrap", on ? "1" : "0");
}

function setTimes(on) {
  view.setTimes(toggle($("times"), on));
  localStorage.setItem("logstream.times", on ? "1" : "0");
}

$("wrap").addEventListener("click", () => setWrap(!view.wrap));
$("times").addEventListener("click", () => setTimes(!view.times));
$("follow").addEventListener("click", jumpToEnd);
$("follow-toggle").addEventListener("click", () => (view.following ? view.setFollow(false) : jumpToEnd()));
$("fold-all").addEventListener("click", () => view.setAllGroups(true));
$("unfold-all").addEventListener("click", () => view.setAllGroups(false));
$("download").href = `${api}/log?download=1`;
$("cancel").addEventListener("click", cancelJob);
$("earlier").querySelector("button").addEventListener("click", () => view.shiftWindow(-1));
$("later").querySelector("button").addEventListener("click", () => view.shiftWindow(1));
$("help-button").addEventListener("click", () => $("help").showModal());

/** The group around line `seq` (innermost), or null. */
function groupAround(seq) {
  let found = null;
  for (const g of store.groups()) {
    if (g.start > seq) break;
    if (seq <= (g.end ?? store.last)) found = g;
  }
  return found;
}

function moveSelection(step) {
  const current = view.selection ? view.selection[0] : view.firstVisible() - step;
  let seq = Math.max(1, Math.min(store.last, current + step));
  while (view.isHidden(seq) && seq > 1 && seq < store.last) seq += step;
  selectionAnchor = seq;
  select([seq, seq]);
  if (!view.isVisible(seq)) view.reveal(seq, step > 0 ? 0.7 : 0.2);
}

function jumpGroup(step) {
  const groups = store.groups().filter((g) => !view.isHidden(g.start));
  if (!groups.length) return;
  const from = view.selection ? view.selection[0] : view.firstVisible();
  const next =
    step > 0 ? groups.find((g) => g.start > from) : [...groups].reverse().find((g) => g.start < from);
  if (!next) return;
  selectionAnchor = next.start;
  select([next.start, next.start]);
  if (!view.isVisible(next.start)) view.reveal(next.start, 0.2);
}

// ---- problems ----------------------------------------------------------------------------------

/** Show line `seq`: select it and bring it into view (unfolding the groups that hide it). */
function showLine(seq) {
  selectionAnchor = seq;
  select([seq, seq]);
  view.reveal(seq, 0.3);
}

const problems = new ProblemsPanel(
  {
    panel: $("problems"), list: $("problem-list"), summary: $("problems-summary"),
    button: $("problems-button"), close: $("problems-close"),
  },
  showLine,
);

function stepError(step) {
  problems.setOpen(true);
  const from = view.selection ? view.selection[0] : step > 0 ? 0 : Infinity;
  if (problems.stepError(from, step) === null) flash("no errors");
}

const KEYS = {
  "/": () => $("search").focus(),
  e: () => stepError(1),
  E: () => stepError(-1),
  n: () => nextMatch(1),
  N: () => nextMatch(-1),
  j: () => moveSelection(1),
  k: () => moveSelection(-1),
  g: () => view.reveal(1, 0),
  Home: () => view.reveal(1, 0),
  G: jumpToEnd,
  End: jumpToEnd,
  f: () => (view.following ? view.setFollow(false) : jumpToEnd()),
  w: () => setWrap(!view.wrap),
  t: () => setTimes(!view.times),
  o: () => {
    const seq = view.selection ? view.selection[0] : view.firstVisible();
    const header = store.groups().find((g) => g.start === seq) ?? groupAround(seq);
    if (header) view.toggleGroup(header.start);
  },
  "[": () => jumpGroup(-1),
  "]": () => jumpGroup(1),
  z: () => view.setAllGroups(true),
  Z: () => view.setAllGroups(false),
  c: () => view.selection && copyLines(view.selection),
  d: () => $("download").click(),
  "?": () => $("help").showModal(),
  Escape: () => select(null),
};

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
  if ($("help").open) return;
  const action = KEYS[event.key];
  if (!action) return;
  event.preventDefault();
  action();
});

// ---- start -------------------------------------------------------------------------------------

function restorePreferences() {
  const narrow = matchMedia("(max-width: 600px)").matches;
  const wrap = localStorage.getItem("logstream.wrap");
  if (wrap === "1" || (wrap === null && narrow)) setWrap(true);
  if (localStorage.getItem("logstream.times") === "1") setTimes(true);
}

async function start() {
  restorePreferences();
  const range = parseRange(location.hash);
  try {
    showJob(await getJson(api));
  } catch (error) {
    setConnection("error", error.status === 404 ? "job not found" : "cannot load job");
    $("name").textContent = jobId;
    return;
  }
  store.last = Math.max(store.last, job.lines || 0);
  const loadingProblems = problems.load(api).catch(() => {});
  // A failed job opens at its first error, with the problems panel open.
  const atError = !range && job.status === "failed" && job.problems?.error > 0;
  if (range) {
    view.following = false;
    select(range, { reveal: true, updateUrl: false });
  } else if (atError) {
    view.following = false;
    problems.setOpen(true);
    loadingProblems.then(() => {
      const first = problems.firstError();
      if (first !== null) problems.jump(first);
    });
  } else {
    view.setFollow(true);
  }
  if (job.status === "running") {
    askToNotifyOnce();
    // At a permalink only new lines are streamed; the lines around it come from /lines.
    connect(range ? "tail=0" : `tail=${TAIL_LINES}`);
  } else {
    finish(job);
  }
  view.schedule();
  $("log").focus({ preventScroll: true });
  setInterval(() => {
    if (!ended) {
      showMeta();
      view.tick();
    }
  }, 1000);
}

view.onRendered = () => {
  // Room for the number, its padding and, left of it, the copy button: never over the number.
  $("log").style.setProperty("--nw", `${String(store.last || 1).length + 4}ch`);
};

start();

// For tests and debugging: the page's state, read-only by convention.
window.logstream = { store, view, search, problems };
