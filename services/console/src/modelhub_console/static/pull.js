// "Pull X": starts a pull through the console and follows its server-sent progress events (overall and per
// layer) until it ends. No dependencies.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var form = document.getElementById("pull-form");
  var box = document.getElementById("pull-progress");
  var bar = document.getElementById("pull-bar");
  var percent = document.getElementById("pull-percent");
  var label = document.getElementById("pull-label");
  var layers = document.getElementById("pull-layers");
  var cancel = document.getElementById("pull-cancel");
  var source = null;
  var pullId = "";

  function pct(done, total) { return total > 0 ? Math.floor((100 * done) / total) : 0; }

  function show(state) {
    var done = state.bytes_done || state.completed || 0;
    var total = state.bytes_total || state.total || 0;
    var value = state.state === "completed" ? 100 : pct(done, total);
    bar.value = value;
    percent.textContent = value + " %";
    box.dataset.state = state.state || "";
    label.textContent = (state.model || "") + ": " + (state.state || "");
    if (Array.isArray(state.layers)) {
      layers.textContent = "";
      state.layers.forEach(function (layer) {
        var item = document.createElement("li");
        var lp = pct(layer.bytes_done || 0, layer.bytes_total || layer.size || 0);
        item.textContent = (layer.media_type || layer.digest || "layer") + ": " + lp + " %";
        layers.appendChild(item);
      });
    }
    if (["completed", "failed", "cancelled"].indexOf(state.state) >= 0 && source) {
      source.close();
      source = null;
      if (state.error) label.textContent += " (" + (state.error.message || state.error) + ")";
    }
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    var name = document.getElementById("pull-name").value.trim();
    if (!name) return;
    var response = await fetch("/pulls", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ model: name }),
    });
    var body = await response.json();
    box.hidden = false;
    if (!response.ok) { label.textContent = (body.error && body.error.message) || "the pull was refused"; return; }
    pullId = body.id;
    box.dataset.pullId = pullId;
    source = new EventSource("/pulls/events?id=" + encodeURIComponent(pullId));
    source.onmessage = function (message) { show(JSON.parse(message.data)); };
    source.addEventListener("progress", function (message) { show(JSON.parse(message.data)); });
    source.addEventListener("done", function (message) { show(JSON.parse(message.data)); });
    source.onerror = function () { if (source) { source.close(); source = null; } };
  });

  cancel.addEventListener("click", async function () {
    if (!pullId) return;
    await fetch("/pulls/cancel", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ conversation_id: "-", message_id: pullId }),
    });
  });
})();
