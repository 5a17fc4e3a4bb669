// jobs.js — the job list page (/): every job, newest first, kept up to date over ONE event
// stream (/api/events) however many jobs run: browsers allow only six HTTP/1.1 connections per
// origin, so one stream per job would starve the page. With a jobs file (task-runner mode) it
// also offers a Run button per defined job and Cancel on running jobs.

import { ago, backoff, commandText, el, getJson, hideToken, jobDuration, metaNodes, statusText } from "./common.js";

hideToken();

const $ = (id) => document.getElementById(id);
/** @type {Map<string, object>} */
const jobs = new Map();
/** @type {Map<string, HTMLElement>} */
const rows = new Map();
let defined = [];

// ---- rendering ---------------------------------------------------------------------------------

function sortedJobs() {
  // Newest first: by start time, then by ID (IDs begin with a UTC timestamp).
  return [...jobs.values()].sort(
    (a, b) => (b.started_at || "").localeCompare(a.started_at || "") || b.id.localeCompare(a.id),
  );
}

function renderJobs() {
  const list = $("jobs");
  const ordered = sortedJobs();
  for (const [id, row] of rows) {
    if (!jobs.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  let previous = null;
  for (const job of ordered) {
    let row = rows.get(job.id);
    if (!row) {
      row = buildRow(job);
      rows.set(job.id, row);
    }
    fillRow(row, job);
    fillProblems(row, job);
    row.hidden = !matchesFilter(job);
    const wanted = previous ? previous.nextElementSibling : list.firstElementChild;
    if (wanted !== row) (previous ? previous.after(row) : list.prepend(row));
    previous = row;
  }
  $("no-jobs").hidden = ordered.length > 0;
  $("jobs-head").hidden = ordered.length === 0;
}

function buildRow(job) {
  const row = el("li", "job");
  row.dataset.id = job.id;
  const link = el("a", "job-name");
  link.href = job.url || `/jobs/${encodeURIComponent(job.id)}`;
  row.append(
    el("span", "status"),
    el("span", "problem-counts"),
    link,
    el("code", "command"),
    el("span", "started"),
    el("span", "duration"),
    el("span", "exit"),
    el("span", "actions"),
    el("span", "ci"),
  );
  return row;
}

function fillRow(row, job) {
  const status = row.querySelector(".status");
  status.className = `status st-${job.status}`;
  status.textContent = job.status;
  // The name is the command unless one was given: then the command is not shown twice, and
  // the name's tooltip has all of it (a name is cut at 200 characters).
  const text = commandText(job.command);
  const once = nameIsTheCommand(job);
  const name = row.querySelector(".job-name");
  name.textContent = job.name || job.id;
  name.title = `${once ? text : job.name || job.id}\n${job.id}`;
  row.classList.toggle("named-by-command", once);
  const command = row.querySelector(".command");
  command.textContent = once ? "" : text;
  command.title = text;
  const started = row.querySelector(".started");
  started.textContent = ago(job.started_at);
  started.title = job.started_at ? new Date(job.started_at).toLocaleString() : "";
  row.querySelector(".duration").textContent = jobDuration(job);
  row.querySelector(".exit").textContent = job.exit_code == null ? "" : `exit ${job.exit_code}`;
  row.querySelector(".exit").title = statusText(job);
  const ci = row.querySelector(".ci");
  const shown = JSON.stringify(job.meta || null);
  if (ci.dataset.shown !== shown) {
    ci.dataset.shown = shown;
    ci.replaceChildren(...metaNodes(job.meta));
    ci.hidden = !ci.firstChild;
  }
  const actions = row.querySelector(".actions");
  const cancel = actions.querySelector("button");
  if (job.status === "running" && defined.length && !cancel) {
    const button = el("button", "cancel", "Cancel");
    button.type = "button";
    button.addEventListener("click", () => cancelJob(job.id, button));
    actions.append(button);
  } else if (job.status !== "running" && cancel) {
    cancel.remove();
  }
}

/** Whether the job's name is its command line (the default for `logstream run`, the API). */
function nameIsTheCommand(job) {
  const argv = Array.isArray(job.command) ? job.command : [String(job.command ?? "")];
  // As Python's shlex.join (logstream run) and " ".join (the Python API) write it, cut at 200.
  const quote = (arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`);
  const forms = [argv.map(quote).join(" "), argv.join(" ")].map((form) => form.slice(0, 200));
  if (argv.length === 3 && argv[0] === "/bin/sh" && argv[1] === "-c") forms.push(argv[2].slice(0, 200));
  return forms.includes(job.name);
}

// ---- problem counts and the filter -------------------------------------------------------------

/** The job's error and warning counts, as small badges after its status. */
function fillProblems(row, job) {
  let badges = row.querySelector(".problem-counts");
  if (!badges) {
    badges = el("span", "problem-counts");
    row.querySelector(".status").after(badges);
  }
  const counts = job.problems ?? {};
  const shown = [];
  for (const [severity, icon] of [["error", "✖"], ["warning", "⚠"]]) {
    const n = counts[severity] ?? 0;
    if (n) shown.push([severity, icon, n]);
  }
  const key = JSON.stringify(shown);
  if (badges.dataset.key === key) return;
  badges.dataset.key = key;
  badges.replaceChildren(
    ...shown.map(([severity, icon, n]) => {
      const badge = el("span", `badge an-${severity}`, `${icon} ${n}`);
      badge.title = `${n} ${severity}${n === 1 ? "" : "s"}`;
      return badge;
    }),
  );
}

const filter = { text: "", status: "" };

function matchesFilter(job) {
  if (filter.status && job.status !== filter.status) return false;
  if (!filter.text) return true;
  const haystack = `${job.name ?? ""} ${commandText(job.command)} ${job.id}`.toLowerCase();
  return haystack.includes(filter.text);
}

function setUpFilter() {
  const apply = () => {
    filter.text = $("filter-text").value.trim().toLowerCase();
    filter.status = $("filter-status").value;
    renderJobs();
  };
  $("filter-text").addEventListener("input", apply);
  $("filter-status").addEventListener("change", apply);
  $("job-filter").addEventListener("submit", (event) => event.preventDefault());
}

function renderDefined() {
  $("defined").hidden = defined.length === 0;
  const list = $("defined-list");
  list.replaceChildren();
  for (const spec of defined) {
    const item = el("li", "defined-job");
    const running = spec.running ?? 0;
    const limit = spec.max_running == null ? "" : ` / ${spec.max_running}`;
    const button = el("button", "run", "Run");
    button.type = "button";
    button.title = `Run ${spec.name}`;
    button.disabled = spec.max_running != null && running >= spec.max_running;
    button.addEventListener("click", () => runJob(spec.name, button));
    item.append(
      button,
      el("span", "job-name", spec.name),
      el("code", "command", commandText(spec.command)),
      el("span", "running", running ? `${running}${limit} running` : ""),
    );
    list.append(item);
  }
}

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", isError);
  message.hidden = !text;
}

// ---- actions (task-runner mode) ----------------------------------------------------------------

async function runJob(name, button) {
  button.disabled = true;
  try {
    const job = await getJson("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    jobs.set(job.id, job);
    renderJobs();
    say(`Started ${name}.`);
    rows.get(job.id)?.classList.add("new");
  } catch (error) {
    say(`Could not start ${name}: ${error.message}`, true);
  } finally {
    button.disabled = false;
    refreshDefined();
  }
}

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    await getJson(`/api/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    say("Cancelling…");
  } catch (error) {
    say(`Could not cancel: ${error.message}`, true);
    button.disabled = false;
  }
}

let refreshTimer = 0;
/** Refetch the defined jobs' running counts, at most every half second. */
function refreshDefined() {
  if (!defined.length || refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = 0;
    try {
      defined = (await getJson("/api/jobs")).defined ?? [];
      renderDefined();
    } catch {
      // the stream's reconnect will try again
    }
  }, 500);
}

// ---- the job-list stream -----------------------------------------------------------------------

let attempt = 0;

function connect() {
  const source = new EventSource("/api/events");
  source.onopen = () => {
    attempt = 0;
    $("conn").dataset.state = "live";
    $("conn").textContent = "live";
  };
  source.addEventListener("jobs", (event) => {
    jobs.clear();
    for (const job of JSON.parse(event.data).jobs) jobs.set(job.id, job);
    renderJobs();
    $("jobs").dataset.snapshot = "received";
  });
  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    const before = jobs.get(job.id);
    jobs.set(job.id, job);
    renderJobs();
    if (!before || before.status !== job.status) refreshDefined();
  });
  source.onerror = () => {
    $("conn").dataset.state = "reconnecting";
    $("conn").textContent = "reconnecting…";
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, backoff(attempt++));
    }
  };
}

async function start() {
  setUpFilter();
  try {
    const listing = await getJson("/api/jobs");
    defined = listing.defined ?? [];
    for (const job of listing.jobs) jobs.set(job.id, job);
    renderDefined();
    renderJobs();
  } catch (error) {
    say(`Could not load jobs: ${error.message}`, true);
  }
  connect();
  // Durations of running jobs and "n min ago" move on by themselves.
  setInterval(() => {
    for (const job of jobs.values()) {
      const row = rows.get(job.id);
      if (row) {
        row.querySelector(".duration").textContent = jobDuration(job);
        row.querySelector(".started").textContent = ago(job.started_at);
      }
    }
  }, 1000);
}

start();
