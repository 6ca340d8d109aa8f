// The log page in the portal's frame: local times, links that open items in the portal,
// live rows, and a frame that fits its content.
(function () {
  "use strict";
  var page = document.getElementById("log-page");
  if (!page) { return; }
  var token = page.getAttribute("data-token");
  var lang = page.getAttribute("data-lang") || "en";
  var bx24Ready = false;

  function fit() {
    if (bx24Ready && window.BX24 && BX24.fitWindow) { BX24.fitWindow(); }
  }

  // Times arrive in UTC; show them in the reader's own time zone.
  function localTimes(root) {
    var format = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });
    root.querySelectorAll("time[data-ts]").forEach(function (node) {
      var ts = parseInt(node.getAttribute("data-ts"), 10);
      if (!isNaN(ts)) {
        var date = new Date(ts * 1000);
        node.setAttribute("datetime", date.toISOString());
        node.setAttribute("title", node.textContent);
        node.textContent = format.format(date);
      }
    });
  }

  // Dates in the filter mean the reader's days.
  document.querySelectorAll("input.tz-offset").forEach(function (input) {
    input.value = String(new Date().getTimezoneOffset());
  });

  // Items open inside the portal (a slider) rather than in the frame.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.item-link") : null;
    if (link && bx24Ready && window.BX24 && BX24.openPath) {
      event.preventDefault();
      BX24.openPath(link.getAttribute("data-path"));
    }
  });

  // New entries while the page is open: the stream says when, the rows come as HTML.
  var live = page.getAttribute("data-live");
  if (live && window.EventSource) {
    var newest = parseInt(page.getAttribute("data-newest"), 10) || 0;
    var rowsUrl = page.getAttribute("data-rows");
    var fetching = false;
    var again = false;
    var source = new EventSource(live);
    var dot = document.getElementById("live-state");
    source.onopen = function () { if (dot) { dot.classList.add("on"); } };
    source.onerror = function () { if (dot) { dot.classList.remove("on"); } };

    var pull = function () {
      if (fetching) { again = true; return; }
      fetching = true;
      fetch(rowsUrl + "&after=" + newest, { headers: { "X-Session": token } })
        .then(function (response) {
          if (response.status === 401) {
            source.close();
            document.getElementById("session-expired").classList.remove("hidden");
            return null;
          }
          if (!response.ok) { return null; }
          var id = parseInt(response.headers.get("X-Newest-Id"), 10);
          return response.text().then(function (html) {
            if (!html.trim()) { return; }
            var body = document.getElementById("log-rows");
            var holder = document.createElement("tbody");
            holder.innerHTML = html;
            localTimes(holder);
            while (holder.lastElementChild) {
              var row = holder.lastElementChild;
              row.classList.add("fresh");
              body.insertBefore(row, body.firstChild);
            }
            if (!isNaN(id)) { newest = Math.max(newest, id); }
            document.getElementById("log").classList.remove("hidden");
            var empty = document.getElementById("empty-log");
            if (empty) { empty.remove(); }
            fit();
          });
        })
        .catch(function () {})
        .then(function () {
          fetching = false;
          if (again) { again = false; pull(); }
        });
    };
    source.addEventListener("changed", pull);
  }

  localTimes(document);
  if (window.BX24) {
    BX24.init(function () { bx24Ready = true; fit(); });
  }
  window.addEventListener("resize", fit);
})();
