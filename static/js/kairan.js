/* Kairan page behaviour. No inline scripts (CSP); everything hangs off data- attributes. */
(function () {
  "use strict";

  var RESYNC_MS = 300000;
  var POLL_MS = parseInt(document.documentElement.getAttribute("data-poll-ms") || "", 10) || 15000;

  /* Forms that change a lot ask first: <form data-confirm="...">. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    // htmx forms ask through hx-confirm instead.
    if (!form || !form.getAttribute || form.hasAttribute("hx-post")) { return; }
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  /* A tap sent with htmx that is refused (400, 429, 503) or cannot be sent must say so:
     htmx swaps nothing on an error response. A short plain-text answer (a 400 naming
     what was wrong) is shown as it is. */
  function showProblem(kind, text) {
    var box = document.getElementById("request-problem");
    if (!box) { return; }
    box.textContent = text || box.getAttribute("data-text-" + kind) || box.getAttribute("data-text-other");
    box.hidden = false;
    box.scrollIntoView({ block: "center" });
  }
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail && event.detail.xhr;
    var status = xhr ? xhr.status : 0;
    var type = xhr ? (xhr.getResponseHeader("Content-Type") || "") : "";
    var plain = status === 400 && type.indexOf("text/plain") === 0 ? xhr.responseText.trim() : "";
    showProblem(status === 429 ? "429" : status === 503 ? "503" : "other", plain.slice(0, 300));
  });
  document.addEventListener("htmx:sendError", function () { showProblem("offline", ""); });
  document.addEventListener("htmx:beforeRequest", function () {
    var box = document.getElementById("request-problem");
    if (box) { box.hidden = true; }
  });

  /* A live refresh swaps in the server's copy of a body, whose disclosures (<details id>)
     are open or closed as the page's default: each keeps the reader's choice instead. */
  var detailsOpen = {};
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    detailsOpen = {};
    var all = target && target.querySelectorAll ? target.querySelectorAll("details[id]") : [];
    for (var i = 0; i < all.length; i++) { detailsOpen[all[i].id] = all[i].open; }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var fresh = event.target;
    var all = fresh && fresh.querySelectorAll ? fresh.querySelectorAll("details[id]") : [];
    for (var i = 0; i < all.length; i++) {
      if (Object.prototype.hasOwnProperty.call(detailsOpen, all[i].id)) { all[i].open = detailsOpen[all[i].id]; }
    }
  });

  function fire(name, detail) {
    document.body.dispatchEvent(new CustomEvent(name, { bubbles: true, detail: detail }));
  }

  function label(root, key) {
    var element = root.querySelector('[data-label="' + key + '"]');
    return element ? element.textContent : key;
  }

  /* Counts carry a seq that grows with every change they include: an older count
     arriving after a newer one (two server processes, a snapshot) is ignored. */
  function setCounts(scope, counts) {
    if (!scope || !counts) { return; }
    if (counts.seq !== undefined) {
      if (parseInt(scope.getAttribute("data-seq") || "0", 10) > counts.seq) { return; }
      scope.setAttribute("data-seq", counts.seq);
    }
    Object.keys(counts).forEach(function (key) {
      var cells = scope.querySelectorAll('[data-count="' + key + '"]');
      for (var i = 0; i < cells.length; i++) {
        if (cells[i].closest("[data-counts-for]") === scope) { cells[i].textContent = counts[key]; }
      }
    });
  }

  /* A block leader sees only their blocks: their totals are the sum of those blocks. */
  function sumBlocks(root) {
    var totals = {};
    var blocks = root.querySelectorAll('[data-counts-for^="block-"]');
    for (var i = 0; i < blocks.length; i++) {
      var cells = blocks[i].querySelectorAll("[data-count]");
      for (var j = 0; j < cells.length; j++) {
        if (cells[j].closest("[data-counts-for]") !== blocks[i]) { continue; }
        var key = cells[j].getAttribute("data-count");
        totals[key] = (totals[key] || 0) + parseInt(cells[j].textContent, 10);
      }
    }
    return totals;
  }

  function applyLedgerEvent(root, data) {
    if (data.type === "ledger.totals") {
      setCounts(root.querySelector('[data-counts-for="total"]'), data.counts);
      return;
    }
    if (data.type === "ledger.counts") {
      setBlockCounts(root, data.block_id, data.counts);
      return;
    }
    if (data.type !== "ledger.receipt") { return; }
    var row = root.querySelector('[data-ledger-row="' + data.household_id + '"]');
    if (row && parseInt(row.getAttribute("data-version") || "0", 10) <= data.version) {
      row.setAttribute("data-version", data.version);
      row.setAttribute("data-status", data.status);
      var status = row.querySelector('[data-field="status"]');
      if (status) { status.textContent = (data.status === "confirmed" ? "✓ " : "") + label(root, data.status); }
      var method = row.querySelector('[data-field="method"]');
      if (method) { method.textContent = data.method ? label(root, "method-" + data.method) : ""; }
      var time = row.querySelector('[data-field="time"]');
      if (time) { time.textContent = data.time; }
      if (data.status === "confirmed") {
        var proxy = row.querySelector('[data-field="proxy"]');
        if (proxy) { proxy.remove(); }
      }
    }
    setBlockCounts(root, data.block_id, data.block_counts);
  }

  function setBlockCounts(root, blockId, counts) {
    setCounts(root.querySelector('[data-counts-for="block-' + blockId + '"]'), counts);
    if (root.getAttribute("data-all-visible") !== "1") {
      setCounts(root.querySelector('[data-counts-for="total"]'), sumBlocks(root));
    }
  }

  /* Reconnecting. When a server restarts or the network blips, every page drops at once:
     each waits a random time up to a cap ("full jitter") so they come back spread out,
     and the cap doubles with every failure in a row (2, 4, 8, then 15 s). Only a socket
     that stayed open STABLE_MS starts over at 2 s: one that is accepted and dropped
     again and again (a server turning it away as busy) keeps backing off. */
  var RETRY_FIRST_MS = 2000;
  var RETRY_CAP_MS = 15000;
  var STABLE_MS = 30000;

  function retryDelay(failures) {
    return Math.random() * Math.min(RETRY_CAP_MS, RETRY_FIRST_MS * Math.pow(2, failures));
  }

  /* A live socket: <div data-live-ws="/ws/...">. The database is the truth: on every
     (re)connect the page fetches a fresh snapshot ("kairan:resync"); while the socket is
     down it polls every 15 s ("kairan:poll") and says so quietly. ``failures`` counts
     the attempts in a row that did not end in a stable socket. */
  function connect(root, failures) {
    var path = root.getAttribute("data-live-ws");
    var status = root.querySelector("[data-live-status]") || document.querySelector("[data-live-status]");
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    var openedAt = 0;
    try {
      socket = new WebSocket(scheme + window.location.host + path);
    } catch (error) {
      startPolling(root, status);
      return;
    }
    root.kairanSocket = socket;
    socket.addEventListener("open", function () {
      openedAt = Date.now();
      stopPolling(root);
      root.setAttribute("data-live-state", "open");
      if (status) { status.textContent = status.getAttribute("data-text-live") || ""; }
      fire("kairan:resync");
    });
    socket.addEventListener("message", function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (error) { return; }
      if (!data || typeof data.type !== "string") { return; }
      if (data.type.indexOf("ledger.") === 0) { applyLedgerEvent(root, data); }
      if (data.type === "ledger.reset") { socket.close(4000); }
      fire("kairan:" + data.type.replace(/\./g, "-"), data);
      /* Pages that re-fetch a whole body on events (the safety board) listen to
         "kairan:changed" instead: at most one fetch per half second, and always one after
         the last event, however many answers arrive. */
      if (!root.kairanChanged) {
        root.kairanChanged = window.setTimeout(function () {
          root.kairanChanged = null;
          fire("kairan:changed");
        }, 500);
      }
    });
    socket.addEventListener("close", function (event) {
      root.setAttribute("data-live-state", "closed");
      if (event.code === 4401 || event.code === 4403 || event.code === 4404) { return; }
      if (status) { status.textContent = status.getAttribute("data-text-reconnecting") || ""; }
      startPolling(root, status);
      if (openedAt && Date.now() - openedAt >= STABLE_MS) { failures = 0; }
      if (event.code === 4000) {
        // The server asked this page to subscribe afresh (ledger.reset): not a failure.
        window.setTimeout(function () { connect(root, failures); }, 100);
        return;
      }
      window.setTimeout(function () { connect(root, failures + 1); }, retryDelay(failures));
    });
  }

  function startPolling(root, status) {
    // Also after a failed reconnect while already polling: the page is polling, not closed.
    root.setAttribute("data-live-state", "polling");
    if (root.kairanPoll) { return; }
    root.kairanPoll = window.setInterval(function () { fire("kairan:poll"); }, POLL_MS);
  }

  function stopPolling(root) {
    if (root.kairanPoll) { window.clearInterval(root.kairanPoll); root.kairanPoll = null; }
  }

  document.addEventListener("DOMContentLoaded", function () {
    POLL_MS = parseInt(document.body.getAttribute("data-poll-ms") || "", 10) || POLL_MS;
    var roots = document.querySelectorAll("[data-live-ws]");
    for (var i = 0; i < roots.length; i++) { connect(roots[i], 0); }
    /* Even while live, re-sync now and then: an event published by another process that
       never reached this socket (or a missed one) shows up within minutes anyway. */
    if (roots.length) { window.setInterval(function () { fire("kairan:resync"); }, RESYNC_MS); }
  });
})();
