/* Kairan service worker: shows web push notifications and opens the page on a tap.
   Served from /sw.js (scope "/"). A push carries ids and flags only; every word shown
   here is fixed, and the page fetches the circular itself once it is open. */
"use strict";

var BODY = "タップして開いてください";

function titleFor(data) {
  // A drill says so first, whatever it is: nobody may take a drill for a real disaster.
  if (data.drill === true) { return "【訓練】" + titleFor({ type: data.type, urgent: data.urgent }); }
  if (data.type === "safety") { return "安否確認: 無事か教えてください"; }
  if (data.type === "reminder") { return "確認をお願いします"; }
  if (data.type === "followup") { return "確認が必要な世帯があります"; }
  if (data.urgent) { return "緊急の回覧があります"; }
  return "新しい回覧があります";
}

/* Only a path on this site is ever opened; anything else falls back to the home page. */
function sameOriginUrl(url) {
  try {
    var target = new URL(url || "/", self.location.origin);
    if (target.origin === self.location.origin) { return target.href; }
  } catch (error) { /* not a URL: use the home page */ }
  return new URL("/", self.location.origin).href;
}

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

self.addEventListener("push", function (event) {
  var data = {};
  if (event.data) {
    try { data = event.data.json() || {}; } catch (error) { data = {}; }
  }
  var urgent = data.urgent === true;
  var options = {
    body: BODY,
    lang: "ja",
    // One notification per circular (or per kind): a retry replaces it instead of piling up.
    tag: "kairan-" + (data.type || "circular") + "-" + (data.id || "0"),
    renotify: urgent,
    requireInteraction: urgent,
    data: { url: sameOriginUrl(data.url) }
  };
  event.waitUntil(self.registration.showNotification(titleFor(data), options));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = sameOriginUrl(event.notification.data && event.notification.data.url);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === url && "focus" in windows[i]) { return windows[i].focus(); }
      }
      for (var j = 0; j < windows.length; j++) {
        var client = windows[j];
        if (new URL(client.url).origin === self.location.origin && "navigate" in client) {
          return client.navigate(url).then(function (opened) {
            return opened ? opened.focus() : self.clients.openWindow(url);
          });
        }
      }
      return self.clients.openWindow(url);
    })
  );
});

/* 安否確認 offline queue. An answer POSTed to …/safety/answer/ without signal is kept in
   IndexedDB and the page is told 「送信待ち」; it is sent again on Background Sync, when
   the page says the phone is back online, and on the next request the page makes. Each
   answer carries its own key, so sending it twice records it once. */
var ANSWER_PATH = /^\/c\/[^/]+\/circulars\/\d+\/safety\/answer\/$/;
var QUEUED_TEXT = "送信待ち: 電波が戻ったら自動で送ります";
var BUSY_TEXT = "送信待ち: 混み合っているため、自動でもう一度送ります";
/* Answered, but not recorded: the servers are busy or down (the proxy's 503 page, Django's
   load shedding or database outage, a gateway error or time-out). Kept and sent again like
   an answer made without signal; its key makes a second sending record it once. */
var SEND_AGAIN = [502, 503, 504];
var flushing = null;
// Unknown after a restart of the worker: look once, then only after something was kept.
var maybeWaiting = true;

function outbox(mode, work) {
  return new Promise(function (resolve, reject) {
    var opening = indexedDB.open("kairan", 1);
    opening.onupgradeneeded = function () { opening.result.createObjectStore("outbox", { keyPath: "id", autoIncrement: true }); };
    opening.onerror = function () { reject(opening.error); };
    opening.onsuccess = function () {
      var tx = opening.result.transaction("outbox", mode);
      var request = work(tx.objectStore("outbox"));
      tx.oncomplete = function () { opening.result.close(); resolve(request && request.result); };
      tx.onerror = function () { opening.result.close(); reject(tx.error); };
    };
  });
}

function queued(json, busy) {
  var text = busy ? BUSY_TEXT : QUEUED_TEXT;
  if (json) {
    return new Response(JSON.stringify({ queued: true, busy: busy, text: text }), { status: 202, headers: { "Content-Type": "application/json" } });
  }
  return new Response("<!DOCTYPE html><html lang=\"ja\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>送信待ち</title><p style=\"font-size:24px;padding:16px\">" + text + "</p>", { status: 202, headers: { "Content-Type": "text/html; charset=utf-8" } });
}

function keep(request, busy) {
  var json = (request.headers.get("Accept") || "").indexOf("application/json") !== -1;
  return request.text().then(function (body) {
    // A plain form POST has no tap time: the moment it failed is the moment of the tap.
    if (!/(^|&)at=\d/.test(body)) { body = body.replace(/(^|&)at=[^&]*/, "") + "&at=" + Date.now(); }
    return outbox("readwrite", function (store) { return store.add({ url: request.url, body: body }); });
  }).then(function () {
    maybeWaiting = true;
    if (self.registration.sync) { self.registration.sync.register("kairan-outbox").catch(function () {}); }
    return queued(json, busy === true);
  });
}

function tell(path, data) {
  return self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
    for (var i = 0; i < windows.length; i++) {
      windows[i].postMessage({ type: "kairan-safety-sent", path: path, text: data.text || "" });
    }
  });
}

function sendOne(item) {
  return fetch(item.url, {
    method: "POST", credentials: "same-origin", body: item.body,
    headers: { "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded" }
  }).then(function (response) {
    if (response.status === 429 || response.status >= 500) { throw new Error("later"); }
    // Sent, or refused for good (400/403/404): either way it leaves the queue.
    return outbox("readwrite", function (store) { return store.delete(item.id); }).then(function () {
      if (!response.ok) { return null; }
      return response.json().then(function (data) { return tell(new URL(item.url).pathname, data); }, function () {});
    });
  });
}

function flush() {
  if (flushing) { return flushing; }
  maybeWaiting = false;
  flushing = outbox("readonly", function (store) { return store.getAll(); }).then(function (items) {
    // In the order they were made: the server orders answers by tap time anyway.
    return items.reduce(function (chain, item) { return chain.then(function () { return sendOne(item); }); }, Promise.resolve());
  }).then(function () { flushing = null; }, function (error) { flushing = null; maybeWaiting = true; throw error; });
  return flushing;
}

/* The answer page and its two files, network first: opened again without signal (from a
   notification, say), the last copy still shows and can queue an answer. */
var PAGE_CACHE = "kairan-safety-1";
var PAGE_FILES = /^\/static\/(css\/safety|js\/safety)[.\w-]*\.(css|js)$/;

function networkFirst(request) {
  return fetch(request).then(function (response) {
    if (response.ok) {
      var copy = response.clone();
      caches.open(PAGE_CACHE).then(function (cache) { return cache.put(request, copy); }).catch(function () {});
    }
    if (SEND_AGAIN.indexOf(response.status) !== -1) {
      // Busy or down: the last copy still has the buttons, and an answer made there is kept.
      return caches.match(request, { ignoreVary: true }).then(function (cached) { return cached || response; });
    }
    return response;
  }, function (error) {
    return caches.match(request, { ignoreVary: true }).then(function (cached) { if (cached) { return cached; } throw error; });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) { return; }
  if (request.method === "GET" && !url.search && (ANSWER_PATH.test(url.pathname) || PAGE_FILES.test(url.pathname))) {
    event.respondWith(networkFirst(request));
    if (maybeWaiting) { event.waitUntil(flush().catch(function () {})); }
    return;
  }
  if (request.method === "POST" && ANSWER_PATH.test(url.pathname)) {
    var copy = request.clone();
    event.respondWith(fetch(request).then(function (response) {
      if (SEND_AGAIN.indexOf(response.status) !== -1) { return keep(copy, true); }
      flush().catch(function () {});
      return response;
    }, function () { return keep(copy); }));
    return;
  }
  // Any other request: the phone may have signal again, so try the queue too.
  if (maybeWaiting) { event.waitUntil(flush().catch(function () {})); }
});

self.addEventListener("sync", function (event) {
  if (event.tag === "kairan-outbox") { event.waitUntil(flush()); }
});

self.addEventListener("message", function (event) {
  if (event.data && event.data.type === "kairan-flush") { event.waitUntil(flush().catch(function () {})); }
});
