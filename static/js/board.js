/* The leaderboard's search, filters and sort order live in the URL (issue 14).
   Without this script the GET form and the server-side sort do the same work; with it,
   a click on a column header also writes the new order into the URL (and into every
   link that keeps the filters), the form leaves empty fields out of the URL, and the
   model card beside a name opens on click as well as on hover or focus. */
(function () {
  "use strict";

  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // Header key -> the server's sort key and direction (the "#" column is the ranking).
  function serverSort(key, dir) {
    if (key === "rank") return { sort: "level", order: dir === "ascending" ? "desc" : "asc" };
    return { sort: key, order: dir === "ascending" ? "asc" : "desc" };
  }

  function setParams(href, sort, order) {
    var url = new URL(href, window.location.href);
    url.searchParams.delete("page");
    if (sort === "level" && order === "desc") {
      url.searchParams.delete("sort");
      url.searchParams.delete("order");
    } else {
      url.searchParams.set("sort", sort);
      url.searchParams.set("order", order);
    }
    return url.pathname + url.search;
  }

  function keepSortInLinks(sort, order) {
    $$("nav.tabs a, #exports a[data-keep-sort], #filters-reset").forEach(function (a) {
      if (a.id === "filters-reset") return;
      a.setAttribute("href", setParams(a.getAttribute("href"), sort, order));
    });
    var s = document.getElementById("f-sort"), o = document.getElementById("f-order");
    if (s) s.value = sort;
    if (o) o.value = (sort === "level" && order === "desc") ? "" : order;
  }

  function headerSort(table) {
    var head = table.tHead;
    if (!head) return;
    head.addEventListener("click", function (event) {
      // Runs after site.js's own handler on the button has sorted the rows.
      var th = event.target.closest("th[data-sort-key]");
      if (!th || !th.getAttribute("aria-sort")) return;
      var s = serverSort(th.getAttribute("data-sort-key"), th.getAttribute("aria-sort"));
      var next = setParams(window.location.href, s.sort, s.order);
      if (document.querySelector("nav.pager")) {
        window.location.assign(next);  // several pages: the server sorts them all
        return;
      }
      window.history.replaceState(null, "", next);
      keepSortInLinks(s.sort, s.order);
    });
    // A sorted URL: mark the header the server sorted by.
    var params = new URLSearchParams(window.location.search);
    var sort = params.get("sort");
    if (!sort || sort === "level") return;
    var th = head.querySelector('th[data-sort-key="' + sort + '"]');
    if (!th) return;
    var order = params.get("order") || (th.getAttribute("data-type") === "num" ? "desc" : "asc");
    $$("th", head).forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", order === "asc" ? "ascending" : "descending");
  }

  function tidyForm(form) {
    // Empty fields stay out of the URL: ?q=net rather than ?q=net&level_min=&owner=...
    form.addEventListener("submit", function () {
      $$("input, select", form).forEach(function (field) {
        if (field.name && field.value === "") field.disabled = true;
      });
      window.setTimeout(function () { $$("input, select", form).forEach(function (f) { f.disabled = false; }); }, 0);
    });
  }

  function place(tip) {
    var button = tip.querySelector(".card-btn"), pop = tip.querySelector(".card-pop");
    var r = button.getBoundingClientRect();
    var width = Math.min(352, window.innerWidth - 16);
    pop.style.left = Math.max(8, Math.min(r.left, window.innerWidth - width - 8)) + "px";
    pop.style.top = (r.bottom + 6) + "px";
    pop.style.width = width + "px";
  }

  function closeAll(except) {
    $$(".card-btn[aria-expanded='true']").forEach(function (b) {
      if (b !== except) b.setAttribute("aria-expanded", "false");
    });
  }

  function cardTips() {
    $$(".card-tip").forEach(function (tip) {
      var button = tip.querySelector(".card-btn");
      tip.addEventListener("mouseenter", function () { place(tip); });
      tip.addEventListener("focusin", function () { place(tip); });
      button.addEventListener("click", function () {
        var open = button.getAttribute("aria-expanded") !== "true";
        closeAll(button);
        place(tip);
        button.setAttribute("aria-expanded", open ? "true" : "false");
      });
    });
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape") return;
      closeAll(null);
      // Hide a card shown by focus or hover too, keeping the focus where it is.
      $$(".card-tip:hover, .card-tip:focus-within").forEach(function (tip) { tip.classList.add("dismissed"); });
    });
    $$(".card-tip").forEach(function (tip) {
      tip.addEventListener("mouseleave", function () { tip.classList.remove("dismissed"); });
      tip.addEventListener("focusout", function () { tip.classList.remove("dismissed"); });
      tip.querySelector(".card-btn").addEventListener("click", function () { tip.classList.remove("dismissed"); });
    });
    document.addEventListener("click", function (event) {
      if (!event.target.closest(".card-tip")) closeAll(null);
    });
    window.addEventListener("scroll", function () { closeAll(null); }, { passive: true });
  }

  function init() {
    var table = document.getElementById("leaderboard");
    if (table) headerSort(table);
    var form = document.getElementById("board-filters");
    if (form) tidyForm(form);
    cardTips();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
