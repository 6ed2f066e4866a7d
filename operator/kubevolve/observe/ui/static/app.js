// The run browser's page: routes on the URL's hash (#/, #/run/RUN, #/run/RUN/node/NODE), polls the API for
// what changed, and draws the evolution tree on a canvas so that thousands of nodes stay usable when zoomed.
// Text from the store (code, prompts, motivations) only ever enters the page as text (textContent); the
// only markup inserted is the SVG the server drew, whose text it escaped.
(function () {
  "use strict";

  var POLL_MS = 2000;          // while a run is going
  var POLL_DONE_MS = 10000;    // once it has finished (it may be resumed)
  var CHARTS_MS = 3000;        // charts and tree are redrawn at most this often while nodes arrive
  var LATEST = 15;             // rows in "latest candidates"
  var SEARCH_MAX = 20;

  var $ = function (id) { return document.getElementById(id); };
  var view = { run: null, version: 0, rows: new Map(), opened: Date.now(), timer: null, chartsAt: 0,
               chartsTimer: null, chartsVersion: -1, tree: null, node: null, generation: 0 };

  // ---- small helpers -----------------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function api(path) {
    return fetch(path, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().catch(function () { return { error: r.status + " " + r.statusText }; }).then(function (body) {
        if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
        return body;
      });
    });
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") return "—";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
    return Number(value.toPrecision(digits || 6)).toString();
  }

  function duration(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? h + "h " + String(m).padStart(2, "0") + "m" : m + "m " + String(s % 60).padStart(2, "0") + "s";
  }

  function when(ts) { return new Date(ts * 1000).toLocaleString(); }

  function showError(message) {
    $("error").textContent = message || "";
    $("error").hidden = !message;
    $("live").className = "live " + (message ? "off" : "on");
  }

  function enc(id) { return encodeURIComponent(id); }
  function runHref(run) { return "#/run/" + enc(run); }
  function nodeHref(id) { return runHref(view.run) + "/node/" + enc(id); }

  function nodeLink(row, label) {
    return el("a", { href: nodeHref(row.id), class: "mono", text: label || row.id });
  }

  var stageColours = {};
  function stageChip(stage) {
    var chip = el("span", { class: "stage", text: stage });
    if (stageColours[stage]) chip.style.setProperty("--stage", stageColours[stage]);
    return chip;
  }

  // ---- routing -----------------------------------------------------------------------------------------
  function route() {
    var parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "run" && parts[1]) {
      if (view.run !== parts[1]) openRun(parts[1]);
      if (parts[2] === "node" && parts[3]) openNode(parts[3]); else closeNode();
    } else {
      openRuns();
    }
  }

  function stopPolling() {
    clearTimeout(view.timer);
    clearTimeout(view.chartsTimer);
    view.chartsTimer = null;
    view.generation += 1;  // answers to requests of the previous view are dropped
  }

  // ---- the run list ------------------------------------------------------------------------------------
  function openRuns() {
    stopPolling();
    view.run = null;
    closeNode();
    $("run-view").hidden = true;
    $("runs-view").hidden = false;
    $("crumb").textContent = "";
    $("subtitle").textContent = "";
    var generation = view.generation;
    (function poll() {
      api("api/runs").then(function (body) {
        if (generation !== view.generation) return;
        showError("");
        if (body.default && !location.hash) { location.hash = runHref(body.default); return; }
        renderRuns(body.runs);
        $("live").textContent = "live";
      }).catch(function (err) { if (generation === view.generation) showError(err.message); })
        .then(function () { if (generation === view.generation) view.timer = setTimeout(poll, POLL_DONE_MS); });
    })();
  }

  // A local run that says Running but whose process is gone is shown dead, with why ("kubevolve run" resumes it).
  function phaseBadge(run) {
    if (run.dead) return el("span", { class: "phase Dead", text: "Dead", title: run.phase + ", but " + run.dead });
    return el("span", { class: "phase " + run.phase, text: run.phase });
  }

  function renderRuns(runs) {
    var body = $("runs-table").tBodies[0];
    body.textContent = "";
    runs.forEach(function (r) {
      var progress = r.candidates + (r.max_candidates ? " / " + r.max_candidates : "");
      body.appendChild(el("tr", {}, [
        el("td", {}, [el("a", { href: runHref(r.id), text: r.id })]),
        el("td", { text: r.task }),
        el("td", {}, [phaseBadge(r)]),
        el("td", { text: progress }),
        el("td", { text: fmt(r.best_score) }),
        el("td", { text: when(r.created_at) }),
        el("td", { class: "ellipsis", text: r.message, title: r.message }),
      ]));
    });
    $("no-runs").hidden = runs.length > 0;
  }

  // ---- one run -----------------------------------------------------------------------------------------
  function openRun(run) {
    stopPolling();
    view.run = run;
    view.version = 0;
    view.rows = new Map();
    view.opened = Date.now();
    view.chartsVersion = -1;
    view.tree = null;
    view.loaded = false;
    $("runs-view").hidden = true;
    $("run-view").hidden = false;
    $("crumb").textContent = run;
    ["cards", "outcomes", "score", "grid"].forEach(function (id) { $(id).textContent = ""; });
    $("latest").tBodies[0].textContent = "";
    resetZoom();
    var generation = view.generation;
    (function poll() {
      var done = false;
      api("api/runs/" + enc(run) + "/poll?since=" + view.version).then(function (body) {
        if (generation !== view.generation) return;
        showError("");
        var fresh = [];
        body.nodes.forEach(function (row) {
          if (!view.rows.has(row.id) && view.loaded) fresh.push(row.id);
          view.rows.set(row.id, row);
        });
        var changed = body.version !== view.version;
        view.version = body.version;
        view.loaded = true;
        done = body.run.dead || ["Succeeded", "Failed", "Stopped"].indexOf(body.run.phase) >= 0;
        renderRun(body.run);
        if (changed || body.nodes.length) renderLatest(fresh);
        if (body.version !== view.chartsVersion) scheduleCharts(generation);
        $("live").textContent = "live · " + view.rows.size + " nodes · updated " + new Date().toLocaleTimeString();
        document.documentElement.setAttribute("data-version", String(view.version));
      }).catch(function (err) { if (generation === view.generation) showError(err.message); })
        .then(function () {
          if (generation === view.generation) view.timer = setTimeout(poll, done ? POLL_DONE_MS : POLL_MS);
        });
    })();
  }

  function renderRun(run) {
    document.title = "kubevolve · " + run.id;
    stageColours = run.stage_colours;
    var sub = $("subtitle");
    sub.textContent = "";
    sub.appendChild(phaseBadge(run));
    sub.appendChild(document.createTextNode(
      "  task " + run.task + " · metric " + run.metric + " (" + run.direction + ")" +
      (run.sampler ? " · sampler " + run.sampler + (run.features.length ? " over " + run.features.join(", ") : "") : "")));
    var evaluated = run.by_stage.evaluated || 0;
    var cards = [
      ["candidates", String(run.candidates)],
      ["evaluated", evaluated + " (" + Math.round(100 * evaluated / Math.max(1, run.candidates)) + "%)"],
      ["best " + run.metric, fmt(run.best_metric)],
      ["initial " + run.metric, fmt(run.initial_metric)],
      ["islands", String(run.islands)],
      ["LLM cost", "$" + run.llm_cost_usd.toFixed(4)],
      ["duration", duration(run.seconds)],
    ];
    var box = $("cards");
    box.textContent = "";
    cards.forEach(function (c) {
      box.appendChild(el("div", { class: "card" }, [el("div", { class: "k", text: c[0] }), el("div", { class: "v", text: c[1] })]));
    });
    if (run.best) {
      var best = box.children[2];
      best.appendChild(el("div", { class: "k" }, ["node ", nodeLink(run.best, run.best.id.slice(0, 10))]));
    }
    var budget = run.budget || {};
    var parts = [], fill = 0;
    if (budget.maxCandidates) {
      fill = run.candidates / budget.maxCandidates;
      parts.push(run.candidates + " of " + budget.maxCandidates + " candidates");
    }
    if (budget.deadlineSeconds) {
      fill = Math.max(fill, run.seconds / budget.deadlineSeconds);
      parts.push(duration(run.seconds) + " of " + duration(budget.deadlineSeconds));
    }
    if (budget.maxLlmCost) {
      fill = Math.max(fill, run.llm_cost_usd / budget.maxLlmCost);
      parts.push("$" + run.llm_cost_usd.toFixed(2) + " of $" + budget.maxLlmCost);
    }
    if (budget.targetScore !== undefined && budget.targetScore !== null) parts.push("target " + run.metric + " " + fmt(budget.targetScore));
    $("budget-fill").style.width = Math.min(100, 100 * fill).toFixed(1) + "%";
    $("budget-text").textContent = parts.length ? "budget: " + parts.join(" · ") : "no budget limit";
    $("message").textContent = run.message || "";
  }

  function renderLatest(fresh) {
    var rows = Array.from(view.rows.values()).sort(function (a, b) { return b.seq - a.seq; }).slice(0, LATEST);
    var body = $("latest").tBodies[0];
    body.textContent = "";
    rows.forEach(function (row) {
      var what = row.error || row.motivation;
      var tr = el("tr", { "data-id": row.id }, [
        el("td", { text: "#" + row.seq }),
        el("td", {}, [nodeLink(row)]),
        el("td", {}, [stageChip(row.stage)]),
        el("td", { text: fmt(row.score) }),
        el("td", { text: String(row.island) }),
        el("td", { class: "ellipsis", text: what, title: what }),
      ]);
      if (fresh.indexOf(row.id) >= 0) tr.className = "fresh";
      body.appendChild(tr);
    });
  }

  // ---- charts and the tree, redrawn when the run changed (throttled) -----------------------------------
  function scheduleCharts(generation) {
    if (view.chartsTimer) return;
    var wait = Math.max(0, view.chartsAt + CHARTS_MS - Date.now());
    view.chartsTimer = setTimeout(function () {
      view.chartsTimer = null;
      view.chartsAt = Date.now();
      var base = "api/runs/" + enc(view.run);
      Promise.all([api(base + "/charts"), api(base + "/tree")]).then(function (got) {
        if (generation !== view.generation) return;
        var charts = got[0];
        $("outcomes").innerHTML = charts.outcomes;  // SVG drawn (and escaped) by the server
        $("score").innerHTML = charts.score;
        $("grid").hidden = !charts.grid;
        $("grid").innerHTML = charts.grid || "";
        $("grid-note").textContent = charts.grid_note ||
          "The best program in each cell of the feature grid, per island, as the sampler holds them now; click a cell to open it.";
        setTree(got[1]);
        view.chartsVersion = Math.min(charts.version, got[1].version);
        markSelected();
        document.documentElement.setAttribute("data-charts", String(view.chartsVersion));
      }).catch(function (err) { if (generation === view.generation) showError(err.message); });
    }, wait);
  }

  // the tree: positions from the server's layout (depth, row); zoom keeps dots at a readable size
  var canvas = $("tree"), ctx = canvas.getContext("2d");
  var zoom = { k: 1, tx: 0, ty: 0 }, drag = null;
  var MARGIN = { left: 24, right: 24, top: 14, bottom: 14 };

  function resetZoom() { zoom = { k: 1, tx: 0, ty: 0 }; }

  function setTree(tree) {
    view.tree = tree;
    // taller for more rows (up to a point: beyond it, zoom), so a small run's tree is readable at once
    canvas.style.height = Math.max(420, Math.min(900, tree.rows * 7 + 40)) + "px";
    var legend = $("tree-legend");
    legend.textContent = "";
    var mode = $("tree-colour").value;
    var chip = function (colour, label) {
      var i = el("i");
      i.style.background = colour;
      return el("span", { class: "chip" }, [i, label]);
    };
    if (mode === "island") {
      var islands = Array.from(new Set(tree.island)).sort(function (a, b) { return a - b; });
      islands.forEach(function (i) { legend.appendChild(chip(tree.colours.islands[i % tree.colours.islands.length], "island " + i)); });
    } else if (mode === "outcome") {
      Object.keys(tree.colours.stages).forEach(function (s) { legend.appendChild(chip(tree.colours.stages[s], s)); });
    } else {
      legend.appendChild(chip("linear-gradient(90deg, #c6dbef, #6baed6, #006d2c)", "score, low to high"));
      legend.appendChild(chip("#c7c7c7", "no score"));
    }
    legend.appendChild(chip(tree.colours.accent, "path to the best"));
    if (tree.hidden) legend.appendChild(el("span", { class: "chip", text: tree.hidden + " failed leaves left out" }));
    drawTree();
  }

  // zoom stretches rows apart as far as it takes, generations only until they are DEPTH_PX apart
  var DEPTH_PX = 140;
  function baseScales() {
    var t = view.tree;
    return {
      sx: (canvas.clientWidth - MARGIN.left - MARGIN.right) / Math.max(1, t.depth),
      sy: (canvas.clientHeight - MARGIN.top - MARGIN.bottom) / Math.max(1, t.rows),
    };
  }
  function kx(k) { return Math.min(k, Math.max(1, DEPTH_PX / baseScales().sx)); }

  function scales() {
    var w = canvas.clientWidth, h = canvas.clientHeight, base = baseScales(), sx = base.sx, sy = base.sy;
    var kX = kx(zoom.k);
    return {
      x: function (d) { return MARGIN.left + d * sx * kX + zoom.tx; },
      y: function (r) { return MARGIN.top + (r + 0.5) * sy * zoom.k + zoom.ty; },
      r: Math.max(2, Math.min(7, sy * zoom.k * 0.42)),
      w: w, h: h,
    };
  }

  function fillOf(t, i, mode) {
    if (mode === "island") return t.stage[i] === "evaluated" ? t.colours.islands[t.island[i] % t.colours.islands.length] : "#c7c7c7";
    if (mode === "outcome") return t.colours.stages[t.stage[i]] || "#c7c7c7";
    return t.fill[i];
  }

  function drawTree() {
    var t = view.tree;
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!t || !t.id.length) return;
    var s = scales(), n = t.id.length, mode = $("tree-colour").value;
    var xs = new Float64Array(n), ys = new Float64Array(n), i;
    for (i = 0; i < n; i++) { xs[i] = s.x(t.x[i]); ys[i] = s.y(t.y[i]); }
    var visible = function (x, y) { return x > -20 && x < w + 20 && y > -20 && y < h + 20; };
    ctx.lineWidth = 0.8;
    ctx.strokeStyle = "#b6bec7";
    ctx.beginPath();
    for (i = 0; i < n; i++) {
      var p = t.parent[i];
      if (p < 0 || (!visible(xs[i], ys[i]) && !visible(xs[p], ys[p]))) continue;
      var xm = (xs[p] + xs[i]) / 2;
      ctx.moveTo(xs[p], ys[p]);
      ctx.bezierCurveTo(xm, ys[p], xm, ys[i], xs[i], ys[i]);
    }
    ctx.stroke();
    var index = new Map(t.id.map(function (id, k) { return [id, k]; }));
    var path = t.best_path.map(function (id) { return index.get(id); });
    if (path.length > 1) {
      ctx.lineWidth = 3;
      ctx.lineCap = "round";
      ctx.strokeStyle = t.colours.accent;
      ctx.beginPath();
      for (i = 1; i < path.length; i++) {
        var a = path[i - 1], b = path[i], m = (xs[a] + xs[b]) / 2;
        ctx.moveTo(xs[a], ys[a]);
        ctx.bezierCurveTo(m, ys[a], m, ys[b], xs[b], ys[b]);
      }
      ctx.stroke();
    }
    for (i = 0; i < n; i++) {
      if (!visible(xs[i], ys[i])) continue;
      var failed = t.stage[i] !== "evaluated";
      ctx.fillStyle = fillOf(t, i, mode);
      ctx.beginPath();
      ctx.arc(xs[i], ys[i], failed && mode === "score" ? s.r * 0.7 : s.r, 0, 2 * Math.PI);
      ctx.fill();
    }
    path.forEach(function (k) {
      ctx.strokeStyle = t.colours.accent;
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      ctx.arc(xs[k], ys[k], s.r + 1.8, 0, 2 * Math.PI);
      ctx.stroke();
    });
    var selected = view.node && index.get(view.node);
    if (selected !== undefined && selected !== null && selected !== false) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(xs[selected], ys[selected], s.r + 4, 0, 2 * Math.PI);
      ctx.stroke();
    }
    canvas.setAttribute("data-nodes", String(n));
  }

  function nearest(mx, my) {
    var t = view.tree;
    if (!t) return -1;
    var s = scales(), best = -1, bestD = Math.pow(Math.max(7, s.r + 3), 2);
    for (var i = 0; i < t.id.length; i++) {
      var dx = s.x(t.x[i]) - mx, dy = s.y(t.y[i]) - my, d = dx * dx + dy * dy;
      if (d <= bestD) { best = i; bestD = d; }
    }
    return best;
  }

  function zoomAt(factor, mx, my) {
    var t = view.tree;
    if (!t) return;
    var rowPx = baseScales().sy;
    var k = Math.min(Math.max(0.5, zoom.k * factor), Math.max(40, 60 / rowPx));
    zoom.tx = mx - MARGIN.left - (mx - MARGIN.left - zoom.tx) * (kx(k) / kx(zoom.k));
    zoom.ty = my - MARGIN.top - (my - MARGIN.top - zoom.ty) * (k / zoom.k);
    zoom.k = k;
    drawTree();
  }

  // bring a node into the tree's view: `closer` also zooms in until it stands apart from its neighbours;
  // otherwise the view moves only if the node is outside it
  function locate(id, closer) {
    var t = view.tree;
    if (!t) return;
    var i = t.id.indexOf(id);
    if (i < 0) return;
    var rowPx = baseScales().sy;
    if (closer && rowPx * zoom.k < 8) zoom.k = Math.min(Math.max(40, 60 / rowPx), 8 / rowPx);
    var s = scales(), x = s.x(t.x[i]), y = s.y(t.y[i]);
    var box = canvas.getBoundingClientRect(), panel = $("node");  // the open node panel covers the right
    var right = panel.hidden ? s.w : Math.max(60, Math.min(s.w, panel.getBoundingClientRect().left - box.left));
    if (closer || x < 0 || x > right || y < 0 || y > s.h) {
      zoom.tx += right / 2 - x;
      zoom.ty += s.h / 2 - y;
    }
    drawTree();
  }

  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var box = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - box.left, e.clientY - box.top);
  }, { passive: false });
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, tx: zoom.tx, ty: zoom.ty, moved: false };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", function (e) {
    var box = canvas.getBoundingClientRect(), tip = $("tree-tip");
    if (drag) {
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
      if (drag.moved) { zoom.tx = drag.tx + dx; zoom.ty = drag.ty + dy; drawTree(); tip.hidden = true; return; }
    }
    var i = nearest(e.clientX - box.left, e.clientY - box.top), t = view.tree;
    if (i < 0) { tip.hidden = true; return; }
    tip.textContent = "#" + t.seq[i] + " · " + t.stage[i] + (t.score[i] !== null ? " · score " + fmt(t.score[i]) : "") +
      " · island " + t.island[i];
    tip.style.left = (e.clientX - box.left + 12) + "px";
    tip.style.top = (e.clientY - box.top + 12) + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("pointerup", function (e) {
    var box = canvas.getBoundingClientRect(), wasDrag = drag && drag.moved;
    drag = null;
    canvas.classList.remove("dragging");
    if (wasDrag) return;
    var i = nearest(e.clientX - box.left, e.clientY - box.top);
    if (i >= 0) location.hash = nodeHref(view.tree.id[i]);
  });
  canvas.addEventListener("pointerleave", function () { $("tree-tip").hidden = true; });
  canvas.addEventListener("dblclick", function (e) {
    var box = canvas.getBoundingClientRect();
    zoomAt(2, e.clientX - box.left, e.clientY - box.top);
  });
  $("tree-in").addEventListener("click", function () { zoomAt(1.6, canvas.clientWidth / 2, canvas.clientHeight / 2); });
  $("tree-out").addEventListener("click", function () { zoomAt(1 / 1.6, canvas.clientWidth / 2, canvas.clientHeight / 2); });
  $("tree-fit").addEventListener("click", function () { resetZoom(); drawTree(); });
  $("tree-colour").addEventListener("change", function () { if (view.tree) setTree(view.tree); });
  window.addEventListener("resize", function () { if (view.tree) drawTree(); });

  // clicks on the server's SVG charts (score dots, failure ticks, grid cells) open the node
  ["score", "grid"].forEach(function (id) {
    $(id).addEventListener("click", function (e) {
      var target = e.target.closest("[data-id]");
      if (target) location.hash = nodeHref(target.getAttribute("data-id"));
    });
  });

  function markSelected() {
    document.querySelectorAll("svg .selected").forEach(function (n) { n.classList.remove("selected"); });
    if (!view.node) return;
    document.querySelectorAll("svg [data-id]").forEach(function (n) {
      if (n.getAttribute("data-id") === view.node) n.classList.add("selected");
    });
  }

  // ---- one node ----------------------------------------------------------------------------------------
  function closeNode() {
    $("node").hidden = true;
    if (view.node) { view.node = null; markSelected(); if (view.tree) drawTree(); }
  }

  function openNode(id) {
    var generation = view.generation;
    api("api/nodes/" + enc(id)).then(function (body) {
      if (generation !== view.generation) return;
      showError("");
      view.node = body.node.id;
      renderNode(body);
      markSelected();
      locate(body.node.id, false);
    }).catch(function (err) { if (generation === view.generation) showError(err.message); });
  }

  function section(title, children) {
    return [el("h3", { text: title })].concat(children);
  }

  function pre(text, cls) { return el("pre", { class: cls || "code", text: text }); }

  function codeBlock(code) {
    var block = el("pre", { class: "code numbered" });
    code.split("\n").forEach(function (line, i, all) {
      if (i === all.length - 1 && line === "") return;
      block.appendChild(el("span", { text: line }));
      block.appendChild(document.createTextNode("\n"));
    });
    return block;
  }

  function diffBlock(diff) {
    var block = el("pre", { class: "code diff" });
    diff.split("\n").forEach(function (line) {
      var cls = /^@@/.test(line) ? "hunk" : /^(---|\+\+\+)/.test(line) ? "meta" : /^\+/.test(line) ? "add" : /^-/.test(line) ? "del" : "ctx";
      block.appendChild(el("span", { class: cls, text: line }));
      block.appendChild(document.createTextNode("\n"));
    });
    return block;
  }

  function kvTable(obj, unit) {
    var keys = Object.keys(obj || {});
    if (!keys.length) return el("p", { class: "empty", text: "none" });
    return el("table", { class: "table kv" }, [el("tbody", {}, keys.map(function (k) {
      return el("tr", {}, [el("td", { text: k }), el("td", { class: "mono", text: fmt(obj[k]) + (unit || "") })]);
    }))]);
  }

  function relatives(label, rows) {
    if (!rows || !rows.length) return null;
    var span = el("span", {}, [label + ": "]);
    rows.forEach(function (row, i) {
      if (i) span.appendChild(document.createTextNode(", "));
      var name = row.missing ? row.id : "#" + row.seq + " " + row.id.slice(0, 8);
      span.appendChild(el("a", { href: nodeHref(row.id), class: "mono", text: name }));
    });
    return span;
  }

  function renderNode(body) {
    var n = body.node;
    $("node-title").textContent = "";
    $("node-title").appendChild(document.createTextNode("#" + n.seq + " · " + n.id + " "));
    $("node-title").appendChild(stageChip(n.stage));
    var links = $("node-links");
    links.textContent = "";
    [relatives("parent", body.parents), relatives("inspirations", body.inspirations),
     relatives("children", body.children), relatives("retry of", body.retry_of ? [body.retry_of] : [])]
      .forEach(function (s) { if (s) links.appendChild(s); });
    if (!body.children.length) links.appendChild(el("span", { text: "no children yet" }));
    var show = el("a", { href: "#", text: "show in the tree" });
    show.addEventListener("click", function (e) {
      e.preventDefault();
      locate(n.id, true);
      $("tree-box").scrollIntoView({ block: "center" });
    });
    links.appendChild(show);

    var out = [];
    var facts = [["outcome", n.stage], ["score", fmt(n.score)], ["metric value", fmt(body.metric_value)],
                 ["island", n.island], ["generation", n.generation], ["proposer", n.proposer || "—"],
                 ["attempt", n.attempt], ["committed", when(n.created_at)]];
    out.push(el("dl", {}, facts.reduce(function (acc, f) {
      return acc.concat([el("dt", { text: f[0] }), el("dd", { text: String(f[1]) })]);
    }, [])));
    out = out.concat(section("Motivation", [el("p", { class: "text", text: n.motivation || "—" })]));
    if (n.error) out = out.concat(section("Why it failed", [el("p", { class: "text failure", text: n.error })]));
    if (n.log_tail) out = out.concat(section("Log tail", [pre(n.log_tail, "code log")]));
    out = out.concat(section("Metrics", [kvTable(n.metrics)]));
    var timings = {};
    Object.keys(n.timings || {}).forEach(function (k) { timings[k] = n.timings[k]; });
    out = out.concat(section("Stage timings (seconds)", [kvTable(timings)]));
    if (Object.keys(n.llm || {}).length) out = out.concat(section("LLM usage", [kvTable(n.llm)]));

    var insight = body.insight;
    out = out.concat(section("Insight", [insight
      ? el("div", { class: "item", id: "node-insight" }, [el("p", { class: "text", text: insight.text }),
          el("div", { class: "meta mono", text: "insight " + insight.id })])
      : el("p", { class: "empty", text: n.stage === "proposed" ? "Not evaluated yet." : "Not analysed yet." })]));

    var r = body.retrieved, items = [];
    r.insights.forEach(function (i) {
      items.push(el("div", { class: "item" }, [el("div", { class: "meta", text: "insight " + i.id + " (lesson of an earlier experiment)" }),
        el("p", { class: "text", text: i.text === null ? "(not in the store)" : i.text })]));
    });
    r.cognition.forEach(function (c) {
      items.push(el("div", { class: "item" }, [el("div", { class: "meta", text: "prior: " + (c.title || c.id) + (c.source ? " — " + c.source : "") }),
        el("p", { class: "text", text: c.text === null ? "(not in the store)" : c.text })]));
    });
    r.analyses.forEach(function (a) {
      if (!a.analysis) return;
      var meta = el("div", { class: "meta" }, ["analysis of its " + a.relation + " ", el("a", { href: nodeHref(a.id), class: "mono", text: a.missing ? a.id : "#" + a.seq + " " + a.id.slice(0, 8) })]);
      items.push(el("div", { class: "item" }, [meta, el("p", { class: "text", text: a.analysis })]));
    });
    var none = r.recorded ? "Retrieval found nothing for this candidate." :
      (n.transcript || []).length ? "Not recorded: this candidate predates the record of retrieval; its prompt below shows what it was given." :
      "Nothing was retrieved: retrieval is off without an embedder (offline runs), and the initial program has no prompt.";
    out = out.concat(section("Retrieved into its prompt", [items.length ? el("div", { class: "card-list", id: "node-retrieved" }, items) : el("p", { class: "empty", text: none })]));

    out = out.concat(section("Diff from its parent", [n.diff ? diffBlock(n.diff) : el("p", { class: "empty", text: "No diff: the initial program, or unchanged." })]));
    out = out.concat(section("Program", [codeBlock(n.code)]));
    var artifacts = Object.keys(n.artifacts || {});
    if (artifacts.length) {
      out = out.concat(section("Evaluator artifacts", artifacts.map(function (k) {
        return el("div", {}, [el("div", { class: "role", text: k }), pre(n.artifacts[k], "code log")]);
      })));
    }
    var transcript = (n.transcript || []).map(function (entry, k) {
      var head = (k + 1) + ". " + (entry.purpose || "?") + " · " + (entry.model || "?") + " · " +
        (entry.prompt_tokens || 0) + "+" + (entry.completion_tokens || 0) + " tokens · $" +
        Number(entry.cost_usd || 0).toFixed(4) + " · " + (entry.seconds || 0) + " s";
      var parts = [el("summary", { text: head })];
      (entry.messages || []).forEach(function (m) {
        parts.push(el("div", { class: "msg" }, [el("div", { class: "role", text: m.role }), pre(String(m.content), "code")]));
      });
      parts.push(el("div", { class: "msg" }, [el("div", { class: "role", text: "completion" }), pre(String(entry.completion || ""), "code")]));
      var details = el("details", {}, parts);
      if (k === 0) details.open = true;
      return details;
    });
    out = out.concat(section("LLM transcript", transcript.length ? [el("div", { id: "node-transcript" }, transcript)]
      : [el("p", { class: "empty", text: "No prompts: this node was not proposed by an LLM." })]));

    var target = $("node-body");
    target.textContent = "";
    out.forEach(function (c) { target.appendChild(c); });
    $("node").hidden = false;
    $("node").scrollTop = 0;
  }

  $("node-close").addEventListener("click", function () { location.hash = runHref(view.run); });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && !$("node").hidden) location.hash = runHref(view.run);
  });

  // ---- search by id prefix -----------------------------------------------------------------------------
  var input = $("search-input"), results = $("search-results");
  function search() {
    var q = input.value.trim().toLowerCase();
    results.textContent = "";
    if (!q) { results.hidden = true; return; }
    var hits = [];
    view.rows.forEach(function (row) { if (row.id.indexOf(q) === 0 && hits.length < SEARCH_MAX) hits.push(row); });
    hits.sort(function (a, b) { return a.seq - b.seq; });
    hits.forEach(function (row) {
      var li = el("li", { "data-id": row.id }, [el("span", { class: "mono", text: row.id }), el("span", { text: "#" + row.seq }), stageChip(row.stage)]);
      results.appendChild(li);
    });
    if (!hits.length) results.appendChild(el("li", { class: "none", text: view.run ? "no node of this run starts with that" : "open a run first, or press Enter to look it up" }));
    results.hidden = false;
  }
  input.addEventListener("input", search);
  results.addEventListener("mousedown", function (e) {
    var li = e.target.closest("li[data-id]");
    if (!li) return;
    e.preventDefault();
    goTo(li.getAttribute("data-id"));
  });
  $("search").addEventListener("submit", function (e) {
    e.preventDefault();
    var first = results.querySelector("li[data-id]");
    goTo(first ? first.getAttribute("data-id") : input.value.trim());
  });
  input.addEventListener("blur", function () { setTimeout(function () { results.hidden = true; }, 150); });

  function goTo(id) {  // a node of another run (or one not loaded yet): the server resolves its run
    if (!id) return;
    results.hidden = true;
    if (view.rows.has(id)) { location.hash = nodeHref(id); return; }
    api("api/nodes/" + enc(id)).then(function (body) {
      location.hash = runHref(body.node.run_id) + "/node/" + enc(body.node.id);
    }).catch(function (err) { showError(err.message); });
  }

  window.addEventListener("hashchange", route);
  route();
})();
