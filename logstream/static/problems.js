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

export class ProblemsPanel {
  /**
   * @param {{panel: HTMLElement, list: HTMLElement, summary: HTMLElement, button: HTMLElement,
   *   close: HTMLElement}} parts
   * @param {(line: number) => void} onJump  shows a line (selects and reveals it)
   */
  constructor(parts, onJump) {
    this.parts = parts;
    this.onJump = onJump;
    /** @type {Map<string, object>} */
    this.byKey = new Map();
    this.sorted = [];
    this.current = null;
    parts.button.addEventListener("click", () => this.toggle());
    parts.close.addEventListener("click", () => this.setOpen(false));
    parts.list.addEventListener("click", (event) => {
      const item = event.target.closest("li[data-line]");
      if (!item) return;
      event.preventDefault();
      this.jump(Number(item.dataset.line));
    });
    this.render();
  }

  async load(api) {
    const { problems } = await getJson(`${api}/problems`);
    for (const problem of problems) this.put(problem);
    this.render();
  }

  /** A problem from the live stream. */
  add(problem) {
    if (this.put(problem)) this.render();
  }

  put(problem) {
    const key = `${problem.line}|${problem.severity}|${problem.title}`;
    if (this.byKey.has(key)) return false;
    this.byKey.set(key, problem);
    return true;
  }

  get open() {
    return !this.parts.panel.hidden;
  }

  setOpen(on) {
    this.parts.panel.hidden = !on;
    this.parts.button.setAttribute("aria-pressed", String(on));
  }

  toggle() {
    this.setOpen(!this.open);
  }

  count(severity) {
    return this.sorted.filter((p) => p.severity === severity).length;
  }

  /** Error lines in order (for `e` / `E`). */
  errorLines() {
    return this.sorted.filter((p) => p.severity === "error").map((p) => p.line);
  }

  /** The first error's line, or null. */
  firstError() {
    return this.errorLines()[0] ?? null;
  }

  /** Step from line `from` to the next (`step` 1) or previous (-1) error, wrapping around. */
  stepError(from, step) {
    const lines = [...new Set(this.errorLines())];
    if (!lines.length) return null;
    const next =
      step > 0 ? lines.find((line) => line > from) ?? lines[0]
        : [...lines].reverse().find((line) => line < from) ?? lines[lines.length - 1];
    this.jump(next);
    return next;
  }

  jump(line) {
    this.current = line;
    for (const item of this.parts.list.children) {
      item.classList.toggle("cur", Number(item.dataset.line) === line);
    }
    this.onJump(line);
  }

  render() {
    this.sorted = [...this.byKey.values()].sort(
      (a, b) => (RANK[a.severity] ?? 3) - (RANK[b.severity] ?? 3) || a.line - b.line,
    );
    const errors = this.count("error");
    const warnings = this.count("warning");
    const { list, summary, button } = this.parts;
    const said = [];
    if (errors) said.push(`${errors} ${errors === 1 ? "error" : "errors"}`);
    if (warnings) said.push(`${warnings} ${warnings === 1 ? "warning" : "warnings"}`);
    const notices = this.sorted.length - errors - warnings;
    if (notices) said.push(`${notices} ${notices === 1 ? "notice" : "notices"}`);
    summary.textContent = said.length ? said.join(", ") : "No problems found.";
    button.textContent = errors || warnings ? `Problems ${errors + warnings}` : "Problems";
    button.classList.toggle("has-errors", errors > 0);
    list.replaceChildren();
    for (const problem of this.sorted) {
      const item = el("li", `problem p-${problem.severity}`);
      item.dataset.line = String(problem.line);
      item.title = `Line ${problem.line}`;
      if (problem.line === this.current) item.classList.add("cur");
      const where = problem.file
        ? `${problem.file}${problem.line_in_file ? `:${problem.line_in_file}` : ""}`
        : "";
      item.append(
        el("span", `an-icon an-${problem.severity}`, ICON[problem.severity] ?? "•"),
        el("span", "p-title", problem.title),
        el("span", "p-where", where),
        el("a", "p-line", `L${problem.line}`),
      );
      item.querySelector(".p-line").href = `#L${problem.line}`;
      list.append(item);
    }
  }
}
