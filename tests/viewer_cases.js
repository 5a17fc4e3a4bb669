// Pure-module cases for test_viewer.py: run in the page with page.evaluate.
async () => {
  const ansi = await import("/static/ansi.js");
  const model = await import("/static/model.js");
  const plain = (t) => ansi.renderLine(t).plain;
  const out = {};
  out.cr = plain("progress 10%\rprogress 50%\rprogress 100%");
  out.crShorter = plain("abcdef\rxy");
  out.erase = plain("\x1b]0;title\x07cursor moves \x1b[2K\x1b[1Gerased");
  out.osc = plain("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b");
  out.tabLinear = plain("a\tb");
  out.tabCells = plain("ab\rX\tY");
  out.nul = plain("[\x00]");
  const styled = ansi.renderLine("\x1b[1;31mred\x1b[0m \x1b[38;5;208mo\x1b[48;2;1;2;3mx\x1b[7mi\x1b[m");
  out.styles = styled.runs.map((r) => [r.text, r.style.fg, r.style.bg, r.style.bold, r.style.inverse]);
  out.sgr22 = ansi.applySgr(ansi.applySgr(ansi.PLAIN, "1;2;3;4"), "22;23;24") === ansi.PLAIN;
  out.bright = ansi.renderLine("\x1b[92mg\x1b[103my").runs.map((r) => [r.style.fg, r.style.bg]);
  out.marks = ansi.markRanges([{text: "hello world", style: ansi.PLAIN}], ansi.findAll("hello world", "O"))
    .map((r) => [r.text, !!r.mark]);
  const m = (t) => { const x = model.parseMarker(t); return x && [x.kind, x.style, x.name]; };
  out.markers = [
    m("::group::Compile"), m("::endgroup::"),
    m("\x1b[0Ksection_start:1560896352:my_section[collapsed=true]\r\x1b[0KHeader text"),
    m("\x1b[0Ksection_end:1560896353:my_section\r\x1b[0K"),
    m("--- :hammer: Build"), m("+++ Tests"), m("plain"), m("---no space"),
    // Go's test results and a diff's file lines are output, not headers.
    m("--- FAIL: TestAdd (0.00s)"), m("--- PASS: TestSub (0.01s)"), m("--- a/src/x.c"),
    m("+++ b/src/x.c"), m("--- /dev/null"), m("+++ new.txt\t2026-12-05 18:00:00.000000000 +0000"),
    m("--- Failing tests"),
  ];
  const g = model.pairGroups([
    {kind: "start", style: "gl", name: "outer", key: "o", seq: 1, ts: 1000},
    {kind: "start", style: "gl", name: "inner", key: "i", seq: 2, ts: 2000},
    {kind: "end", style: "gl", key: "i", seq: 4, ts: 3000},
    {kind: "end", style: "gl", key: "o", seq: 6, ts: 9000},
    {kind: "start", style: "bk", name: "a", seq: 7}, {kind: "start", style: "bk", name: "b", seq: 9},
  ]);
  out.groups = g.map((x) => [x.name, x.start, x.end, x.depth]);
  // Which sections start folded: GitLab's [collapsed=true]; Buildkite's ---/~~~ but not +++.
  const folds = (lines) => {
    const markers = lines.map((t, i) => ({...model.parseMarker(t), seq: i + 1}));
    return model.pairGroups(markers).map((x) => [x.name, x.collapsed]);
  };
  out.folds = {
    gitlab: folds([
      "\x1b[0Ksection_start:1:a[collapsed=true]\r\x1b[0KA", "section_end:2:a",
      "section_start:3:b[hide_duration=true,collapsed=true]\r\x1b[0KB", "section_end:4:b",
      "section_start:5:c[collapsed=false]\r\x1b[0KC", "section_end:6:c", "section_start:7:d\r\x1b[0KD",
    ]),
    buildkite: folds(["--- a", "+++ b", "~~~ c", "--- d"]),
    noExpanded: folds(["--- a", "~~~ b", "--- c", "~~~ d"]),
    expandPrevious: folds(["--- a", "^^^ +++", "+++ b", "--- c"]),
    github: folds(["::group::g", "::endgroup::"]),
  };
  out.range = [model.parseRange("#L120-L140"), model.parseRange("#L7"), model.parseRange("#L9-L3"),
               model.parseRange("#x")];
  return out;
}
