// view.js — the virtualised log view: only the rows near the viewport are in the DOM.
//
// Theory of operation
// -------------------
// The scroll area stands for a window of up to WINDOW_BLOCKS blocks of BLOCK lines (browsers cap
// an element's height near 17-33 million px, so a multi-million-line log cannot be one scroll
// area; "earlier"/"later" bars move the window). Inside it sit a top spacer, the rendered blocks
// and a bottom spacer. Without wrapping every row is exactly one row high, so the position of any
// line is arithmetic; with wrapping, rendered blocks are measured and the others estimated.
//
// All DOM work happens in `render`, at most once per animation frame however many lines
// arrived (`schedule`). A render keeps what the user looks at in place: it notes an anchor (a line
// and its distance from the top of the viewport) before changing the DOM and scrolls so the line
// is at the same distance afterwards. In follow mode the anchor is the bottom. Blocks whose lines
// are not loaded yet render as placeholder rows and are asked for through `onNeed`.

import { findAll, markRanges, renderLine } from "./ansi.js";
import { el } from "./common.js";
import { parseAnnotation, renderAnnotation } from "./problems.js";
import { BLOCK, blockOf, formatClock, formatDuration } from "./model.js";

export const WINDOW_BLOCKS = 5000;
const PREFETCH_VIEWPORTS = 1;

export class LogView {
  /**
   * @param {{scroller: HTMLElement, rows: HTMLElement, topSpace: HTMLElement,
   *   bottomSpace: HTMLElement, earlier: HTMLElement, later: HTMLElement, empty: HTMLElement}} parts
   * @param {import("./model.js").LineStore} store
   */
  constructor(parts, store) {
    Object.assign(this, parts);
    this.store = store;
    this.winLo = 0;
    this.winHi = -1;
    this.following = true;
    /** A line to bring into view once it can be: {seq, offset} (offset: px from the top). */
    this.pending = null;
    this.rowH = 20;
    this.wrap = false;
    this.times = false;
    this.startedMs = null;
    this.ended = false;
    this.endedMs = null;
    this.collapsed = new Set();
    /** Groups (by start) whose author-given fold state was applied, or that the user overrode. */
    this.decided = new Set();
    this.defaultsKey = "";
    this.selection = null;
    this.search = { query: "", matches: new Set(), current: 0 };
    /** Bumped whenever something every rendered row depends on changes. */
    this.look = 0;
    /** @type {Map<number, {el: HTMLElement, key: string, version: number, upTo: number, rows: Map<number, HTMLElement>, partial: boolean}>} */
    this.rendered = new Map();
    /** Measured heights of blocks when wrapping: block -> {h, version, width, look}. */
    this.heights = new Map();
    this.hidden = [];
    this.frame = 0;
    this.setTop = -1;
    this.onNeed = () => {};
    this.onFollow = () => {};
    this.onRendered = () => {};
    this.scroller.addEventListener("scroll", () => this.userScrolled(), { passive: true });
    new ResizeObserver(() => {
      this.measureRow();
      this.schedule();
    }).observe(this.scroller);
    this.measureRow();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  /** Everything rendered depends on this state; change it through these setters. */
  restyle() {
    this.look++;
    this.schedule();
  }

  setWrap(on) {
    this.keepPlace();
    this.wrap = on;
    this.scroller.classList.toggle("wrap", on);
    this.heights.clear();
    this.measureRow();
    this.restyle();
  }

  setTimes(on) {
    this.keepPlace();
    this.times = on;
    this.scroller.classList.toggle("times", on);
    this.restyle();
  }

  setFollow(on) {
    this.following = on;
    this.pending = null;
    this.onFollow(on);
    this.schedule();
  }

  /** Bring line `seq` into view, `fraction` of the viewport from the top. */
  reveal(seq, fraction = 0.3) {
    const lastB = blockOf(Math.max(1, this.store.last));
    const b = blockOf(seq);
    if (b < this.winLo || b > this.winHi) {
      this.winLo = Math.max(0, b - WINDOW_BLOCKS / 2);
      this.winHi = Math.min(lastB, this.winLo + WINDOW_BLOCKS - 1);
    }
    if (this.following) {
      this.following = false;
      this.onFollow(false);
    }
    this.unfoldAround(seq);
    this.pending = { seq, offset: Math.round(this.scroller.clientHeight * fraction), until: true };
    this.schedule();
  }

  /** Unfold the folded groups that hide line `seq` (a permalink, a search match): show it. */
  unfoldAround(seq) {
    let changed = false;
    for (const g of this.store.groups()) {
      if (g.start >= seq) break;
      if (this.collapsed.has(g.start) && seq <= (g.end ?? this.store.last)) {
        this.collapsed.delete(g.start);
        changed = true;
      }
    }
    if (changed) {
      this.heights.clear();
      this.restyle();
    }
  }

  /**
   * Fold the groups their authors asked to start folded (GitLab `[collapsed=true]`, Buildkite
   * `---`), each once: when it has ended, so the lines of a running group never disappear while
   * they are followed, and never the group the user is reading in (the selection, a pending jump,
   * the top of the view). A group the user folded or unfolded keeps the user's choice.
   */
  applyDefaultFolds() {
    const key = `${this.store.markersVersion}|${this.ended}`;
    if (key === this.defaultsKey) return;
    this.defaultsKey = key;
    let reading = null;
    let changed = false;
    for (const g of this.store.groups()) {
      if (this.decided.has(g.start) || (g.end == null && !this.ended)) continue;
      this.decided.add(g.start);
      if (!g.collapsed) continue;
      if (reading === null) {
        reading = [this.selection?.[0], this.pending?.seq, this.following ? 0 : this.firstVisible()];
      }
      const end = g.end ?? this.store.last;
      if (reading.some((seq) => seq > g.start && seq <= end)) continue;
      this.collapsed.add(g.start);
      changed = true;
    }
    if (changed) {
      this.heights.clear();
      this.look++;
    }
  }

  /** Whether line `seq` is rendered and wholly inside the viewport. */
  isVisible(seq) {
    const row = this.rowElement(seq);
    if (!row) return false;
    const top = this.rowTop(row);
    const sc = this.scroller;
    return top >= sc.scrollTop && top + row.offsetHeight <= sc.scrollTop + sc.clientHeight;
  }

  /** The first line whose row is at least partly visible, or 0. */
  firstVisible() {
    const anchor = this.captureAnchor();
    return anchor ? anchor.seq : 0;
  }

  setSelection(range) {
    this.selection = range;
    this.restyle();
  }

  setSearch(query, matches, current) {
    this.search = { query, matches: new Set(matches), current };
    this.restyle();
  }

  toggleGroup(start) {
    this.decided.add(start);
    const row = this.rowElement(start);
    const offset = row ? this.rowTop(row) - this.scroller.scrollTop : 0;
    if (this.collapsed.has(start)) this.collapsed.delete(start);
    else this.collapsed.add(start);
    if (this.following && !this.collapsed.has(start)) {
      // Unfolding a group while following would yank the view to the bottom: stop following.
      this.following = false;
      this.onFollow(false);
    }
    this.pending = { seq: start, offset, until: false };
    this.heights.clear();
    this.restyle();
  }

  setAllGroups(collapsed) {
    this.keepPlace();
    this.collapsed.clear();
    for (const g of this.store.groups()) {
      this.decided.add(g.start);
      if (collapsed) this.collapsed.add(g.start);
    }
    this.heights.clear();
    this.restyle();
  }

  /** Pin the line at the top of the viewport through the next render. */
  keepPlace() {
    if (this.following || this.pending) return;
    const anchor = this.captureAnchor();
    if (anchor) this.pending = { ...anchor, until: false };
  }

  // ---- rendering ------------------------------------------------------------------------------

  render() {
    this.frame = 0;
    const sc = this.scroller;
    const store = this.store;
    this.updateWindow();
    this.empty.hidden = store.last > 0;
    this.applyDefaultFolds();
    this.hidden = this.hiddenRanges();
    const anchor = this.pending ?? (this.following ? null : this.captureAnchor());
    this.updateBars();
    let want = null;
    for (let pass = 0; pass < 4; pass++) {
      const lay = this.layout();
      const vh = sc.clientHeight;
      let top = sc.scrollTop;
      if (this.following) top = lay.total - vh;
      else if (anchor) top = this.estimatedTop(anchor.seq, lay) - anchor.offset;
      top = Math.max(0, Math.min(top, lay.total - vh));
      want = this.blocksAround(lay, top, vh, 0);
      this.sync(want);
      const real = this.wrap ? this.measure(want) : lay;
      this.setSpacers(real, want);
      let finalTop = sc.scrollTop;
      if (this.following) finalTop = sc.scrollHeight - vh;
      else if (anchor) {
        const row = this.rowElement(anchor.seq) ?? this.rowElement(this.shownSeq(anchor.seq));
        finalTop = (row ? this.rowTop(row) : this.estimatedTop(anchor.seq, real)) - anchor.offset;
      }
      this.scrollTo(finalTop);
      const again = this.blocksAround(real, sc.scrollTop, vh, 0);
      if (again[0] === want[0] && again[1] === want[1]) break;
    }
    // A jump stays pending until its line is loaded, so it lands where the line really is.
    if (this.pending && (!this.pending.until || this.isLoadedRow(this.pending.seq))) {
      this.pending = null;
    }
    const lay = this.layout();
    const ahead = this.blocksAround(lay, sc.scrollTop, sc.clientHeight, PREFETCH_VIEWPORTS);
    const missing = [];
    for (let b = ahead[0]; b <= ahead[1] && b >= 0; b++) if (!store.complete(b)) missing.push(b);
    if (missing.length) this.onNeed(missing);
    this.onRendered();
  }

  updateWindow() {
    const last = this.store.last;
    const lastB = last ? blockOf(last) : -1;
    if (lastB < 0) {
      this.winLo = 0;
      this.winHi = -1;
    } else if (this.following || this.winHi < 0) {
      this.winHi = lastB;
      this.winLo = Math.max(0, lastB - WINDOW_BLOCKS + 1);
    } else if (this.winHi < lastB) {
      this.winHi = Math.min(lastB, this.winLo + WINDOW_BLOCKS - 1);
    }
  }

  updateBars() {
    const lastB = this.store.last ? blockOf(this.store.last) : -1;
    this.earlier.hidden = this.winLo <= 0;
    this.later.hidden = this.winHi >= lastB;
    if (!this.earlier.hidden) {
      this.earlier.querySelector(".what").textContent =
        `${(this.winLo * BLOCK).toLocaleString()} earlier lines`;
    }
    if (!this.later.hidden) {
      const count = this.store.last - (this.winHi + 1) * BLOCK;
      this.later.querySelector(".what").textContent = `${count.toLocaleString()} later lines`;
    }
  }

  /** Move the window by half its size (the "earlier" / "later" bars). */
  shiftWindow(direction) {
    const lastB = blockOf(Math.max(1, this.store.last));
    const step = WINDOW_BLOCKS / 2;
    const anchor = this.captureAnchor();
    this.winLo = Math.max(0, Math.min(this.winLo + direction * step, lastB - WINDOW_BLOCKS + 1));
    this.winLo = Math.max(0, this.winLo);
    this.winHi = Math.min(lastB, this.winLo + WINDOW_BLOCKS - 1);
    this.following = false;
    this.onFollow(false);
    if (anchor && blockOf(anchor.seq) >= this.winLo && blockOf(anchor.seq) <= this.winHi) {
      this.pending = { ...anchor, until: false };
    } else {
      const seq = (direction < 0 ? this.winHi : this.winLo) * BLOCK + 1;
      this.pending = { seq, offset: 0, until: false };
    }
    this.schedule();
  }

  /** Merged, sorted [from, to] ranges of hidden lines: folded groups, and GitHub's
   * `::endgroup::` lines (hidden as GitHub hides them). */
  hiddenRanges() {
    const last = this.store.last;
    const ranges = [];
    for (const [seq, marker] of this.store.markers) {
      if (marker.kind === "end" && marker.style === "gh") ranges.push([seq, seq]);
    }
    for (const g of this.store.groups()) {
      if (!this.collapsed.has(g.start)) continue;
      const end = g.end ?? last;
      if (end > g.start) ranges.push([g.start + 1, end]);
    }
    ranges.sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const r of ranges) {
      const prev = merged[merged.length - 1];
      if (prev && r[0] <= prev[1] + 1) prev[1] = Math.max(prev[1], r[1]);
      else merged.push([...r]);
    }
    return merged;
  }

  isHidden(seq) {
    return this.hiddenAt(seq) >= 0;
  }

  /** The index of the hidden range holding `seq`, or -1: a binary search (the ranges are
   * sorted and disjoint; a log with thousands of folded groups asks this for every row). */
  hiddenAt(seq) {
    const hidden = this.hidden;
    let low = 0;
    let high = hidden.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (hidden[middle][0] <= seq) low = middle + 1;
      else high = middle;
    }
    return low > 0 && seq <= hidden[low - 1][1] ? low - 1 : -1;
  }

  /** The row that shows `seq`: itself, or the header of the folded group hiding it. */
  shownSeq(seq) {
    const at = this.hiddenAt(seq);
    return at >= 0 ? this.hidden[at][0] - 1 : seq;
  }

  /** Cumulative block heights over the window: tops[i] is the y of block winLo + i. */
  layout() {
    const n = Math.max(0, this.winHi - this.winLo + 1);
    const tops = new Float64Array(n + 1);
    const base = this.earlier.hidden ? 0 : this.earlier.offsetHeight;
    let y = 0;
    let r = 0;
    const hidden = this.hidden;
    for (let i = 0; i < n; i++) {
      const b = this.winLo + i;
      tops[i] = y;
      const first = b * BLOCK + 1;
      const count = this.store.lineCount(b);
      let visible = count;
      while (r < hidden.length && hidden[r][1] < first) r++;
      for (let k = r; k < hidden.length && hidden[k][0] < first + count; k++) {
        visible -= Math.min(hidden[k][1], first + count - 1) - Math.max(hidden[k][0], first) + 1;
      }
      let h = visible * this.rowH;
      if (this.wrap) {
        const m = this.heights.get(b);
        if (m && m.look === this.look && m.width === this.scroller.clientWidth) {
          if (m.version === this.store.version(b)) h = m.h;
        }
      }
      y += h;
    }
    tops[n] = y;
    const after = this.later.hidden ? 0 : this.later.offsetHeight;
    return { tops, base, total: base + y + after, n };
  }

  /** [first, last] block to render for a viewport at `top` (plus `extra` viewports each way). */
  blocksAround(lay, top, vh, extra) {
    if (lay.n === 0) return [-1, -2];
    const margin = vh * (0.5 + extra);
    const y0 = top - lay.base - margin;
    const y1 = top - lay.base + vh + margin;
    const find = (y) => {
      let lo = 0;
      let hi = lay.n - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (lay.tops[mid] <= y) lo = mid;
        else hi = mid - 1;
      }
      return lo;
    };
    return [this.winLo + find(y0), this.winLo + find(y1)];
  }

  estimatedTop(seq, lay) {
    const shown = this.shownSeq(seq);
    const b = Math.max(this.winLo, Math.min(this.winHi, blockOf(shown)));
    const i = b - this.winLo;
    if (i < 0 || i >= lay.n) return 0;
    let rows = 0;
    for (let s = b * BLOCK + 1; s < shown; s++) if (!this.isHidden(s)) rows++;
    return lay.base + lay.tops[i] + rows * this.rowH;
  }

  setSpacers(lay, want) {
    if (lay.n === 0 || want[0] < 0) {
      this.topSpace.style.height = "0px";
      this.bottomSpace.style.height = "0px";
      return;
    }
    const i0 = want[0] - this.winLo;
    const i1 = want[1] - this.winLo + 1;
    this.topSpace.style.height = `${lay.tops[i0]}px`;
    this.bottomSpace.style.height = `${lay.tops[lay.n] - lay.tops[i1]}px`;
  }

  measure(want) {
    const width = this.scroller.clientWidth;
    for (let b = want[0]; b <= want[1] && b >= 0; b++) {
      const entry = this.rendered.get(b);
      if (!entry) continue;
      this.heights.set(b, {
        h: entry.el.offsetHeight, version: this.store.version(b), width, look: this.look,
      });
    }
    return this.layout();
  }

  scrollTo(top) {
    const sc = this.scroller;
    const max = sc.scrollHeight - sc.clientHeight;
    const target = Math.max(0, Math.min(Math.round(top), max));
    if (Math.abs(sc.scrollTop - target) >= 1) {
      this.setTop = target;
      sc.scrollTop = target;
    }
  }

  userScrolled() {
    const sc = this.scroller;
    if (this.setTop >= 0 && Math.abs(sc.scrollTop - this.setTop) <= 1) {
      this.setTop = -1;
      return;
    }
    this.setTop = -1;
    this.pending = null;
    const atBottom =
      this.later.hidden && sc.scrollHeight - sc.clientHeight - sc.scrollTop <= 2;
    if (atBottom !== this.following) {
      this.following = atBottom;
      this.onFollow(atBottom);
    }
    this.schedule();
  }

  measureRow() {
    const probe = el("div", "r probe");
    probe.append(el("span", "n", "1"), el("span", "x", "M"));
    this.rows.append(probe);
    const h = probe.getBoundingClientRect().height;
    probe.remove();
    if (h > 0) this.rowH = h;
  }

  // ---- DOM of blocks and rows -----------------------------------------------------------------

  rowElement(seq) {
    const entry = this.rendered.get(blockOf(seq));
    return entry ? (entry.rows.get(seq) ?? null) : null;
  }

  isLoadedRow(seq) {
    const row = this.rowElement(this.shownSeq(seq));
    return !!row && !row.classList.contains("ld");
  }

  /** A row's y in the scroll area's content. */
  rowTop(row) {
    return row.parentElement.offsetTop + row.offsetTop;
  }

  /** The first row at least partly in view, and its distance from the viewport's top. */
  captureAnchor() {
    const top = this.scroller.scrollTop;
    const blocks = [...this.rendered.keys()].sort((a, b) => a - b);
    for (const b of blocks) {
      const entry = this.rendered.get(b);
      const blockTop = entry.el.offsetTop;
      if (blockTop + entry.el.offsetHeight <= top) continue;
      for (const row of entry.el.children) {
        const y = blockTop + row.offsetTop;
        if (y + row.offsetHeight > top) return { seq: +row.dataset.s, offset: y - top };
      }
    }
    return null;
  }

  renderKey() {
    return `${this.look}|${this.store.markersVersion}|${this.ended}`;
  }

  sync(want) {
    for (const [b, entry] of this.rendered) {
      if (b < want[0] || b > want[1]) {
        entry.el.remove();
        this.rendered.delete(b);
      }
    }
    if (want[0] < 0) return;
    const key = this.renderKey();
    const groups = this.groupStarts();
    let firstExisting = null;
    for (let b = want[0]; b <= want[1]; b++) {
      const entry = this.rendered.get(b);
      if (!entry) continue;
      if (firstExisting === null) firstExisting = entry.el;
      const version = this.store.version(b);
      const count = this.store.lineCount(b);
      if (entry.key === key && entry.version === version && entry.upTo >= b * BLOCK + count) continue;
      if (entry.key === key && !entry.partial) this.appendRows(entry, b, groups);
      else this.fillBlock(entry, b, key, groups);
    }
    for (let b = want[0]; b <= want[1]; b++) {
      if (this.rendered.has(b)) continue;
      const entry = { el: el("div", "blk"), key, version: 0, upTo: 0, rows: new Map(), partial: false };
      entry.el.dataset.b = String(b);
      this.fillBlock(entry, b, key, groups);
      this.rendered.set(b, entry);
      if (firstExisting && b < +firstExisting.dataset.b) {
        firstExisting.before(entry.el);
      } else {
        this.rows.append(entry.el);
      }
    }
  }

  groupStarts() {
    const map = new Map();
    for (const g of this.store.groups()) map.set(g.start, g);
    return map;
  }

  fillBlock(entry, b, key, groups) {
    entry.el.replaceChildren();
    entry.rows.clear();
    entry.key = key;
    entry.upTo = b * BLOCK;
    entry.partial = false;
    this.appendRows(entry, b, groups);
  }

  appendRows(entry, b, groups) {
    const end = b * BLOCK + this.store.lineCount(b);
    const fragment = document.createDocumentFragment();
    for (let seq = entry.upTo + 1; seq <= end; seq++) {
      if (this.isHidden(seq)) continue;
      const row = this.buildRow(seq, groups);
      if (row.classList.contains("ld")) entry.partial = true;
      entry.rows.set(seq, row);
      fragment.append(row);
    }
    entry.el.append(fragment);
    entry.upTo = end;
    entry.version = this.store.version(b);
  }

  buildRow(seq, groups) {
    const line = this.store.get(seq);
    const row = document.createElement("div");
    row.dataset.s = String(seq);
    let cls = "r";
    const number = document.createElement("a");
    number.className = "n";
    number.href = `#L${seq}`;
    number.textContent = String(seq);
    row.append(number);
    if (this.times) row.append(el("span", "tm", this.clockAt(seq)));
    const text = el("span", "x");
    row.append(text);
    const sel = this.selection;
    if (sel && seq >= sel[0] && seq <= sel[1]) cls += " sel";
    if (line === undefined) {
      row.className = `${cls} ld`;
      text.textContent = "…";
      return row;
    }
    if (line.text === null) {
      row.className = `${cls} lost`;
      text.textContent = "(line lost)";
      return row;
    }
    if (line.err) cls += " e";
    const search = this.search;
    let marks = "";
    if (search.query && search.matches.has(seq)) {
      cls += seq === search.current ? " hit cur" : " hit";
      marks = search.query;
    }
    const group = groups.get(seq);
    const marker = this.store.markers.get(seq);
    if (group) {
      cls += " gh";
      const open = !this.collapsed.has(seq);
      const fold = el("button", "fold", open ? "▾" : "▸");
      fold.type = "button";
      fold.setAttribute("aria-expanded", String(open));
      fold.title = open ? "Fold this group (o)" : "Unfold this group (o)";
      const name = el("span", "gn");
      appendRuns(name, renderLine(group.name || "(group)").runs, marks);
      const info = el("span", "gd", this.groupInfo(group));
      text.append(fold, name, info);
    } else {
      if (marker && marker.kind === "end") cls += " ge";
      const annotation = marks ? null : parseAnnotation(line.text);
      if (annotation) {
        cls += ` an an-${annotation.severity}`;
        renderAnnotation(text, annotation);
      } else {
        appendRuns(text, renderLine(line.text).runs, marks);
      }
    }
    row.className = cls;
    return row;
  }

  clockAt(seq) {
    if (this.startedMs == null || !this.store.markAt(seq)) return "";
    return formatClock(this.store.timeAt(seq) - this.startedMs);
  }

  /** "12s" or "3m 02s · 120 lines": a group's duration (and size when folded). */
  groupInfo(group) {
    const ms = this.groupDuration(group);
    const parts = [];
    if (ms != null) parts.push(formatDuration(ms));
    if (this.collapsed.has(group.start)) {
      const lines = (group.end ?? this.store.last) - group.start;
      parts.push(`${lines.toLocaleString()} ${lines === 1 ? "line" : "lines"}`);
    }
    return parts.join(" · ");
  }

  groupDuration(group) {
    if (group.startTs != null && group.endTs != null) return group.endTs - group.startTs;
    const t0 = this.store.timeAt(group.start);
    if (t0 == null) return null;
    if (group.end != null) {
      const t1 = this.store.timeAt(group.end);
      return t1 == null ? null : t1 - t0;
    }
    if (this.ended) return this.endedMs == null ? null : this.endedMs - t0;
    return Date.now() - t0;
  }

  /** Refresh the durations of open groups in view (called every second while the job runs). */
  tick() {
    const groups = this.groupStarts();
    for (const entry of this.rendered.values()) {
      for (const row of entry.el.querySelectorAll(".r.gh")) {
        const group = groups.get(+row.dataset.s);
        const info = row.querySelector(".gd");
        if (group && info && group.end == null) info.textContent = this.groupInfo(group);
      }
    }
  }
}

/** Append a line's styled runs to `parent` as text nodes and spans: never HTML. */
export function appendRuns(parent, runs, query) {
  const plainText = runs.map((r) => r.text).join("");
  if (query) runs = markRanges(runs, findAll(plainText, query));
  for (const run of runs) {
    const s = run.style;
    if (s.fg === null && s.bg === null && !s.bold && !s.dim && !s.italic && !s.underline &&
        !s.inverse && !s.strike && !run.ctl && !run.mark) {
      parent.append(run.text);
      continue;
    }
    const span = document.createElement(run.mark ? "mark" : "span");
    let cls = "";
    let fg = s.fg;
    let bg = s.bg;
    if (s.inverse) {
      fg = s.bg ?? "inv-fg";
      bg = s.fg ?? "inv-bg";
    }
    if (typeof fg === "number") cls += ` f${fg}`;
    else if (fg === "inv-fg") cls += " fi";
    else if (fg) span.style.color = fg;
    if (typeof bg === "number") cls += ` b${bg}`;
    else if (bg === "inv-bg") cls += " bi";
    else if (bg) span.style.backgroundColor = bg;
    if (s.bold) cls += " sb";
    if (s.dim) cls += " sd";
    if (s.italic) cls += " si";
    if (s.underline) cls += " su";
    if (s.strike) cls += " ss";
    if (run.ctl) cls += " ctl";
    if (cls) span.className = cls.trim();
    span.textContent = run.text;
    parent.append(span);
  }
}
