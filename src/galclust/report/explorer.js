// galclust explorer: the 2-D map of every galaxy on a canvas, thumbnails on demand.
// Data comes from data.js (window.GALCLUST_DATA); text from the data is only ever set with
// textContent, never parsed as HTML.
(function () {
  "use strict";
  const D = window.GALCLUST_DATA;
  const n = D.ids.length;
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const tooltip = document.getElementById("tooltip");
  const panel = document.getElementById("panel");
  const legend = document.getElementById("legend");
  const select = document.getElementById("colour");
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e6550d", "#31a354", "#756bb1", "#636363",
    "#843c39", "#d6616b", "#3182bd", "#fdae6b", "#74c476", "#9e9ac8", "#bdbdbd", "#e7ba52",
    "#ad494a", "#a55194", "#6baed6", "#fd8d3c", "#a1d99b", "#cedb9c", "#de9ed6"];
  const RAMP = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779",
    "#6ece58", "#b5de2b", "#fde725"];
  let dpr = window.devicePixelRatio || 1;
  let view = { scale: 1, x: 0, y: 0 };
  let groups = [];      // [{colour, members: Int32Array}]
  let selected = -1;

  // --- data bounds and a grid for finding the point under the cursor ---
  let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
  for (let i = 0; i < n; i++) {
    xmin = Math.min(xmin, D.x[i]); xmax = Math.max(xmax, D.x[i]);
    ymin = Math.min(ymin, D.y[i]); ymax = Math.max(ymax, D.y[i]);
  }
  const spanX = (xmax - xmin) || 1, spanY = (ymax - ymin) || 1;
  const CELLS = 128;
  const grid = new Map();
  for (let i = 0; i < n; i++) {
    const key = cellOf(D.x[i], D.y[i]);
    if (!grid.has(key)) grid.set(key, []);
    grid.get(key).push(i);
  }
  function cellOf(x, y) {
    const cx = Math.min(CELLS - 1, Math.floor((x - xmin) / spanX * CELLS));
    const cy = Math.min(CELLS - 1, Math.floor((y - ymin) / spanY * CELLS));
    return cx * CELLS + cy;
  }

  // --- view: data -> screen (CSS pixels) ---
  function fit() {
    const w = canvas.clientWidth, h = canvas.clientHeight, pad = 24;
    view.scale = Math.min((w - 2 * pad) / spanX, (h - 2 * pad) / spanY);
    view.x = w / 2 - view.scale * (xmin + spanX / 2);
    view.y = h / 2 + view.scale * (ymin + spanY / 2);
  }
  function sx(i) { return view.x + view.scale * D.x[i]; }
  function sy(i) { return view.y - view.scale * D.y[i]; }
  function toData(px, py) { return [(px - view.x) / view.scale, (view.y - py) / view.scale]; }

  function resize() {
    dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(canvas.clientWidth * dpr);
    canvas.height = Math.round(canvas.clientHeight * dpr);
    draw();
  }

  let pending = false;
  function schedule() {  // pans and zooms redraw once per frame, however many events come
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }

  function draw() {
    const t0 = performance.now();
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
    const size = n > 20000 ? 2 : 3.5, half = size / 2;
    for (const g of groups) {
      ctx.fillStyle = g.colour;
      const m = g.members;
      for (let k = 0; k < m.length; k++) {
        const i = m[k];
        ctx.fillRect(sx(i) - half, sy(i) - half, size, size);
      }
    }
    if (selected >= 0) {
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#e8710a";
      for (const j of D.neighbours[selected]) ring(j, 5);
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2.5;
      ring(selected, 8);
    }
    window.galclustExplorer.lastDrawMs = performance.now() - t0;
  }
  function ring(i, r) {
    ctx.beginPath();
    ctx.arc(sx(i), sy(i), r, 0, 2 * Math.PI);
    ctx.stroke();
  }

  // --- colours ---
  function colourBy(name) {
    const col = D.columns[name];
    legend.replaceChildren();
    const title = document.createElement("strong");
    title.textContent = name;
    legend.appendChild(title);
    const buckets = new Map();
    const add = (colour, i) => {
      if (!buckets.has(colour)) buckets.set(colour, []);
      buckets.get(colour).push(i);
    };
    if (!col) {
      for (let i = 0; i < n; i++) add("#1f77b4", i);
    } else if (col.kind === "category") {
      col.categories.forEach((c, k) => {
        const row = document.createElement("div");
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = PALETTE[k % PALETTE.length];
        row.appendChild(sw);
        row.appendChild(document.createTextNode(c));
        legend.appendChild(row);
      });
      let none = false;
      for (let i = 0; i < n; i++) {
        const v = col.values[i];
        if (v < 0) none = true;
        add(v < 0 ? "#cccccc" : PALETTE[v % PALETTE.length], i);
      }
      if (none) {  // unclassified (cluster -1) or no value
        const row = document.createElement("div");
        const sw = document.createElement("span");
        sw.className = "swatch";
        sw.style.background = "#cccccc";
        row.append(sw, document.createTextNode(name === "cluster" ? "unclassified" : "none"));
        legend.appendChild(row);
      }
    } else {
      let lo = Infinity, hi = -Infinity;
      for (const v of col.values) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      const span = (hi - lo) || 1;
      for (let i = 0; i < n; i++) {
        const v = col.values[i];
        if (v === null) { add("#cccccc", i); continue; }
        const k = Math.min(RAMP.length - 1, Math.floor((v - lo) / span * RAMP.length));
        add(RAMP[k], i);
      }
      const ramp = document.createElement("div");
      ramp.className = "ramp";
      ramp.style.background = "linear-gradient(to right, " + RAMP.join(", ") + ")";
      const ends = document.createElement("div");
      ends.textContent = fmt(lo) + " \u2013 " + fmt(hi);
      legend.appendChild(ramp);
      legend.appendChild(ends);
    }
    // the biggest group first, so that small groups stay visible on top
    groups = Array.from(buckets, ([colour, members]) => ({ colour, members: Int32Array.from(members) }))
      .sort((a, b) => b.members.length - a.members.length);
    draw();
  }
  function fmt(v) {
    if (v === null || v === undefined) return "\u2013";
    if (typeof v !== "number") return String(v);
    return Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.01) ? v.toExponential(2)
      : String(Math.round(v * 1000) / 1000);
  }

  // --- thumbnails: a sheet is fetched by the browser only when a tile of it is shown ---
  function thumb(i, scale) {
    const T = D.thumbs, s = T.size * scale;
    const perSheet = T.per_row * T.per_row;
    const sheet = Math.floor(i / perSheet), k = i % perSheet;
    const div = document.createElement("div");
    div.className = "thumb";
    div.style.width = div.style.height = s + "px";
    div.style.backgroundImage = "url(\"" + T.sheets[sheet] + "\")";  // quoted by galclust
    div.style.backgroundSize = (T.per_row * s) + "px auto";
    div.style.backgroundPosition = (-(k % T.per_row) * s) + "px " + (-Math.floor(k / T.per_row) * s) + "px";
    div.dataset.index = String(i);
    div.title = D.ids[i];
    return div;
  }

  function nearest(px, py, radius) {
    const [x, y] = toData(px, py);
    const reach = radius / view.scale;
    const c0x = Math.floor((x - reach - xmin) / spanX * CELLS), c1x = Math.floor((x + reach - xmin) / spanX * CELLS);
    const c0y = Math.floor((y - reach - ymin) / spanY * CELLS), c1y = Math.floor((y + reach - ymin) / spanY * CELLS);
    let best = -1, bestD = radius * radius;
    for (let cx = Math.max(0, c0x); cx <= Math.min(CELLS - 1, c1x); cx++) {
      for (let cy = Math.max(0, c0y); cy <= Math.min(CELLS - 1, c1y); cy++) {
        const members = grid.get(cx * CELLS + cy);
        if (!members) continue;
        for (const i of members) {
          const dx = sx(i) - px, dy = sy(i) - py, d = dx * dx + dy * dy;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  function selectGalaxy(i) {
    selected = i;
    panel.replaceChildren();
    const h = document.createElement("h2");
    h.id = "selected-id";
    h.textContent = D.ids[i];
    panel.appendChild(h);
    const big = thumb(i, 3);
    big.classList.add("big");
    big.id = "selected-thumb";
    panel.appendChild(big);
    const table = document.createElement("table");
    const rows = [];
    for (const key of Object.keys(D.info)) rows.push([key, D.info[key][i]]);
    const current = select.value;
    if (current && !(current in D.info)) {
      const col = D.columns[current];
      const v = col.values[i];
      rows.push([current, col.kind === "category" ? (v < 0 ? null : col.categories[v]) : v]);
    }
    for (const [key, value] of rows) {
      const tr = document.createElement("tr");
      const a = document.createElement("td"), b = document.createElement("td");
      a.textContent = key;
      b.textContent = fmt(value);
      tr.append(a, b);
      table.appendChild(tr);
    }
    panel.appendChild(table);
    const label = document.createElement("p");
    label.textContent = "Nearest neighbours in latent space (click to go):";
    panel.appendChild(label);
    const box = document.createElement("div");
    box.className = "neighbours";
    box.id = "neighbours";
    for (const j of D.neighbours[i]) {
      const t = thumb(j, 1.5);
      t.addEventListener("click", () => selectGalaxy(j));
      box.appendChild(t);
    }
    panel.appendChild(box);
    draw();
  }

  // --- interaction ---
  let drag = null;
  let hovered = -1;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, y: e.offsetY, moved: false }; });
  window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  canvas.addEventListener("mousemove", (e) => {
    if (drag && (e.buttons & 1)) {
      const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      view.x += dx; view.y += dy;
      drag.x = e.offsetX; drag.y = e.offsetY;
      tooltip.hidden = true;
      hovered = -1;
      schedule();
      return;
    }
    const i = nearest(e.offsetX, e.offsetY, 8);
    if (i < 0) { tooltip.hidden = true; hovered = -1; return; }
    if (i !== hovered) {  // rebuilt only when another galaxy comes under the cursor
      hovered = i;
      tooltip.replaceChildren(thumb(i, 1));
      const caption = document.createElement("div");
      const info = D.info.cluster ? " \u00b7 cluster " + fmt(D.info.cluster[i]) : "";
      caption.textContent = D.ids[i] + info;
      tooltip.appendChild(caption);
    }
    tooltip.style.left = (e.offsetX + 14) + "px";
    tooltip.style.top = (e.offsetY + 14) + "px";
    tooltip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; hovered = -1; });
  canvas.addEventListener("click", (e) => {
    if (drag && drag.moved) return;
    const i = nearest(e.offsetX, e.offsetY, 10);
    if (i >= 0) selectGalaxy(i);
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const f = Math.exp(-e.deltaY * 0.0015);
    view.x = e.offsetX - (e.offsetX - view.x) * f;
    view.y = e.offsetY - (e.offsetY - view.y) * f;
    view.scale *= f;
    schedule();
  }, { passive: false });
  document.getElementById("reset").addEventListener("click", () => { fit(); draw(); });
  for (const name of Object.keys(D.columns)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.appendChild(option);
  }
  function recolour() {
    colourBy(select.value);
    if (selected >= 0) selectGalaxy(selected);  // the panel shows the new column's value
  }
  select.addEventListener("change", recolour);
  window.addEventListener("resize", resize);

  // for scripts and tests: where a galaxy is on screen, and what is selected
  window.galclustExplorer = {
    count: n,
    lastDrawMs: 0,
    screenPosition: (i) => {
      const r = canvas.getBoundingClientRect();
      return [r.left + sx(i), r.top + sy(i)];
    },
    select: selectGalaxy,
    selected: () => selected,
    colourBy: (name) => { select.value = name; recolour(); },
    redraw: () => draw(),
  };
  fit();
  colourBy(select.value);
  resize();
})();
