// common.js — small helpers both pages share.

/**
 * With `?token=` in the page URL the server has just set its cookie; take the token out of the
 * address bar (and so out of history, bookmarks and screenshots) without reloading.
 */
export function hideToken() {
  const url = new URL(location.href);
  if (!url.searchParams.has("token")) return;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
}

/** Create an element with a class and text (never HTML). */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** JSON from the API; throws an Error carrying the server's `{"error": ...}` message. */
export async function getJson(url, options) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/** Milliseconds since the epoch of an ISO 8601 time, or null. */
export function parseTime(iso) {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/** "3m 07s" from milliseconds. */
export function duration(ms) {
  if (ms == null || !(ms >= 0)) return "";
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** How long a job ran (or has been running). */
export function jobDuration(job, now = Date.now()) {
  const start = parseTime(job.started_at);
  if (start == null) return "";
  const end = parseTime(job.finished_at) ?? (job.status === "running" ? now : null);
  return end == null ? "" : duration(end - start);
}

/** "5 min ago"-style text for a past time. */
export function ago(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t == null) return "";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t).toLocaleDateString();
}

/** The command as one line of shell-ish text. */
export function commandText(command) {
  if (typeof command === "string") return command;
  if (!Array.isArray(command)) return "";
  return command.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : JSON.stringify(arg))).join(" ");
}

/** Copy text to the clipboard; falls back to a selection copy where the API is unavailable. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // fall through
    }
  }
  const area = el("textarea", "offscreen");
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/** Retry delays for reconnecting: 1 s doubling to 30 s, with jitter so clients spread out. */
export function backoff(attempt) {
  const base = Math.min(30_000, 1000 * 2 ** Math.min(attempt, 5));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/** A status word for display and a CSS class for its colour. */
export function statusText(job) {
  if (job.status === "running") return "running";
  if (job.status === "failed" && job.exit_code != null) return `failed (exit ${job.exit_code})`;
  return job.status;
}

/**
 * Who ran a job (a remote runner's `meta`: host, repository, branch, commit, CI run) as a list
 * of nodes: text, and links only to http(s) URLs (the server checks them too).
 */
export function metaNodes(meta) {
  if (!meta) return [];
  const link = (text, url) => {
    if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return el("span", null, text);
    const a = el("a", null, text);
    a.href = url;
    a.rel = "noopener noreferrer";
    return a;
  };
  const nodes = [];
  if (meta.repository) nodes.push(link(meta.repository, meta.repository_url));
  if (meta.branch) nodes.push(el("span", "branch", meta.branch));
  if (meta.commit) nodes.push(link(String(meta.commit).slice(0, 8), meta.commit_url));
  if (meta.run_url) nodes.push(link(meta.ci_job || `${meta.ci || "CI"} run`, meta.run_url));
  if (meta.host) nodes.push(el("span", "host", `on ${meta.host}`));
  const out = [];
  for (const node of nodes) {
    if (out.length) out.push(document.createTextNode(" · "));
    out.push(node);
  }
  return out;
}
