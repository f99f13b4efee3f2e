// The dashboard's glue: charts from server-rendered ECharts options, live refresh over SSE.
(function () {
  "use strict";
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;

  // <div class="chart" data-options="ID"></div> + <script type="application/json" id="ID">
  function renderCharts(root) {
    (root || document).querySelectorAll(".chart[data-options]").forEach(function (el) {
      if (el.dataset.rendered) return;
      var source = document.getElementById(el.dataset.options);
      if (!source || !window.echarts) return;
      var chart = echarts.init(el, dark ? "dark" : null, {renderer: "canvas"});
      var options = JSON.parse(source.textContent);
      if (dark) options.backgroundColor = "transparent";
      chart.setOption(options);
      el.dataset.rendered = "1";
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }

  // Elements marked data-live (with hx-trigger="live") refresh when the server announces a
  // new request on /dashboard/events.
  function connectLive() {
    if (!document.querySelector("[data-live]") || !window.EventSource) return;
    var status = document.getElementById("live-status");
    var source = new EventSource("/dashboard/events");
    source.onopen = function () { if (status) status.classList.add("on"); };
    source.onerror = function () { if (status) status.classList.remove("on"); };
    // A burst of stored requests refreshes once, a quarter second after the last of them.
    var pending = null;
    source.addEventListener("request", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        document.querySelectorAll("[data-live]").forEach(function (el) {
          if (window.htmx) htmx.trigger(el, "live");
        });
      }, 250);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { renderCharts(); connectLive(); });
  document.addEventListener("htmx:afterSwap", function (event) { renderCharts(event.target); });
  // htmx sends the CSRF token with any non-GET request it makes.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = document.querySelector('meta[name="csrf-token"]');
    if (token) event.detail.headers["X-CSRFToken"] = token.content;
  });
})();
