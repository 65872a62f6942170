/* Kairan page behaviour. No inline scripts (CSP); everything hangs off data- attributes. */
(function () {
  "use strict";

  /* Forms that change a lot ask first: <form data-confirm="...">. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  /* A live socket: <div data-live-ws="/ws/inbox/">. The database is the truth: on every
     (re)connect the page asks the server for a fresh snapshot via the "kairan:resync"
     event, so a lost message costs nothing. */
  function connect(root, attempt) {
    var path = root.getAttribute("data-live-ws");
    var status = document.querySelector("[data-live-status]");
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + path);
    } catch (error) {
      return;
    }
    socket.addEventListener("open", function () {
      attempt = 0;
      root.setAttribute("data-live-state", "open");
      if (status) { status.textContent = status.getAttribute("data-text-live") || ""; }
      root.dispatchEvent(new CustomEvent("kairan:resync", { bubbles: true }));
    });
    socket.addEventListener("message", function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (error) { return; }
      root.dispatchEvent(new CustomEvent("kairan:event", { bubbles: true, detail: data }));
    });
    socket.addEventListener("close", function (event) {
      root.setAttribute("data-live-state", "closed");
      if (event.code === 4401 || event.code === 4403) { return; }
      if (status) { status.textContent = status.getAttribute("data-text-reconnecting") || ""; }
      var delay = Math.min(15000, 1000 * Math.pow(2, attempt)) + Math.random() * 500;
      window.setTimeout(function () { connect(root, attempt + 1); }, delay);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var roots = document.querySelectorAll("[data-live-ws]");
    for (var i = 0; i < roots.length; i++) { connect(roots[i], 0); }
  });
})();
