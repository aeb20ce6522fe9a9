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

  // Once the pull is done the registry lists the base model (it learns of the pull from an event): refresh the
  // table until the row is there.
  async function showNewBaseModel(baseModelId, tries) {
    var response = await fetch("/base-models", { credentials: "same-origin" });
    var page = new DOMParser().parseFromString(await response.text(), "text/html");
    var rows = page.querySelector("table tbody");
    if (rows) document.querySelector("table tbody").replaceWith(rows);
    var found = Array.prototype.some.call(document.querySelectorAll("table tbody td:first-child"), function (td) {
      return td.textContent === baseModelId;
    });
    if (!found && tries > 0) setTimeout(function () { showNewBaseModel(baseModelId, tries - 1); }, 1000);
  }

  // item: a snapshot or final event ({type, pull}) or a progress event (the numbers themselves).
  function show(item) {
    var state = item.pull || item;
    var kind = item.pull ? state.state : "running";
    var value = kind === "completed" ? 100 : pct(state.completed_bytes || 0, state.total_bytes || 0);
    bar.value = value;
    percent.textContent = value + " %";
    box.dataset.state = kind;
    label.textContent = (state.model || document.getElementById("pull-name").value) + ": " + kind;
    layers.textContent = "";
    (state.layers || []).forEach(function (layer) {
      var item = document.createElement("li");
      var done = layer.state === "completed" ? 100 : pct(layer.completed_bytes || 0, layer.total_bytes || 0);
      var kind = /container\.image|config/.test(layer.media_type || "") ? "config" : (layer.media_type || "").split(".").pop();
      item.textContent = kind + " " + (layer.digest || "").slice(7, 19) +
        ": " + done + " %";
      layers.appendChild(item);
    });
    if (["completed", "failed", "cancelled"].indexOf(kind) >= 0) {
      if (source) { source.close(); source = null; }
      if (state.error) label.textContent += " (" + state.error.message + ")";
      cancel.disabled = true;
      if (kind === "completed" && state.base_model_id) showNewBaseModel(state.base_model_id, 60);
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
    cancel.disabled = false;
    if (!response.ok) { label.textContent = (body.error && body.error.message) || "the pull was refused"; return; }
    pullId = body.id;
    box.dataset.pullId = pullId;
    source = new EventSource("/pulls/events?id=" + encodeURIComponent(pullId));
    ["snapshot", "progress", "completed", "failed", "cancelled"].forEach(function (name) {
      source.addEventListener(name, function (message) { show(JSON.parse(message.data)); });
    });
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
