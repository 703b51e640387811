// Scorch viewer: timeline, flame graph (root at the top), diff and top
// table over the JSON API next to this page. No dependencies.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const ROW = 18;          // flame graph row height, CSS px
  const MIN_W = 0.5;       // frames narrower than this (CSS px) are skipped
  const FONT = '12px ui-monospace, SFMono-Regular, Menlo, monospace';
  const MAX_NODES = 5000; // server-side pruning of huge trees
  // The server sends only nodes at least this share of the root wide:
  // half a pixel at 2x zoom. Narrower ones cannot be seen until zoomed
  // in further; the status says how many were left out.
  function minWidth() { return (MIN_W / ((flame.clientWidth || 800) * 2)).toPrecision(2); }

  // State, exposed for tests and for poking from the console.
  const S = window.scorchState = {
    ready: false,     // first render done
    gen: 0,           // bumps after every completed render
    labelsGen: 0,     // bumps after every filling of the filter lists
    loading: 0,
    error: '',
    mode: 'flame',    // 'flame', 'diff' or 'sandwich'
    extent: null,     // {from, to} ms of the timeline
    selection: null,  // {from, to} ms, null for all time
    live: 0,          // minutes the selection follows up to now; 0: off
    liveEvery: 10000, // ms between refreshes in live mode
    liveTicks: 0,     // refreshes done in live mode
    single: false,    // the timeline holds one profile: no range to drag
    group: '',        // label the root's children group by ('' for none)
    sandwich: { fn: '', found: false, total: 0 },
    diff: { a: null, b: null, side: 'a', totals: null },
    filters: { service: '', container: '', comm: '', pid: '' },
    unit: '', total: 0, windows: 0, span: null, nodes: 0, pruned: 0,
    zoom: { name: 'all', total: 0, share: 1, depth: 0 },
    search: { query: '', share: 0, matches: 0 },
    top: [],          // rows as shown: {name, kind, self, total}
    drawn: 0,         // frames drawn in the last paint
    drawMs: 0,        // how long the last paint took
    loadMs: 0,        // fetch + parse of the last tree
    readyAt: 0,       // ms from navigation to the first render
    // frameRect returns the viewport rectangle of the widest drawn frame
    // named name, or null.
    frameRect(name) {
      let best = null;
      for (const r of rects) {
        if (names[r.n.f] === name && (!best || r.w > best.w)) best = r;
      }
      if (!best) return null;
      const c = flame.getBoundingClientRect();
      return { x: c.left + best.x, y: c.top + best.y, w: best.w, h: ROW - 1 };
    },
  };

  const flame = $('flamegraph');
  const tl = $('timeline');
  const tip = $('tooltip');
  let data = null;        // last flame graph or diff response
  let names = [], kinds = [], kindNames = []; // kinds[f] indexes kindNames (the server's classes)
  let zoomNode = null;    // node the graph is zoomed to
  let rects = [];         // drawn frames: {x, y, w, n, d}
  let rowRects = [];      // rects by row
  let timeline = null;    // last timeline response
  let topRows = [];
  let topSort = { key: 'self', dir: -1 };
  let searchRe = null;
  let reqSeq = 0;

  // ---- helpers ----
  function params(extra) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(S.filters)) if (v) p.set(k, v);
    if (S.group) p.set('group', S.group);
    for (const [k, v] of Object.entries(extra || {})) if (v != null) p.set(k, v);
    return p;
  }
  function rangeParams(sel, prefix) {
    const o = {};
    if (sel) { o[prefix + 'from'] = Math.floor(sel.from); o[prefix + 'to'] = Math.ceil(sel.to); }
    return o;
  }
  async function getJSON(path, p) {
    const r = await fetch(path + '?' + p.toString());
    if (!r.ok) throw new Error(path + ': ' + r.status + ' ' + (await r.text()).trim());
    return r.json();
  }
  // unitWord names a sample type for people: "samples", not "samples/count".
  function unitWord(u) {
    const [t, unit] = (u || 'samples/count').split('/');
    return !unit || unit === 'count' ? t : t + ' (' + unit + ')';
  }
  const fmtPct = (v) => (v * 100).toFixed(v >= 0.1 ? 1 : 2) + '%';
  const fmtN = (v) => Math.round(v).toLocaleString('en-US');
  // resolutionName names the period of the summaries (the store's
  // rollups) a long range is read from.
  const resolutionName = (ms) =>
    ({ 300000: '5-minute', 3600000: 'hourly', 86400000: 'daily' })[ms] || (ms / 1000) + '-second';
  function fmtTime(ms, withDate) {
    const d = new Date(ms);
    const t = d.toISOString();
    return withDate ? t.slice(0, 19).replace('T', ' ') : t.slice(11, 19);
  }
  function hash(s) {
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
    return (h >>> 0) / 4294967296;
  }
  // Errors also go to a banner under the header, where the user looks
  // (the status line sits below the flame graph); the next status that is
  // not an error clears it.
  function setStatus(msg, isErr) {
    const el = $('status');
    el.textContent = msg;
    el.classList.toggle('error', !!isErr);
    if (isErr) S.error = msg;
    const banner = $('error');
    banner.textContent = isErr ? msg : '';
    banner.hidden = !isErr;
  }

  // ---- colours ----
  // The server decides each frame's class (user, kernel, jit); the page
  // only colours it.
  const legend = { user: 'hsl(28,80%,62%)', kernel: 'hsl(205,55%,64%)', jit: 'hsl(110,45%,55%)', group: 'hsl(220,10%,78%)' };
  const kindOf = (n) => (n.f < 0 ? '' : kindNames[kinds[n.f]] || 'user');
  function frameColor(n) {
    const name = names[n.f] || '';
    if (searchRe) return searchRe.test(name) ? '#d946ef' : '#ddd';
    const h = hash(name);
    switch (kindOf(n)) {
      case 'kernel': return 'hsl(' + (195 + 20 * h) + ',55%,' + (60 + 10 * h) + '%)';
      case 'jit': return 'hsl(' + (95 + 35 * h) + ',45%,' + (52 + 10 * h) + '%)';
      case 'group': return 'hsl(220,10%,' + (74 + 8 * h) + '%)';
      default: return 'hsl(' + (10 + 40 * h) + ',80%,' + (58 + 10 * h) + '%)';
    }
  }
  function diffColor(n) {
    if (searchRe && !searchRe.test(names[n.f] || '')) return '#ddd';
    const a = data.a.total ? n.t[0] / data.a.total : 0;
    const b = data.b.total ? n.t[1] / data.b.total : 0;
    const m = Math.max(a, b);
    const r = m ? (b - a) / m : 0; // -1 gone .. +1 new
    const l = 92 - 40 * Math.min(1, Math.abs(r));
    if (Math.abs(r) < 0.02) return 'hsl(0,0%,88%)';
    return r > 0 ? 'hsl(0,80%,' + l + '%)' : 'hsl(220,80%,' + l + '%)';
  }

  // ---- tree ----
  // Values: a node's width is its total; in a diff the sum of its shares of
  // the A and B totals, so both ranges weigh the same.
  let val = (n) => n.t;
  function prepareTree(d) {
    const diff = S.mode === 'diff';
    if (diff) {
      const at = d.a.total || 1, bt = d.b.total || 1;
      val = (n) => n.t[0] / at + n.t[1] / bt;
    } else {
      val = (n) => n.t;
    }
    if (S.mode === 'sandwich') {
      // Two trees: one list of names, the callees' indexes shifted.
      const off = d.callers.names.length;
      names = d.callers.names.concat(d.callees.names);
      kinds = d.callers.frame_kinds.concat(d.callees.frame_kinds);
      kindNames = d.callers.kinds;
      const st = [d.callees.root];
      while (st.length) {
        const n = st.pop();
        if (n.f >= 0) n.f += off;
        if (n.c) st.push(...n.c);
      }
      d.root = d.callees.root;
      link(d.callers.root);
      link(d.callees.root);
      return;
    }
    names = d.names; kinds = d.frame_kinds; kindNames = d.kinds;
    link(d.root);
  }
  // link sets parent links and depths, iteratively (deep stacks).
  function link(root) {
    const stack = [root];
    root.p = null; root.d = 0;
    while (stack.length) {
      const n = stack.pop();
      if (n.c) for (const c of n.c) { c.p = n; c.d = n.d + 1; stack.push(c); }
    }
  }
  function nodeName(n) { return n.f < 0 ? 'all' : names[n.f]; }
  function pathTo(n) { const p = []; for (; n; n = n.p) p.push(n); return p.reverse(); }

  // ---- flame graph drawing ----
  // layout places Z's subtree W wide: each node it draws on row
  // row(depth below Z), returned as {x, w, n, r}.
  function layout(Z, W, skipZ) {
    const out = [];
    const zv = val(Z);
    if (!(zv > 0)) return out;
    const scale = W / zv;
    const st = [Z, 0];
    while (st.length) {
      const x = st.pop(), n = st.pop();
      if (!(skipZ && n === Z)) out.push({ x, w: val(n) * scale, n, r: n.d - Z.d });
      if (!n.c) continue;
      let cx = x;
      for (const c of n.c) {
        const cw = val(c) * scale;
        if (cw >= MIN_W) st.push(c, cx);
        cx += cw;
      }
    }
    return out;
  }

  function draw() {
    if (!data) return;
    const t0 = performance.now();
    const dpr = window.devicePixelRatio || 1;
    const W = flame.clientWidth || 800;
    rects = []; rowRects = [];
    let maxRow = 0;
    if (S.mode === 'sandwich') {
      // The function in the middle row, its callers stacked above it
      // (the outermost at the top), its callees below, as in the flame
      // graph; both as wide as the function's total.
      const up = (data.callers.root.c || [])[0], down = (data.callees.root.c || [])[0];
      if (up && down) {
        const ups = layout(up, W, false);
        const mid = Math.max(0, ...ups.map((r) => r.r));
        for (const r of ups) rects.push({ x: r.x, y: (mid - r.r) * ROW, w: r.w, n: r.n, row: mid - r.r, fn: r.n === up });
        for (const r of layout(down, W, true)) rects.push({ x: r.x, y: (mid + r.r) * ROW, w: r.w, n: r.n, row: mid + r.r });
        maxRow = Math.max(0, ...rects.map((r) => r.row));
      }
    } else {
      const Z = zoomNode || data.root;
      maxRow = Z.d;
      // Ancestors of the zoomed node span the width above it.
      for (let a = Z.p; a; a = a.p) rects.push({ x: 0, y: a.d * ROW, w: W, n: a, row: a.d, anc: true });
      for (const r of layout(Z, W, false)) {
        rects.push({ x: r.x, y: r.n.d * ROW, w: r.w, n: r.n, row: r.n.d });
        if (r.n.d > maxRow) maxRow = r.n.d;
      }
    }
    const H = (maxRow + 1) * ROW;
    flame.style.height = H + 'px';
    flame.width = Math.round(W * dpr); flame.height = Math.round(H * dpr);
    const ctx = flame.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = FONT;
    ctx.textBaseline = 'middle';
    const cw = ctx.measureText('m').width;
    const color = S.mode === 'diff' ? diffColor : frameColor;
    for (const r of rects) {
      (rowRects[r.row] || (rowRects[r.row] = [])).push(r);
      ctx.fillStyle = r.anc ? '#e8e8e8' : (r.n === data.root && S.mode !== 'sandwich' ? '#c8c8c8' : color(r.n));
      ctx.fillRect(r.x, r.y, Math.max(r.w - (r.w > 3 ? 1 : 0), 0.5), ROW - 1);
      if (r.w > 3 * cw + 6) {
        let label = nodeName(r.n);
        const fit = Math.floor((r.w - 6) / cw);
        if (label.length > fit) label = label.slice(0, Math.max(fit - 1, 1)) + '…';
        ctx.fillStyle = '#111';
        ctx.fillText(label, r.x + 3, r.y + ROW / 2);
      }
    }
    S.drawn = rects.length;
    S.drawMs = performance.now() - t0;
  }

  function hit(ev) {
    const b = flame.getBoundingClientRect();
    const x = ev.clientX - b.left, y = ev.clientY - b.top;
    const row = rowRects[Math.floor(y / ROW)];
    if (!row) return null;
    for (const r of row) if (x >= r.x && x < r.x + r.w) return r;
    return null;
  }

  function escHTML(s) {
    return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
  }

  function tooltipHTML(n) {
    const esc = escHTML;
    const kind = n.f < 0 ? '' : ' <i>(' + kindOf(n) + ')</i>';
    let h = '<b>' + esc(nodeName(n)) + kind + '</b>';
    if (S.mode === 'diff') {
      const a = data.a.total, b = data.b.total;
      const sa = a ? n.t[0] / a : 0, sb = b ? n.t[1] / b : 0;
      h += 'A: ' + fmtN(n.t[0]) + ' (' + fmtPct(sa) + '), self ' + fmtN(n.s[0]) +
        '<br>B: ' + fmtN(n.t[1]) + ' (' + fmtPct(sb) + '), self ' + fmtN(n.s[1]) +
        '<br>change: ' + (sb >= sa ? '+' : '') + ((sb - sa) * 100).toFixed(2) + ' points';
    } else if (S.mode === 'sandwich') {
      const T = S.total || 1, F = data.callees.root.t || 1;
      h += 'total: ' + fmtN(n.t) + ' ' + unitWord(S.unit) + ' (' + fmtPct(n.t / T) + ' of all, ' + fmtPct(n.t / F) + ' of ' + esc(S.sandwich.fn) + ')' +
        '<br>click: the callers and callees of this function';
    } else {
      const T = data.root.t || 1;
      h += 'total: ' + fmtN(n.t) + ' ' + unitWord(S.unit) + ' (' + fmtPct(n.t / T) + ')' +
        '<br>self: ' + fmtN(n.s) + ' (' + fmtPct(n.s / T) + ')' +
        (n.f >= 0 && kindOf(n) !== 'group' ? '<br>click to zoom; shift+click: callers and callees' : '');
    }
    return h;
  }

  flame.addEventListener('mousemove', (ev) => {
    const r = hit(ev);
    if (!r) { tip.hidden = true; return; }
    tip.innerHTML = tooltipHTML(r.n);
    tip.hidden = false;
    const x = Math.min(ev.clientX + 12, window.innerWidth - tip.offsetWidth - 4);
    tip.style.left = x + 'px';
    tip.style.top = (ev.clientY + 14) + 'px';
  });
  flame.addEventListener('mouseleave', () => { tip.hidden = true; });
  flame.addEventListener('click', (ev) => {
    const r = hit(ev);
    if (!r) return;
    const fn = r.n.f >= 0 && kindOf(r.n) !== 'group' ? names[r.n.f] : '';
    if (S.mode === 'sandwich') {
      if (fn && fn !== S.sandwich.fn) openSandwich(fn);
    } else if (ev.shiftKey && S.mode === 'flame' && fn) {
      openSandwich(fn);
    } else {
      zoomTo(r.n);
    }
  });
  // openSandwich shows the callers and callees of function fn.
  function openSandwich(fn) {
    S.sandwich.fn = fn;
    if (S.mode !== 'sandwich') setMode('sandwich');
    zoomNode = null;
    drawTimeline();
    updateRangeLabel();
    load();
  }

  function zoomTo(n) {
    if (S.mode === 'sandwich') { zoomNode = null; renderBreadcrumb(); draw(); S.gen++; return; }
    zoomNode = n && n !== data.root ? n : null;
    const Z = zoomNode || data.root;
    const rv = val(data.root) || 1;
    S.zoom = { name: nodeName(Z), total: Z.t, share: val(Z) / rv, depth: Z.d };
    renderBreadcrumb();
    draw();
    S.gen++;
  }

  function renderBreadcrumbEmpty() { $('breadcrumb').textContent = ''; }
  function renderBreadcrumb() {
    const bc = $('breadcrumb');
    bc.textContent = '';
    if (S.mode === 'sandwich') {
      const s = document.createElement('span');
      s.textContent = S.sandwich.fn ? 'callers (above) and callees (below) of ' + S.sandwich.fn : 'no function chosen';
      bc.appendChild(s);
      return;
    }
    for (const n of pathTo(zoomNode || data.root)) {
      const s = document.createElement('span');
      s.textContent = nodeName(n);
      s.dataset.depth = n.d;
      s.title = nodeName(n);
      s.addEventListener('click', () => zoomTo(n));
      bc.appendChild(s);
    }
  }

  // ---- search ----
  function applySearch() {
    const q = $('search').value.trim();
    S.search.query = q;
    if (!q) {
      searchRe = null;
      S.search.share = 0; S.search.matches = 0;
      $('search-share').textContent = '';
    } else {
      const esc = q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      searchRe = new RegExp(esc, 'i');
      computeSearchShare();
    }
    draw();
    writeURL();
    S.gen++;
  }
  // The share of all samples whose stack has a matching frame: the sum of
  // matching nodes' totals, not counting matches under a match twice. A
  // pruned tree cannot tell (the omitted nodes may match): the server
  // totals it over the whole selection then.
  let searchSeq = 0;
  async function computeSearchShare() {
    if (!data || !searchRe || S.mode === 'sandwich') return;
    if (data.pruned) {
      const seq = ++searchSeq, q = S.search.query, d = data;
      const sel = S.mode === 'diff' ? { ...rangeParams(S.diff.a, 'a_'), ...rangeParams(S.diff.b, 'b_') } : rangeParams(S.selection, '');
      try {
        const r = await getJSON('api/search', params({ ...sel, text: q }));
        if (seq !== searchSeq || d !== data) return;
        S.search.share = S.mode === 'diff'
          ? (r.matched[0] / (r.total[0] || 1) + r.matched[1] / (r.total[1] || 1)) / 2
          : r.matched[0] / (r.total[0] || 1);
        S.search.matches = r.functions;
        showSearchShare();
      } catch (e) {
        if (seq === searchSeq) $('search-share').textContent = String(e.message || e);
      }
      return;
    }
    searchSeq++;
    const nameHit = names.map((s) => searchRe.test(s));
    let sum = 0;
    const st = [data.root];
    while (st.length) {
      const n = st.pop();
      if (n.f >= 0 && nameHit[n.f]) { sum += val(n); continue; }
      if (n.c) for (const c of n.c) st.push(c);
    }
    const rv = val(data.root) || 1;
    S.search.share = sum / rv;
    S.search.matches = nameHit.filter(Boolean).length;
    showSearchShare();
  }
  function showSearchShare() {
    $('search-share').textContent = S.search.matches
      ? fmtPct(S.search.share) + ' of total in ' + S.search.matches + ' function' + (S.search.matches > 1 ? 's' : '')
      : 'no match';
  }
  let searchTimer = 0;
  $('search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(applySearch, 80); });

  // ---- top table ----
  function renderTop() {
    const k = topSort.key, dir = topSort.dir;
    topRows.sort((a, b) => {
      const c = k === 'name' ? a.name.localeCompare(b.name) : a[k] - b[k];
      return c * dir || b.self - a.self || a.name.localeCompare(b.name);
    });
    const T = S.total || 1;
    const tb = document.querySelector('#top-table tbody');
    // One string for all rows, and the rows' clicks taken by the table
    // (below): 300 rows built node by node, each with two listeners, took
    // a tenth of a second before the first render.
    const esc = escHTML;
    const pct = (v) => '<span class="pct">' + fmtPct(v / T) + '</span> ';
    let h = '';
    for (const r of topRows) {
      const name = esc(r.name);
      h += '<tr data-name="' + name + '" data-self="' + r.self + '" data-total="' + r.total + '" data-self-share="' + (100 * r.self / T).toFixed(2) + '">' +
        '<td>' + pct(r.self) + fmtN(r.self) + '</td><td>' + pct(r.total) + fmtN(r.total) + '</td>' +
        '<td class="name"><span class="kind ' + esc(r.kind) + '">' + esc(r.kind) + '</span>' + name +
        '<button class="sw" title="Sandwich view: who calls ' + name + ' and what it calls">callers/callees</button></td></tr>';
    }
    tb.innerHTML = h;
    for (const th of document.querySelectorAll('#top-table th')) {
      th.setAttribute('aria-sort', th.dataset.sort === k ? (dir < 0 ? 'descending' : 'ascending') : 'none');
    }
    S.top = topRows.slice(0, 20).map((r) => ({ ...r, selfShare: r.self / T, totalShare: r.total / T }));
  }
  document.querySelector('#top-table tbody').addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr');
    if (!tr) return;
    if (ev.target.closest('button.sw')) { openSandwich(tr.dataset.name); return; }
    $('search').value = tr.dataset.name;
    applySearch();
  });
  for (const th of document.querySelectorAll('#top-table th')) {
    th.addEventListener('click', () => {
      const k = th.dataset.sort;
      topSort = { key: k, dir: topSort.key === k ? -topSort.dir : (k === 'name' ? 1 : -1) };
      renderTop();
    });
  }

  // ---- loading ----
  function updateDownload() {
    $('download').href = 'api/profile.pb.gz?' + params(rangeParams(S.selection, '')).toString();
  }

  // ---- the view in the address ----
  // The range (or the live span), the diff ranges, the filters, the
  // grouping, the search, the mode and the sandwich's function are kept in
  // the URL's fragment, so that a reload or a shared link shows the same
  // view.
  function writeURL() {
    const p = new URLSearchParams();
    if (S.mode !== 'flame') p.set('mode', S.mode);
    const put = (sel, prefix) => {
      if (sel) { p.set(prefix + 'from', Math.floor(sel.from)); p.set(prefix + 'to', Math.ceil(sel.to)); }
    };
    if (S.live) p.set('live', S.live);
    else put(S.selection, '');
    if (S.mode === 'diff') { put(S.diff.a, 'a_'); put(S.diff.b, 'b_'); }
    for (const [k, v] of Object.entries(S.filters)) if (v) p.set(k, v);
    if (S.group) p.set('group', S.group);
    if (S.mode === 'sandwich' && S.sandwich.fn) p.set('fn', S.sandwich.fn);
    if (S.search.query) p.set('q', S.search.query);
    const h = p.toString();
    if (h !== location.hash.slice(1)) history.replaceState(null, '', h ? '#' + h : location.pathname + location.search);
  }
  function readURL() {
    const p = new URLSearchParams(location.hash.slice(1));
    const range = (prefix) => {
      const f = Number(p.get(prefix + 'from')), t = Number(p.get(prefix + 'to'));
      return Number.isFinite(f) && Number.isFinite(t) && f > 0 && t > f ? { from: f, to: t } : null;
    };
    S.selection = range('');
    S.diff.a = range('a_'); S.diff.b = range('b_');
    for (const k of Object.keys(S.filters)) S.filters[k] = p.get(k) || '';
    S.group = $('group').value = p.get('group') || '';
    if ($('group').value !== S.group) S.group = $('group').value = ''; // not an option
    $('search').value = p.get('q') || '';
    S.sandwich.fn = p.get('fn') || '';
    const m = p.get('mode');
    setMode(m === 'diff' || m === 'sandwich' ? m : 'flame');
    const live = Number(p.get('live'));
    const offered = [...$('live').options].some((o) => o.value && Number(o.value) === live);
    S.live = S.mode !== 'diff' && offered ? live : 0;
    if (S.live) S.selection = liveSelection();
  }

  async function load() {
    writeURL();
    const seq = ++reqSeq;
    const t0 = performance.now();
    let nextTop = null; // the top table's rows, rendered after the graph
    S.loading++;
    setStatus('Loading…');
    try {
      if (S.mode === 'diff') {
        const { a, b } = S.diff;
        if (!a || !b) {
          data = null; zoomNode = null;
          const ctx = flame.getContext('2d'); ctx.clearRect(0, 0, flame.width, flame.height);
          setStatus('Diff: drag on the timeline to set range A (baseline) and range B (comparison).');
          $('breadcrumb').textContent = '';
          S.gen++;
          return;
        }
        const d = await getJSON('api/diff', params({ ...rangeParams(a, 'a_'), ...rangeParams(b, 'b_'), maxnodes: MAX_NODES, minwidth: minWidth() }));
        if (seq !== reqSeq) return;
        S.unit = d.unit; S.total = d.b.total; S.nodes = d.nodes; S.pruned = d.pruned;
        S.diff.totals = [d.a.total, d.b.total];
        data = d;
        prepareTree(d);
        setStatus('A: ' + fmtN(d.a.total) + ' ' + unitWord(d.unit) + '; B: ' +
          fmtN(d.b.total) + '. Red grew, blue shrank (share of each range\'s total).' +
          (d.pruned ? ' ' + fmtN(d.pruned) + ' smallest frames omitted.' : ''));
      } else if (S.mode === 'sandwich') {
        const rp = rangeParams(S.selection, '');
        if (!S.sandwich.fn) {
          data = null; zoomNode = null;
          const ctx = flame.getContext('2d'); ctx.clearRect(0, 0, flame.width, flame.height);
          flame.style.height = '0px';
          renderBreadcrumbEmpty();
          const top = await getJSON('api/top', params({ ...rp, limit: 300 }));
          if (seq !== reqSeq) return;
          S.total = top.total; S.unit = top.unit;
          topRows = top.rows; renderTop();
          setStatus('Sandwich: choose a function with its callers/callees button in the table, or shift+click a frame of the flame graph.');
          S.ready = true;
          S.gen++;
          return;
        }
        const [d, top] = await Promise.all([
          getJSON('api/sandwich', params({ ...rp, fn: S.sandwich.fn, maxnodes: MAX_NODES, minwidth: minWidth() })),
          getJSON('api/top', params({ ...rp, limit: 300 })),
        ]);
        if (seq !== reqSeq) return;
        S.unit = d.unit; S.total = d.total; S.windows = d.windows; S.pruned = d.callers.pruned + d.callees.pruned;
        S.span = d.windows ? { from: d.from, to: d.to } : null;
        S.sandwich.found = d.found; S.sandwich.total = d.callees.root.t;
        data = d;
        prepareTree(d);
        topRows = top.rows;
        renderTop();
        setStatus(d.found
          ? S.sandwich.fn + ': ' + fmtN(d.callees.root.t) + ' of ' + fmtN(d.total) + ' ' + unitWord(d.unit) + ' (' + fmtPct(d.callees.root.t / (d.total || 1)) +
            '). Above: who calls it (outermost at the top); below: what it calls. Click a frame to centre on it.'
          : 'No samples of ' + S.sandwich.fn + ' in this selection.');
      } else {
        const rp = rangeParams(S.selection, '');
        const [d, top] = await Promise.all([
          getJSON('api/flamegraph', params({ ...rp, maxnodes: MAX_NODES, minwidth: minWidth() })),
          getJSON('api/top', params({ ...rp, limit: 300 })),
        ]);
        if (seq !== reqSeq) return;
        S.unit = d.unit; S.total = d.total; S.windows = d.windows; S.nodes = d.nodes; S.pruned = d.pruned;
        S.span = d.windows ? { from: d.from, to: d.to } : null;
        data = d;
        prepareTree(d);
        nextTop = top.rows;
        setStatus(fmtN(d.total) + ' ' + unitWord(d.unit) +
          (d.windows ? ', ' + fmtTime(d.from, true) + ' – ' + fmtTime(d.to, true) + ' UTC' : ': nothing recorded in this range') +
          (d.resolution ? '; a long range: read from ' + resolutionName(d.resolution) +
            ' summaries, so it starts and ends on their boundaries' : '') +
          (d.pruned ? '; ' + fmtN(d.pruned) + ' frames too narrow to see omitted (zoom in to see them)' : ''));
      }
      if (S.mode === 'sandwich') {
        S.loadMs = performance.now() - t0;
        zoomTo(null);
        S.ready = true;
        return;
      }
      // Keep the zoom if the same path exists in the new tree.
      const oldPath = zoomNode ? pathTo(zoomNode).slice(1).map(nodeName) : [];
      zoomNode = null;
      let n = data.root;
      for (const nm of oldPath) {
        const c = (n.c || []).find((c) => nodeName(c) === nm);
        if (!c) break;
        n = c;
      }
      S.loadMs = performance.now() - t0;
      if (searchRe) computeSearchShare();
      zoomTo(n);
      if (nextTop) { topRows = nextTop; renderTop(); }
      if (!S.ready) S.readyAt = performance.now();
      S.ready = true;
    } catch (e) {
      if (seq === reqSeq) setStatus(String(e.message || e), true);
    } finally {
      S.loading--;
      updateDownload();
    }
  }

  async function loadTimeline() {
    try {
      timeline = await getJSON('api/timeline', params());
      if (timeline.counts.length) S.extent = { from: timeline.from, to: timeline.to };
      // One profile (a file, or an agent's first window): its samples
      // carry no time of their own, so there is no shorter range to pick.
      S.single = timeline.windows === 1;
      tl.classList.toggle('single', S.single);
      $('tl-hint').hidden = S.single;
      $('live-box').hidden = S.single && !S.live;
      drawTimeline();
    } catch (e) {
      setStatus(String(e.message || e), true);
    }
  }

  // loadLabels fills each filter list with the values of the selected
  // range that the other filters leave, with their samples where the
  // server knows them; the chosen value stays listed.
  let labelSeq = 0;
  async function loadLabels() {
    const seq = ++labelSeq;
    try {
      const l = await getJSON('api/labels', params(rangeParams(S.mode === 'diff' ? null : S.selection, '')));
      if (seq !== labelSeq) return;
      for (const sel of document.querySelectorAll('[data-filter]')) {
        const k = sel.dataset.filter;
        const vals = l[k] || [];
        const counts = (l.counts || {})[k] || {};
        const chosen = S.filters[k];
        if (chosen && !vals.includes(chosen)) vals.unshift(chosen);
        const label = (v) => v + (v in counts ? ' — ' + fmtN(counts[v]) + ' samples' : '');
        const part = (l.partial || {})[k];
        sel.replaceChildren(new Option('all (' + vals.length + (part ? '+' : '') + ')', ''), ...vals.map((v) => new Option(label(v), v)));
        sel.title = part ? 'More values than listed: those with the most samples, or of the most recent profiles. Narrow the range or another filter to see the rest.' : '';
        sel.value = chosen || '';
        sel.disabled = vals.length === 0;
      }
      S.labelsGen++;
    } catch (e) {
      setStatus(String(e.message || e), true);
    }
  }

  // ---- timeline ----
  let drag = null; // {x0, x1} CSS px while dragging
  function tlX(ms) { const e = S.extent; return (ms - e.from) / (e.to - e.from) * tl.clientWidth; }
  function tlT(x) { const e = S.extent; return e.from + Math.max(0, Math.min(1, x / tl.clientWidth)) * (e.to - e.from); }

  function drawTimeline() {
    const dpr = window.devicePixelRatio || 1;
    const W = tl.clientWidth || 800, H = tl.clientHeight || 90;
    tl.width = Math.round(W * dpr); tl.height = Math.round(H * dpr);
    const ctx = tl.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = '11px system-ui, sans-serif';
    if (!timeline || !timeline.counts.length || !S.extent) {
      ctx.fillStyle = '#888'; ctx.fillText('No profiles stored yet.', 8, H / 2);
      return;
    }
    if (S.single) {
      ctx.fillStyle = '#fbdcc0';
      ctx.fillRect(0, 14, W, H - 30);
      ctx.fillStyle = '#1f2328';
      ctx.fillText('One profile: ' + fmtTime(S.extent.from, true) + ' – ' + fmtTime(S.extent.to, false) +
        ' UTC. Its samples carry no time of their own, so there is no shorter range to select.', 8, H / 2);
      return;
    }
    const c = timeline.counts, max = Math.max(...c, 1e-9);
    const top = 14, plotH = H - 16 - top, bw = W / c.length;
    ctx.fillStyle = '#e8590c';
    for (let i = 0; i < c.length; i++) {
      const h = c[i] / max * plotH;
      if (h > 0) ctx.fillRect(i * bw, top + plotH - h, Math.max(bw - (bw > 3 ? 1 : 0), 1), h);
    }
    ctx.fillStyle = '#656d76';
    ctx.fillText(fmtTime(S.extent.from, true) + ' UTC', 2, H - 3);
    const endLabel = fmtTime(S.extent.to, false);
    ctx.fillText(endLabel, W - ctx.measureText(endLabel).width - 2, H - 3);
    const maxLabel = 'max ' + fmtN(max) + ' samples per ' + (timeline.step >= 1000 ? (timeline.step / 1000) + 's' : timeline.step + 'ms');
    ctx.fillText(maxLabel, W - ctx.measureText(maxLabel).width - 2, 10);
    // A selection dims the rest of the timeline and is outlined.
    const band = (sel, stroke, label) => {
      if (!sel) return;
      const x0 = tlX(sel.from), x1 = Math.max(tlX(sel.to), tlX(sel.from) + 1);
      ctx.strokeStyle = stroke; ctx.lineWidth = 2;
      ctx.strokeRect(x0, top, x1 - x0, plotH);
      ctx.fillStyle = stroke;
      ctx.fillText(label, x0 + 2, 10);
    };
    if (S.mode === 'diff') {
      band(S.diff.a, '#2563eb', 'A');
      band(S.diff.b, '#dc2626', 'B');
    } else if (S.selection) {
      const x0 = tlX(S.selection.from), x1 = tlX(S.selection.to);
      ctx.fillStyle = 'rgba(255,255,255,.7)';
      ctx.fillRect(0, top, x0, plotH);
      ctx.fillRect(x1, top, W - x1, plotH);
      band(S.selection, '#9a3412', 'selection');
    }
    if (drag) {
      ctx.fillStyle = 'rgba(0,0,0,.15)';
      ctx.fillRect(Math.min(drag.x0, drag.x1), top, Math.abs(drag.x1 - drag.x0), plotH);
    }
  }

  function localX(ev) { return ev.clientX - tl.getBoundingClientRect().left; }
  tl.addEventListener('mousedown', (ev) => {
    if (!S.extent || S.single) return;
    drag = { x0: localX(ev), x1: localX(ev) };
    ev.preventDefault();
  });
  window.addEventListener('mousemove', (ev) => {
    if (!drag) return;
    drag.x1 = localX(ev);
    drawTimeline();
  });
  window.addEventListener('mouseup', (ev) => {
    if (!drag) return;
    const d = drag; drag = null;
    d.x1 = localX(ev);
    if (Math.abs(d.x1 - d.x0) < 3) { // a click: select all time
      if (S.mode !== 'diff') setSelection(null);
      else drawTimeline();
      return;
    }
    const sel = { from: tlT(Math.min(d.x0, d.x1)), to: tlT(Math.max(d.x0, d.x1)) };
    if (S.mode === 'diff') {
      S.diff[S.diff.side] = sel;
      // Alternate sides so two drags set both.
      S.diff.side = S.diff.side === 'a' ? 'b' : 'a';
      $('diff-side-' + S.diff.side).checked = true;
      drawTimeline();
      updateRangeLabel();
      load();
    } else {
      setSelection(sel);
    }
  });

  function setSelection(sel) {
    stopLive();
    S.selection = sel;
    drawTimeline();
    updateRangeLabel();
    loadLabels();
    load();
  }
  function updateRangeLabel() {
    const f = (s) => s ? fmtTime(s.from, true) + ' – ' + fmtTime(s.to, false) : 'unset';
    $('range-label').textContent = S.mode === 'diff'
      ? 'A: ' + f(S.diff.a) + '   B: ' + f(S.diff.b)
      : S.live ? 'Live: the last ' + (S.live % 60 ? S.live + ' minutes' : S.live === 60 ? 'hour' : S.live / 60 + ' hours') +
          ', updated ' + fmtTime(Date.now(), false) + ' UTC'
        : (S.selection ? 'Selected ' + f(S.selection) + ' UTC' : 'All time');
  }

  // ---- live ----
  // In live mode the selection is the last S.live minutes, moved up to now
  // every S.liveEvery ms with the timeline, the lists and the graph.
  let liveTimer = 0;
  function liveSelection() { const now = Date.now(); return { from: now - S.live * 60000, to: now }; }
  function startLive(min) {
    clearInterval(liveTimer);
    S.live = min;
    $('live').value = String(min);
    liveTick();
    liveTimer = setInterval(liveTick, S.liveEvery);
  }
  function stopLive() {
    clearInterval(liveTimer);
    liveTimer = 0;
    S.live = 0;
    $('live').value = '';
  }
  function liveTick() {
    if (!S.live) return;
    S.selection = liveSelection();
    S.liveTicks++;
    updateRangeLabel();
    loadTimeline();
    loadLabels();
    load();
  }
  $('live').addEventListener('change', () => {
    const min = Number($('live').value);
    if (min > 0) startLive(min);
    else { stopLive(); updateRangeLabel(); writeURL(); }
  });
  $('group').addEventListener('change', () => {
    S.group = $('group').value;
    zoomNode = null;
    load();
  });

  // ---- controls ----
  $('clear-range').addEventListener('click', () => {
    if (S.mode === 'diff') { S.diff.a = S.diff.b = null; S.diff.side = 'a'; $('diff-side-a').checked = true; drawTimeline(); updateRangeLabel(); load(); }
    else setSelection(null);
  });
  for (const r of document.querySelectorAll('input[name=diffside]')) {
    r.addEventListener('change', () => { S.diff.side = r.value; });
  }
  $('reset').addEventListener('click', () => { if (data) zoomTo(null); });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && data && ev.target === document.body) zoomTo(null);
  });
  // setMode shows the controls of a mode ('flame' or 'diff').
  function setMode(mode) {
    S.mode = mode;
    for (const o of document.querySelectorAll('#modes button')) o.classList.toggle('active', o.dataset.mode === mode);
    $('diff-pick').hidden = S.mode !== 'diff';
    $('top-box').hidden = S.mode === 'diff';
    $('live').disabled = S.mode === 'diff';
    if (S.mode === 'diff' && S.live) stopLive();
    $('reset').hidden = S.mode === 'sandwich';
  }
  for (const b of document.querySelectorAll('#modes button')) {
    b.addEventListener('click', () => {
      if (S.mode === b.dataset.mode) return;
      setMode(b.dataset.mode);
      if (S.mode === 'diff' && !S.diff.b && S.selection) { S.diff.b = S.selection; S.diff.side = 'a'; $('diff-side-a').checked = true; }
      zoomNode = null;
      drawTimeline();
      updateRangeLabel();
      load();
    });
  }
  for (const sel of document.querySelectorAll('[data-filter]')) {
    sel.addEventListener('change', () => {
      S.filters[sel.dataset.filter] = sel.value;
      loadLabels();
      loadTimeline();
      load();
    });
  }
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { drawTimeline(); draw(); }, 100);
  });

  $('legend').innerHTML = Object.keys(legend).map((k) => '<span><i style="background:' + legend[k] + '"></i>' + k + '</span>').join('');

  (async function init() {
    const info = getJSON('api/info', new URLSearchParams()).then((info) => {
      document.title = info.title;
      $('title').textContent = info.title;
    }).catch(() => { /* keep the default title */ });
    readURL();
    updateRangeLabel();
    if ($('search').value.trim()) applySearch();
    // The graph first: the filter lists are the costliest request and the
    // agent serves on one thread, so they are asked for once the graph is
    // in (the timeline is cheap and comes beside it).
    const timeline = loadTimeline();
    // The canvas's font is looked up on its first use (tens of ms in a
    // new tab): done now, while the requests are out.
    const warm = document.createElement('canvas').getContext('2d');
    warm.font = FONT;
    warm.measureText('m');
    await load();
    await Promise.all([loadLabels(), timeline, info]);
    if (S.live) { $('live').value = String(S.live); liveTimer = setInterval(liveTick, S.liveEvery); }
  })();
})();
