// problems.js — the problems panel of the log page, and workflow commands shown as annotations.
//
// The server finds problems as lines are stored (docs/problems.md). The page loads the list once
// (/api/jobs/<ID>/problems) and adds each `event: problem` of the live stream; both may name the
// same problem, so entries are keyed by line, severity and title. Errors come first, then
// warnings, then notices, each in line order. Everything is rendered as text, never as HTML.

import { el, getJson } from "./common.js";

const RANK = { error: 0, warning: 1, notice: 2 };
const ICON = { error: "✖", warning: "⚠", notice: "ℹ" };
const ESCAPES = /\x1b\[[0-9;]*[A-Za-z]/g;
const COMMAND = /^::(error|warning|notice)(?:[ \t]+([^\n]*?))?::(.*)$/s;

function unescapeData(text, property) {
  let out = text.replace(/%0D/g, "\r").replace(/%0A/g, "\n");
  if (property) out = out.replace(/%3A/g, ":").replace(/%2C/g, ",");
  return out.replace(/%25/g, "%");
}

/**
 * The annotation a workflow command line asks for (`::error file=F,line=L,title=T::message`),
 * or null for any other line.
 * @returns {{severity: string, title: string, message: string, file: string|null,
 *   line: string|null, col: string|null} | null}
 */
export function parseAnnotation(text) {
  // Cheap rejection first: this runs for every rendered line.
  const c = text.charCodeAt(0);
  if (c !== 58 && c !== 32 && c !== 9 && c !== 27) return null;
  const bare = (text.indexOf("\x1b") >= 0 ? text.replace(ESCAPES, "") : text).replace(/^[ \t]+/, "");
  const m = COMMAND.exec(bare);
  if (!m) return null;
  const props = {};
  for (const item of (m[2] ?? "").split(",")) {
    const at = item.indexOf("=");
    if (at > 0) props[item.slice(0, at).trim()] = unescapeData(item.slice(at + 1), true);
  }
  const message = unescapeData(m[3], false);
  return {
    severity: m[1],
    title: props.title ?? "",
    message,
    file: props.file ?? null,
    line: props.line ?? null,
    col: props.col ?? null,
  };
}

/** Fill `parent` (a row's text cell) with an annotation: icon, title, message, `file:line`. */
export function renderAnnotation(parent, annotation) {
  const where = annotation.file
    ? `${annotation.file}${annotation.line ? `:${annotation.line}` : ""}${annotation.col ? `:${annotation.col}` : ""}`
    : "";
  parent.append(el("span", `an-icon an-${annotation.severity}`, ICON[annotation.severity]));
  if (annotation.title) parent.append(el("span", "an-title", annotation.title));
  parent.append(el("span", "an-msg", annotation.message.replace(/[\r\n]+/g, " ⏎ ")));
  if (where) parent.append(el("span", "an-where", where));
}

/** Entries drawn above and below the visible ones. */
const OVERSCAN = 30;

export class ProblemsPanel {
  // Built to stay responsive with tens of thousands of problems, arriving live or all at
  // once: a new problem goes to its place in `sorted` (a binary search), counts are kept as
  // they change, and only the entries in view (plus some) are in the DOM, drawn at most once a
  // frame. The list element is as tall as all entries would be, so the scroll bar is true.

  /**
   * @param {{panel: HTMLElement, list: HTMLElement, summary: HTMLElement, button: HTMLElement,
   *   close: HTMLElement}} parts  `panel` scrolls; `list` holds the entries
   * @param {(line: number) => void} onJump  shows a line (selects and reveals it)
   */
  constructor(parts, onJump) {
    this.parts = parts;
    this.onJump = onJump;
    /** @type {Set<string>} */
    this.keys = new Set();
    /** Errors, then warnings, then notices, each in line order. */
    this.sorted = [];
    this.counts = {};
    this.current = null;
    this.rowHeight = 0; // measured from the first entry drawn
    this.drawPending = false;
    this.drawn = { first: 0, last: 0 }; // the entries in the DOM: sorted[first..last)
    this.stale = true; // whether they may differ from sorted[first..last)
    parts.button.addEventListener("click", () => this.toggle());
    parts.close.addEventListener("click", () => this.setOpen(false));
    parts.list.addEventListener("click", (event) => {
      const item = event.target.closest("li[data-line]");
      if (!item) return;
      event.preventDefault();
      this.jump(Number(item.dataset.line));
    });
    parts.panel.addEventListener("scroll", () => this.drawSoon(), { passive: true });
    this.draw();
  }

  async load(api) {
    const { problems } = await getJson(`${api}/problems`);
    const fresh = problems.filter((problem) => this.remember(problem));
    if (!fresh.length) return;
    // (concat, not push(...fresh): spreading 150,000 arguments overflows the stack)
    this.sorted = this.sorted.concat(fresh).sort(byRank);
    this.stale = true;
    this.draw();
  }

  /** A problem from the live stream. */
  add(problem) {
    if (!this.remember(problem)) return;
    const index = this.placeOf(problem);
    this.sorted.splice(index, 0, problem);
    if (index < this.drawn.last) this.stale = true; // (after the drawn ones: nothing to redraw)
    this.drawSoon();
  }

  /** Whether `problem` is new (the list and the stream may both name it); counts it. */
  remember(problem) {
    const key = `${problem.line}|${problem.severity}|${problem.title}`;
    if (this.keys.has(key)) return false;
    this.keys.add(key);
    this.counts[problem.severity] = (this.counts[problem.severity] ?? 0) + 1;
    return true;
  }

  /** Where `problem` goes in `sorted`: after every entry that sorts before it or with it. */
  placeOf(problem) {
    let low = 0;
    let high = this.sorted.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (byRank(this.sorted[middle], problem) <= 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  get open() {
    return !this.parts.panel.hidden;
  }

  setOpen(on) {
    this.parts.panel.hidden = !on;
    this.parts.button.setAttribute("aria-pressed", String(on));
    this.stale = true;
    if (on) this.draw();
  }

  toggle() {
    this.setOpen(!this.open);
  }

  count(severity) {
    return this.counts[severity] ?? 0;
  }

  /** Error lines in order (for `e` / `E`): the first entries of `sorted`. */
  errorLines() {
    return this.sorted.slice(0, this.count("error")).map((p) => p.line);
  }

  /** The first error's line, or null. */
  firstError() {
    return this.count("error") ? this.sorted[0].line : null;
  }

  /** Step from line `from` to the next (`step` 1) or previous (-1) error, wrapping around. */
  stepError(from, step) {
    const lines = this.errorLines();
    if (!lines.length) return null;
    const next =
      step > 0 ? lines.find((line) => line > from) ?? lines[0]
        : lines.findLast((line) => line < from) ?? lines[lines.length - 1];
    this.jump(next);
    return next;
  }

  /** Mark the entries of line `line`, bring the first into the panel's view, show the line. */
  jump(line) {
    this.current = line;
    const index = this.sorted.findIndex((problem) => problem.line === line);
    const { panel, list } = this.parts;
    if (index >= 0 && this.open && this.rowHeight) {
      const top = list.offsetTop + index * this.rowHeight;
      const head = list.offsetTop;
      if (top < panel.scrollTop + head || top + this.rowHeight > panel.scrollTop + panel.clientHeight) {
        panel.scrollTop = Math.max(0, top - head - (panel.clientHeight - head) / 3);
      }
    }
    this.stale = true;
    this.draw();
    this.onJump(line);
  }

  drawSoon() {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      this.draw();
    });
  }

  /** The counts, and while the panel is open the entries in view (plus `OVERSCAN` either
   * side), redrawn only if they changed. */
  draw() {
    this.summarize();
    const { panel, list } = this.parts;
    const total = this.sorted.length;
    const row = this.rowHeight || 24;
    list.style.height = `${total * row}px`;
    if (!this.open) return;
    const seen = Math.max(0, panel.scrollTop - list.offsetTop);
    const first = Math.max(0, Math.floor(seen / row) - OVERSCAN);
    const shown = Math.ceil(Math.max(panel.clientHeight, 600) / row) + 2 * OVERSCAN;
    const last = Math.min(total, first + shown);
    if (!this.stale && first === this.drawn.first && last === this.drawn.last) return;
    this.drawn = { first, last };
    this.stale = false;
    const entries = document.createDocumentFragment();
    for (let n = first; n < last; n++) entries.append(this.item(this.sorted[n]));
    list.replaceChildren(entries);
    if (!this.rowHeight && list.firstElementChild && list.firstElementChild.offsetHeight) {
      this.rowHeight = list.firstElementChild.offsetHeight;
      this.stale = true;
      return this.draw(); // again, with the true height
    }
    list.style.paddingTop = `${first * row}px`;
  }

  /** The counts in the panel's head and on the toolbar button. */
  summarize() {
    const errors = this.count("error");
    const warnings = this.count("warning");
    const { summary, button } = this.parts;
    const said = [];
    if (errors) said.push(`${errors} ${errors === 1 ? "error" : "errors"}`);
    if (warnings) said.push(`${warnings} ${warnings === 1 ? "warning" : "warnings"}`);
    const notices = this.sorted.length - errors - warnings;
    if (notices) said.push(`${notices} ${notices === 1 ? "notice" : "notices"}`);
    summary.textContent = said.length ? said.join(", ") : "No problems found.";
    button.textContent = errors || warnings ? `Problems ${errors + warnings}` : "Problems";
    button.classList.toggle("has-errors", errors > 0);
  }

  item(problem) {
    const item = el("li", `problem p-${problem.severity}`);
    item.dataset.line = String(problem.line);
    item.title = `Line ${problem.line}`;
    if (problem.line === this.current) item.classList.add("cur");
    const where = problem.file
      ? `${problem.file}${problem.line_in_file ? `:${problem.line_in_file}` : ""}`
      : "";
    const link = el("a", "p-line", `L${problem.line}`);
    link.href = `#L${problem.line}`;
    item.append(
      el("span", `an-icon an-${problem.severity}`, ICON[problem.severity] ?? "•"),
      el("span", "p-title", problem.title),
      el("span", "p-where", where),
      link,
    );
    return item;
  }
}

/** Errors first, then warnings, then notices (then anything else), each in line order. */
function byRank(a, b) {
  return (RANK[a.severity] ?? 3) - (RANK[b.severity] ?? 3) || a.line - b.line;
}
