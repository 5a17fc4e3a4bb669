// model.js — what the log page knows about one job's log. Pure: no DOM, no network.
//
// Theory of operation
// -------------------
// Lines are numbered 1..last by the server (contract §3). The page never holds a whole huge log:
// the `LineStore` is sparse, a map of blocks of BLOCK consecutive lines (block b holds lines
// b*BLOCK+1 .. b*BLOCK+BLOCK). Lines arrive from the live stream (newest) and from `/lines`
// pages (on demand, wherever the user looks); both write into the same store, keyed by sequence
// number, so a line received twice is stored once and shown once.
//
// Time marks come from `event: time` and the `times` of `/lines`: a mark (seq, ms) says line
// seq and the lines after it were read at or after ms. The time of a line is the newest mark at
// or before it: one mark a second costs the stream almost nothing and gives per-line and
// per-group elapsed times to a second.
//
// Group markers (GitHub `::group::`, GitLab `section_start:`, Buildkite `--- `/`+++ `) are
// recognised as lines are stored; `groups()` pairs them into sections whenever markers changed.
// A section whose end is not known yet (not loaded, or the job still runs) is open: it extends to
// the last line. Each section also says whether its author wants it folded at first (GitLab's
// `[collapsed=true]`, Buildkite's `---` and `~~~`); the view decides when to honour that.

import { renderLine } from "./ansi.js";

export const BLOCK = 100;

export const blockOf = (seq) => Math.floor((seq - 1) / BLOCK);
export const blockStart = (b) => b * BLOCK + 1;

/** A line that the server reported lost (a gap) is stored as LOST. */
export const LOST = null;

export class LineStore {
  constructor() {
    /** @type {Map<number, {texts: Array<string|null|undefined>, err: Uint8Array, count: number, version: number}>} */
    this.blocks = new Map();
    this.last = 0;
    this.markSeqs = [];
    this.markTimes = [];
    /** @type {Map<number, object>} marker line seq -> marker */
    this.markers = new Map();
    this.markersVersion = 0;
    this._groups = null;
    this._groupsVersion = -1;
  }

  /** Store line `seq`; `text` LOST marks a line the server no longer has. Returns true if new. */
  put(seq, stream, text) {
    const b = blockOf(seq);
    let block = this.blocks.get(b);
    if (!block) {
      block = { texts: new Array(BLOCK), err: new Uint8Array(BLOCK), count: 0, version: 0 };
      this.blocks.set(b, block);
    }
    const i = seq - 1 - b * BLOCK;
    if (block.texts[i] !== undefined) return false;
    block.texts[i] = text;
    block.err[i] = stream === "e" ? 1 : 0;
    block.count++;
    block.version++;
    if (seq > this.last) this.last = seq;
    if (text) {
      const marker = parseMarker(text);
      if (marker) {
        marker.seq = seq;
        this.markers.set(seq, marker);
        this.markersVersion++;
      }
    }
    return true;
  }

  /** @returns {{text: string|null, err: boolean} | undefined} */
  get(seq) {
    const block = this.blocks.get(blockOf(seq));
    if (!block) return undefined;
    const i = seq - 1 - blockOf(seq) * BLOCK;
    const text = block.texts[i];
    return text === undefined ? undefined : { text, err: block.err[i] === 1 };
  }

  has(seq) {
    return this.get(seq) !== undefined;
  }

  /** The number of lines of block `b` that exist so far (the last block may be partial). */
  lineCount(b) {
    return Math.max(0, Math.min(BLOCK, this.last - b * BLOCK));
  }

  /** Whether every existing line of block `b` is stored. */
  complete(b) {
    const block = this.blocks.get(b);
    return (block ? block.count : 0) >= this.lineCount(b);
  }

  /** The first line of block `b` not stored yet, or 0. */
  firstMissing(b) {
    const block = this.blocks.get(b);
    const n = this.lineCount(b);
    for (let i = 0; i < n; i++) if (!block || block.texts[i] === undefined) return b * BLOCK + i + 1;
    return 0;
  }

  version(b) {
    const block = this.blocks.get(b);
    return block ? block.version : 0;
  }

  /** Forget block `b` (memory bound for huge logs); it is fetched again when needed. */
  drop(b) {
    const block = this.blocks.get(b);
    if (!block) return;
    this.blocks.delete(b);
    // Markers of a dropped block stay: group structure does not depend on what is in memory.
  }

  addMark(seq, ms) {
    let lo = 0;
    let hi = this.markSeqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.markSeqs[mid] < seq) lo = mid + 1;
      else hi = mid;
    }
    if (this.markSeqs[lo] === seq) {
      this.markTimes[lo] = Math.min(this.markTimes[lo], ms);
      return;
    }
    this.markSeqs.splice(lo, 0, seq);
    this.markTimes.splice(lo, 0, ms);
  }

  /** Index of the newest mark at or before `seq`, or -1. */
  markIndex(seq) {
    let lo = 0;
    let hi = this.markSeqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.markSeqs[mid] <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  /** When line `seq` was read (unix ms, to the mark's precision), or null if unknown. */
  timeAt(seq) {
    const i = this.markIndex(seq);
    return i < 0 ? null : this.markTimes[i];
  }

  /** Whether a time mark starts exactly at `seq`. */
  markAt(seq) {
    const i = this.markIndex(seq);
    return i >= 0 && this.markSeqs[i] === seq;
  }

  /** The sections, sorted by start; recomputed only when markers changed. */
  groups() {
    if (this._groupsVersion !== this.markersVersion) {
      const markers = [...this.markers.values()].sort((a, b) => a.seq - b.seq);
      this._groups = pairGroups(markers);
      this._groupsVersion = this.markersVersion;
    }
    return this._groups;
  }
}

// ---- group markers ---------------------------------------------------------------------------

const ESCAPES = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -/]*[0-~])/g;
const GITLAB_START = /section_start:(\d+):([A-Za-z0-9_.-]+)(\[[^\]\r]*\])?/;
const GITLAB_END = /section_end:(\d+):([A-Za-z0-9_.-]+)/;

/**
 * A group marker in a line's raw text, or null.
 * `collapsed`: the author asked for the section to start folded (GitLab `[collapsed=true]`,
 * Buildkite `---` / `~~~`); `sigil`: a Buildkite header's `---`, `+++` or `~~~`. Buildkite's
 * `^^^ +++` ("expand the group this line is in") is the marker `{kind: "expand", style: "bk"}`.
 * @returns {{kind: "start"|"end"|"expand", style: "gh"|"gl"|"bk", name: string, ts?: number,
 *   seq?: number, collapsed?: boolean, sigil?: string} | null}
 */
/**
 * Lines that start like a Buildkite header but are a tool's output: Go's test results (`---
 * FAIL: TestAdd (0.00s)`, followed by the failure itself, which a folded group would hide) and
 * the file lines of a unified diff (`--- a/x.c`, `+++ b/x.c`, `/dev/null`, `diff -u`'s dates).
 */
const NOT_A_HEADER =
  /^(--- (FAIL|PASS|SKIP): |(---|\+\+\+) ([ab]\/|\/dev\/null(\s|$))|(---|\+\+\+) \S.*\t\d{4}-\d\d-\d\d )/;

export function parseMarker(text) {
  // Cheap rejections first: this runs on every stored line.
  const c = text.charCodeAt(0);
  if (c !== 58 && c !== 45 && c !== 43 && c !== 126 && c !== 94 && text.indexOf("section_") < 0) {
    if (c !== 27) return null;
  }
  const bare = text.indexOf("\x1b") >= 0 ? text.replace(ESCAPES, "") : text;
  if (bare.startsWith("::group::")) {
    return { kind: "start", style: "gh", name: bare.slice(9).trim() };
  }
  if (bare.startsWith("::endgroup::")) return { kind: "end", style: "gh", name: "" };
  let m = GITLAB_START.exec(bare);
  if (m) {
    // The header GitLab shows is what the terminal shows: the text after the \r.
    const shown = renderLine(text).plain.trim();
    const collapsed = /[[,]\s*collapsed=true\s*[,\]]/.test(m[3] ?? "");
    const ts = +m[1] * 1000;
    return { kind: "start", style: "gl", name: shown || m[2], key: m[2], ts, collapsed };
  }
  m = GITLAB_END.exec(bare);
  if (m) return { kind: "end", style: "gl", name: "", key: m[2], ts: +m[1] * 1000 };
  if (/^\^\^\^ \+\+\+\s*$/.test(bare)) return { kind: "expand", style: "bk", name: "" };
  m = /^(---|\+\+\+|~~~) (.*)$/.exec(bare);
  if (m && !NOT_A_HEADER.test(bare)) {
    return { kind: "start", style: "bk", name: m[2].trim(), sigil: m[1], collapsed: m[1] !== "+++" };
  }
  return null;
}

/**
 * Pair markers (sorted by seq) into sections {start, end, name, style, depth, startTs, endTs,
 * collapsed}. `end` is the last line of the section (the end marker for GitHub and GitLab; the
 * line before the next header for Buildkite) or null while open. `collapsed` is whether the section
 * should start folded; Buildkite's rules: `---` and `~~~` fold, `+++` does not, `^^^ +++` unfolds
 * the group it is in, and with no `+++` header at all the last `---` group is left unfolded.
 */
export function pairGroups(markers) {
  const groups = [];
  const stack = [];
  const closeFrom = (index, end) => {
    while (stack.length > index) stack.pop().end = end;
  };
  for (const m of markers) {
    if (m.kind === "start") {
      // Buildkite headers and GitHub groups do not nest: a new one ends the open one.
      const same = stack.findIndex((g) => g.style === m.style && m.style !== "gl");
      if (same >= 0) closeFrom(same, m.seq - 1);
      const group = {
        start: m.seq, end: null, name: m.name, style: m.style, key: m.key,
        depth: stack.length, startTs: m.ts ?? null, endTs: null,
        collapsed: !!m.collapsed, sigil: m.sigil ?? null,
      };
      groups.push(group);
      stack.push(group);
    } else if (m.kind === "expand") {
      const open = stack.findLast((g) => g.style === m.style);
      if (open) open.collapsed = false;
    } else {
      let at = -1;
      for (let k = stack.length - 1; k >= 0; k--) {
        if (stack[k].style === m.style && (m.style !== "gl" || stack[k].key === m.key)) {
          at = k;
          break;
        }
      }
      if (at >= 0) {
        stack[at].endTs = m.ts ?? null;
        closeFrom(at, m.seq);
      }
    }
  }
  const buildkite = groups.filter((g) => g.style === "bk");
  if (!buildkite.some((g) => g.sigil === "+++")) {
    const last = buildkite.findLast((g) => g.sigil === "---");
    if (last) last.collapsed = false;
  }
  return groups;
}

/** Human duration: "<1s", "42s", "3m 07s", "1h 02m". */
export function formatDuration(ms) {
  if (ms == null || !(ms >= 0)) return "";
  const s = Math.floor(ms / 1000);
  if (s < 1) return "<1s";
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** Elapsed clock: "0:42", "12:07", "1:02:03". */
export function formatClock(ms) {
  if (ms == null || !(ms >= 0)) return "";
  const s = Math.floor(ms / 1000);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** Parse a permalink hash (#L12 or #L12-L40) into [from, to], or null. */
export function parseRange(hash) {
  const m = /^#L(\d+)(?:-L?(\d+))?$/.exec(hash || "");
  if (!m) return null;
  const a = +m[1];
  const b = m[2] ? +m[2] : a;
  if (!(a >= 1 && b >= 1)) return null;
  return [Math.min(a, b), Math.max(a, b)];
}

export function formatRange(range) {
  return range[0] === range[1] ? `#L${range[0]}` : `#L${range[0]}-L${range[1]}`;
}
