// ansi.js — a pure, one-line terminal: a log line's text in, styled runs out. No DOM.
//
// Theory of operation
// -------------------
// Each line is rendered on its own, starting from the default style (like GitHub Actions; a
// colour left open at the end of a line does not leak into the next one, which is what makes
// lines renderable in any order by the virtualised view).
//
// SGR sequences (ESC [ ... m) set the style: 16, 256 and 24-bit colours, bold, dim, italic,
// underline, inverse, strikethrough and their resets. A few cursor sequences that progress bars
// use within a line are honoured so the line shows the terminal's last state: carriage return,
// backspace, ESC[nG (column), ESC[nC / ESC[nD (right / left) and ESC[K (erase in line). Every
// other escape sequence (OSC titles, cursor up, DCS, charset selection, ...) is removed. Other
// control characters are shown as visible symbols so they cannot disturb the layout.
//
// Lines without any control character (the vast majority) take a fast path: one run, no parsing.

/** @typedef {{fg: (number|string|null), bg: (number|string|null), bold: boolean, dim: boolean,
 *   italic: boolean, underline: boolean, inverse: boolean, strike: boolean}} Style */
/** @typedef {{text: string, style: Style, ctl?: boolean, mark?: number}} Run */

/** The style of text no SGR has touched. Styles are immutable and compared by reference. */
export const PLAIN = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
  inverse: false, strike: false,
});

const SPECIAL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;
const TAB = 8;

/**
 * Render one line. Returns the styled runs and the plain text (what a user would copy).
 * @param {string} text
 * @returns {{runs: Run[], plain: string}}
 */
export function renderLine(text) {
  if (!SPECIAL.test(text)) return { runs: text ? [{ text, style: PLAIN }] : [], plain: text };
  const ops = tokenize(text);
  const moves = ops.some((op) => op.t === "move");
  return moves ? renderCells(ops) : renderLinear(ops);
}

/** The plain text of a line as shown (no escapes, redraws applied). */
export function plainText(text) {
  return SPECIAL.test(text) ? renderLine(text).plain : text;
}

// ---- tokenizer -------------------------------------------------------------------------------

// An op is {t: "text", s, ctl?} | {t: "sgr", p} | {t: "move", k, n} | {t: "tab"}.
function tokenize(text) {
  const ops = [];
  let i = 0;
  let plainStart = 0;
  const flush = (end) => {
    if (end > plainStart) ops.push({ t: "text", s: text.slice(plainStart, end) });
  };
  while (i < text.length) {
    const c = text.charCodeAt(i);
    const isControl = c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029;
    if (!isControl) {
      i++;
      continue;
    }
    flush(i);
    if (c === 0x1b) {
      i = escape(text, i, ops);
    } else {
      if (c === 0x0d) ops.push({ t: "move", k: "cr", n: 0 });
      else if (c === 0x08) ops.push({ t: "move", k: "bs", n: 1 });
      else if (c === 0x09) ops.push({ t: "tab" });
      else if (c !== 0x07) ops.push({ t: "text", s: controlPicture(c), ctl: true });
      i++;
    }
    plainStart = i;
  }
  flush(i);
  return ops;
}

/** Parse the escape sequence at `i` (text[i] is ESC); push its op if it has one; return the end. */
function escape(text, i, ops) {
  const next = text[i + 1];
  if (next === undefined) return i + 1;
  if (next === "[") {
    // CSI: parameter bytes 0x30-0x3f, intermediate bytes 0x20-0x2f, one final byte 0x40-0x7e.
    let j = i + 2;
    while (j < text.length && text.charCodeAt(j) >= 0x30 && text.charCodeAt(j) <= 0x3f) j++;
    const params = text.slice(i + 2, j);
    while (j < text.length && text.charCodeAt(j) >= 0x20 && text.charCodeAt(j) <= 0x2f) j++;
    if (j >= text.length) return j; // cut off: drop it
    const final = text[j];
    const privateMode = /^[<=>?]/.test(params);
    if (!privateMode) csi(final, params, ops);
    return j + 1;
  }
  if (next === "]" || next === "P" || next === "X" || next === "^" || next === "_") {
    // OSC, DCS, SOS, PM, APC: a string up to BEL (OSC only) or ST (ESC \); unterminated: to the end.
    for (let j = i + 2; j < text.length; j++) {
      if (text[j] === "\x07" && next === "]") return j + 1;
      if (text[j] === "\x1b" && text[j + 1] === "\\") return j + 2;
    }
    return text.length;
  }
  // Other escapes: intermediates 0x20-0x2f, then one final byte (ESC ( B, ESC 7, ESC =, ...).
  let j = i + 1;
  while (j < text.length && text.charCodeAt(j) >= 0x20 && text.charCodeAt(j) <= 0x2f) j++;
  return Math.min(j + 1, text.length);
}

function csi(final, params, ops) {
  const n = parseInt(params, 10);
  switch (final) {
    case "m":
      ops.push({ t: "sgr", p: params });
      break;
    case "G":
    case "`":
      ops.push({ t: "move", k: "col", n: Math.max(1, n || 1) - 1 });
      break;
    case "C":
      ops.push({ t: "move", k: "right", n: Math.max(1, n || 1) });
      break;
    case "D":
      ops.push({ t: "move", k: "left", n: Math.max(1, n || 1) });
      break;
    case "K":
      ops.push({ t: "move", k: "erase", n: n || 0 });
      break;
    default:
    // Cursor up/down, screen erase, scroll regions...: meaningless in one line; removed.
  }
}

function controlPicture(code) {
  if (code < 0x20) return String.fromCharCode(0x2400 + code);
  if (code === 0x7f) return "\u2421";
  return `<U+${code.toString(16).toUpperCase().padStart(4, "0")}>`;
}

// ---- SGR -------------------------------------------------------------------------------------

/**
 * The style after applying SGR parameters `params` (e.g. "1;38;5;208") to `style`.
 * @param {Style} style
 * @param {string} params
 * @returns {Style}
 */
export function applySgr(style, params) {
  const out = { ...style };
  // Colon sub-parameters (38:2::r:g:b) are flattened to the semicolon form.
  const fields = params === "" ? ["0"] : params.split(";");
  for (let k = 0; k < fields.length; k++) {
    const field = fields[k];
    if (field.includes(":")) {
      const sub = field.split(":").map((x) => (x === "" ? -1 : parseInt(x, 10)));
      if (sub[0] === 38 || sub[0] === 48 || sub[0] === 58) {
        const rgb = sub[1] === 2 ? sub.slice(sub.length >= 6 ? sub.length - 3 : 2) : null;
        const colour = sub[1] === 5 ? paletteColour(sub[2]) : rgb ? rgbColour(rgb) : null;
        if (sub[0] === 38) out.fg = colour;
        if (sub[0] === 48) out.bg = colour;
      } else if (sub[0] === 4) {
        out.underline = sub[1] !== 0;
      }
      continue;
    }
    const code = field === "" ? 0 : parseInt(field, 10);
    if (code === 38 || code === 48) {
      let colour = null;
      if (fields[k + 1] === "5") {
        colour = paletteColour(parseInt(fields[k + 2], 10));
        k += 2;
      } else if (fields[k + 1] === "2") {
        colour = rgbColour(fields.slice(k + 2, k + 5).map((x) => parseInt(x, 10)));
        k += 4;
      }
      if (code === 38) out.fg = colour;
      else out.bg = colour;
      continue;
    }
    sgrCode(out, code);
  }
  return sameStyle(out, PLAIN) ? PLAIN : Object.freeze(out);
}

function sgrCode(out, code) {
  if (code === 0) Object.assign(out, PLAIN);
  else if (code === 1) out.bold = true;
  else if (code === 2) out.dim = true;
  else if (code === 3) out.italic = true;
  else if (code === 4 || code === 21) out.underline = true;
  else if (code === 7) out.inverse = true;
  else if (code === 9) out.strike = true;
  else if (code === 22) out.bold = out.dim = false;
  else if (code === 23) out.italic = false;
  else if (code === 24) out.underline = false;
  else if (code === 27) out.inverse = false;
  else if (code === 29) out.strike = false;
  else if (code >= 30 && code <= 37) out.fg = code - 30;
  else if (code === 39) out.fg = null;
  else if (code >= 40 && code <= 47) out.bg = code - 40;
  else if (code === 49) out.bg = null;
  else if (code >= 90 && code <= 97) out.fg = code - 90 + 8;
  else if (code >= 100 && code <= 107) out.bg = code - 100 + 8;
  // Blink, hidden, fonts, overline...: ignored.
}

/** Colours 0-15 stay indexes (the theme decides them); 16-255 become an `rgb(...)` string. */
export function paletteColour(n) {
  if (!(n >= 0 && n <= 255)) return null;
  if (n < 16) return n;
  if (n < 232) {
    const level = (v) => (v === 0 ? 0 : 55 + v * 40);
    const i = n - 16;
    return `rgb(${level(Math.floor(i / 36))}, ${level(Math.floor(i / 6) % 6)}, ${level(i % 6)})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey}, ${grey}, ${grey})`;
}

function rgbColour(parts) {
  if (parts.length !== 3 || parts.some((v) => !(v >= 0 && v <= 255))) return null;
  return `rgb(${parts[0]}, ${parts[1]}, ${parts[2]})`;
}

function sameStyle(a, b) {
  return (
    a.fg === b.fg && a.bg === b.bg && a.bold === b.bold && a.dim === b.dim &&
    a.italic === b.italic && a.underline === b.underline && a.inverse === b.inverse &&
    a.strike === b.strike
  );
}

// ---- layout: linear (no cursor moves) and cells (redraws) ------------------------------------

function renderLinear(ops) {
  const runs = [];
  let style = PLAIN;
  for (const op of ops) {
    if (op.t === "sgr") style = applySgr(style, op.p);
    else if (op.t === "tab") pushRun(runs, "\t", style, false);
    else pushRun(runs, op.s, style, !!op.ctl);
  }
  return { runs, plain: runs.map((r) => r.text).join("") };
}

function pushRun(runs, text, style, ctl) {
  const prev = runs[runs.length - 1];
  if (prev && prev.style === style && !!prev.ctl === ctl) prev.text += text;
  else runs.push(ctl ? { text, style, ctl } : { text, style });
}

/** A row of cells with a cursor: what a terminal does with one line. Tabs become spaces. */
function renderCells(ops) {
  const chars = [];
  const styles = [];
  const ctls = [];
  let col = 0;
  let style = PLAIN;
  const put = (ch, ctl) => {
    while (chars.length < col) {
      chars.push(" ");
      styles.push(PLAIN);
      ctls.push(false);
    }
    chars[col] = ch;
    styles[col] = style;
    ctls[col] = ctl;
    col++;
  };
  for (const op of ops) {
    if (op.t === "sgr") style = applySgr(style, op.p);
    else if (op.t === "tab") col = (Math.floor(col / TAB) + 1) * TAB;
    else if (op.t === "text") for (const ch of op.s) put(ch, !!op.ctl);
    else if (op.k === "cr") col = 0;
    else if (op.k === "bs" || op.k === "left") col = Math.max(0, col - op.n);
    else if (op.k === "right") col += op.n;
    else if (op.k === "col") col = op.n;
    else if (op.k === "erase") {
      if (op.n === 0) {
        chars.length = styles.length = ctls.length = Math.min(chars.length, col);
      } else {
        const to = op.n === 1 ? Math.min(col + 1, chars.length) : chars.length;
        for (let k = 0; k < to; k++) {
          chars[k] = " ";
          styles[k] = PLAIN;
          ctls[k] = false;
        }
        if (op.n === 2) chars.length = styles.length = ctls.length = 0;
      }
    }
  }
  const runs = [];
  for (let k = 0; k < chars.length; k++) pushRun(runs, chars[k], styles[k], ctls[k]);
  return { runs, plain: chars.join("") };
}

// ---- search highlighting ---------------------------------------------------------------------

/**
 * Case-insensitive occurrences of `query` in `plain`, as [start, end) ranges of UTF-16 offsets.
 * @returns {Array<[number, number]>}
 */
export function findAll(plain, query) {
  const found = [];
  if (!query) return found;
  const hay = plain.toLowerCase();
  const needle = query.toLowerCase();
  // toLowerCase can change lengths for a few characters; then offsets would be off: skip marks.
  if (hay.length !== plain.length) return found;
  for (let at = hay.indexOf(needle); at >= 0; at = hay.indexOf(needle, at + needle.length)) {
    found.push([at, at + needle.length]);
  }
  return found;
}

/**
 * Split `runs` so that the text inside `ranges` is in runs flagged `mark: 1`.
 * @param {Run[]} runs
 * @param {Array<[number, number]>} ranges sorted, not overlapping
 * @returns {Run[]}
 */
export function markRanges(runs, ranges) {
  if (!ranges.length) return runs;
  const out = [];
  let offset = 0;
  let r = 0;
  for (const run of runs) {
    const end = offset + run.text.length;
    let pos = offset;
    while (pos < end) {
      while (r < ranges.length && ranges[r][1] <= pos) r++;
      const range = ranges[r];
      let stop = end;
      let mark = false;
      if (range && range[0] <= pos) {
        mark = true;
        stop = Math.min(end, range[1]);
      } else if (range) {
        stop = Math.min(end, range[0]);
      }
      const piece = { ...run, text: run.text.slice(pos - offset, stop - offset) };
      if (mark) piece.mark = 1;
      out.push(piece);
      pos = stop;
    }
    offset = end;
  }
  return out;
}
