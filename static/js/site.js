/* Robustness Ladder: small progressive enhancements. Every page works without it. */
(function () {
  "use strict";

  var RUNNING = ["queued", "validating", "evaluating", "attacking", "cross-evaluating"];

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // Plotly renders a subset of HTML in labels: user text is escaped first.
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }

  /* ------------------------------------------------------------ sortable tables */
  function cellValue(row, index, numeric) {
    var cell = row.children[index];
    if (!cell) return null;
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "") return null;
    if (numeric) {
      var v = parseFloat(raw);
      return isNaN(v) ? null : v;
    }
    return raw.toLowerCase();
  }

  function makeSortable(table) {
    var headers = $$("thead th", table);
    headers.forEach(function (th, index) {
      // A link to the column's definition stays beside the sort button, not inside it.
      var def = th.querySelector("a.def");
      if (def) th.removeChild(def);
      var label = th.innerHTML;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.innerHTML = label + '<span class="arrow" aria-hidden="true"></span>';
      if (th.title) button.title = th.title + " (click to sort)";
      th.innerHTML = "";
      th.appendChild(button);
      if (def) th.appendChild(def);
      button.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "num";
        var current = th.getAttribute("aria-sort");
        // First click: numbers high to low, text A to Z.
        var dir = current ? (current === "ascending" ? "descending" : "ascending") : (numeric ? "descending" : "ascending");
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir);
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.forEach(function (r, i) { r._order = i; });
        rows.sort(function (a, b) {
          var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
          if (x === null && y === null) return a._order - b._order;
          if (x === null) return 1;  // empty cells last, whatever the direction
          if (y === null) return -1;
          var c = x < y ? -1 : x > y ? 1 : 0;
          if (dir === "descending") c = -c;
          return c || a._order - b._order;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  /* ------------------------------------------------------------ cell labels for phones */
  // On a phone a table's rows become blocks (site.css); each cell then shows its column's
  // header as a label. Written once from the header row, colspans followed.
  function labelCells(table) {
    var head = table.tHead && table.tHead.rows[table.tHead.rows.length - 1];
    if (!head) return;
    var labels = [];
    Array.prototype.forEach.call(head.cells, function (th) {
      var copy = th.cloneNode(true);
      $$("a.def, .sr-only, .th-sub, .arrow", copy).forEach(function (el) { el.parentNode.removeChild(el); });
      var text = copy.textContent.replace(/\s+/g, " ").trim();
      for (var k = 0; k < (th.colSpan || 1); k++) labels.push(text);
    });
    Array.prototype.forEach.call(table.tBodies, function (body) {
      Array.prototype.forEach.call(body.rows, function (row) {
        var col = 0;
        Array.prototype.forEach.call(row.cells, function (cell) {
          if (!cell.hasAttribute("data-label") && labels[col] && (cell.colSpan || 1) === 1) cell.setAttribute("data-label", labels[col]);
          col += cell.colSpan || 1;
        });
      });
    });
  }

  /* ------------------------------------------------------------ progress */
  function setBar(bar, percent) {
    if (!bar) return;
    var p = Math.max(0, Math.min(100, Math.round(percent || 0)));
    bar.setAttribute("aria-valuenow", p);
    var fill = bar.querySelector("span");
    if (fill) fill.style.width = p + "%";
  }

  function poll(url, every, onData) {
    var stopped = false;
    function tick() {
      if (stopped) return;
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data && onData(data) === false) stopped = true; })
        .catch(function () { /* transient: try again next tick */ })
        .then(function () { if (!stopped) setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }

  function liveNetwork(section) {
    var status = $("#live-status"), stage = $("#live-stage"), percent = $("#live-percent"), bar = $("#live-bar"),
        badge = $("#status-badge");
    poll(section.getAttribute("data-poll"), 2000, function (data) {
      if (status) status.textContent = data.status;
      if (stage) {
        var detail = data.stage || "";
        // A stage that only names a status (possibly an earlier one) adds nothing.
        stage.textContent = (detail === data.status || RUNNING.indexOf(detail) >= 0 || detail === "ranked") ? "" : detail;
      }
      if (percent) percent.textContent = data.progress;
      setBar(bar, data.progress);
      setText($("#live-eta"), data.estimate && data.estimate.text);
      if (badge) { badge.textContent = data.status; badge.className = "badge status-" + data.status; }
      $$(".stages li", section).forEach(function (li) {
        li.classList.toggle("current", li.getAttribute("data-stage") === data.status);
      });
      if (RUNNING.indexOf(data.status) < 0) {
        window.location.reload();
        return false;
      }
    });
  }

  function liveLeaderboard(table) {
    poll(table.getAttribute("data-poll"), 4000, function (data) {
      var byId = {};
      (data.networks || []).forEach(function (n) { byId[n.id] = n; });
      var stillRunning = false;
      $$("tr.running", table).forEach(function (row) {
        var n = byId[row.getAttribute("data-id")];
        if (!n) return;
        if (RUNNING.indexOf(n.status) < 0) { window.location.reload(); stillRunning = false; return; }
        stillRunning = true;
        setBar($(".progress", row), n.progress);
        var text = $(".status-text", row);
        if (text) text.textContent = n.status;
        setText($(".eta", row), n.estimate && n.estimate.text);
      });
      if (!stillRunning) return false;
    });
  }

  function setText(el, text) {
    if (el && typeof text === "string") el.textContent = text;
  }

  // The build banner (leaderboard/_building.html): the same fields from the benchmark's
  // API every 2 s; the page reloads once the build has ended (ready or failed).
  function liveBuild(section) {
    poll(section.getAttribute("data-poll"), 2000, function (data) {
      var build = data.build;
      if (!build || build.state === "ready" || build.failed) {
        window.location.reload();
        return false;
      }
      setText($(".stage", section), build.stage);
      setText($(".build-counts", section), build.counts_text);
      setText($(".build-percent", section), build.progress + "%");
      setText($(".eta", section), build.estimate && build.estimate.text);
      var nothing = $(".build-nothing", section);  // once something is built, never again
      if (nothing && !build.nothing_built) nothing.parentNode.removeChild(nothing);
      setBar($(".progress", section), build.progress);
    });
  }

  /* ------------------------------------------------------------ plots */
  var PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };

  // The cross-attack matrix's hover: both directions of a pair, and on the diagonal one
  // line saying what it is. The wording comes from the figure (meta.pair_hover, plots.py);
  // the n² hover texts are written here, so the page does not carry them.
  function pairHover(trace) {
    var words = trace.meta && trace.meta.pair_hover;
    if (!words || !trace.z) return;
    var pct = function (v) { return (v === null || v === undefined) ? "not evaluated yet" : (v * 100).toFixed(1) + "%"; };
    var fill = function (template, a, b, ab, ba) {
      return template.replace(/\{a\}/g, a).replace(/\{b\}/g, b).replace(/\{ab\}/g, ab).replace(/\{ba\}/g, ba);
    };
    trace.text = trace.z.map(function (row, i) {
      return row.map(function (v, j) {
        var a = trace.y[i], b = trace.x[j];
        return i === j ? fill(words.diagonal, a, b, pct(v), "") : fill(words.pair, a, b, pct(v), pct(trace.z[j][i]));
      });
    });
    trace.hovertemplate = "%{text}<extra></extra>";
  }

  function drawPlots() {
    if (typeof window.Plotly === "undefined") return;
    $$(".plot[data-figure]").forEach(function (div) {
      var source = document.getElementById(div.getAttribute("data-figure"));
      if (!source) return;
      var fig = JSON.parse(source.textContent);
      (fig.data || []).forEach(pairHover);
      window.Plotly.newPlot(div, fig.data, fig.layout || {}, PLOT_CONFIG);
    });
    var select = $("#other-attack");
    if (select) {
      // One matrix per pick, fetched on demand: embedding all of them made the page O(N).
      select.addEventListener("change", function () {
        var wanted = select.value;
        var div = document.getElementById(select.getAttribute("data-plot"));
        fetch(select.getAttribute("data-url") + encodeURIComponent(wanted) + ".json", { credentials: "same-origin" })
          .then(function (response) {
            if (!response.ok) throw new Error("HTTP " + response.status);
            return response.json();
          })
          .then(function (item) {
            if (select.value !== wanted) return;  // a later pick won the race
            var z = item.confusion;
            var share = z.map(function (row) {
              var total = row.reduce(function (a, b) { return a + b; }, 0) || 1;
              return row.map(function (v) { return Math.round(v / total * 10000) / 10000; });
            });
            window.Plotly.restyle(div, { z: [z], customdata: [share] });
            window.Plotly.relayout(div, { "title.text": esc("on " + item.name + "'s adversarial images") });
          })
          .catch(function () {
            window.Plotly.relayout(div, { "title.text": "could not load this matrix; reload the page" });
          });
      });
    }
  }

  /* ------------------------------------------------------------ small things */
  function copyButtons() {
    $$("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var input = document.getElementById(button.getAttribute("data-copy"));
        if (!input) return;
        input.select();
        var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  function autosubmit() {
    $$("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  function init() {
    $$("main table:not(.matrix):not(.board)").forEach(labelCells);
    $$("table.sortable").forEach(makeSortable);
    var live = $("#live[data-poll]");
    if (live) liveNetwork(live);
    var board = $("table[data-poll]");
    if (board) liveLeaderboard(board);
    var build = $("#build[data-poll]");
    if (build) liveBuild(build);
    drawPlots();
    copyButtons();
    autosubmit();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
