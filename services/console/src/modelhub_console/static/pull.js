// "Pull X": starts a pull through the console and follows its server-sent progress events (overall and per
// layer) until it ends, with a cancel button. Used by the base models page and by the chat's model picker
// (window.ModelhubPull). No dependencies.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var ENDED = ["completed", "failed", "cancelled"];
  // What the puller accepts ([ollama run|pull] [http(s)://][[host[:port]/]namespace/]model[:tag]), so a
  // "Pull" button is offered only for a name that can be one; the puller still checks it.
  var PULL_NAME = /^\s*(ollama\s+(run|pull)\s+)?(https?:\/\/)?(([A-Za-z0-9_][A-Za-z0-9_.-]{0,349}(:[0-9]{1,5})?\/)?[A-Za-z0-9_][A-Za-z0-9_-]{0,79}\/)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?\s*$/i;

  function pct(done, total) { return total > 0 ? Math.floor((100 * done) / total) : 0; }

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
  }

  // ui: {box, bar, percent, label, layers, cancel} elements; onEnd(state, pull) when the pull ends.
  function Pull(ui, onEnd) {
    this.ui = ui;
    this.onEnd = onEnd || function () {};
    this.source = null;
    this.id = "";
    this.name = "";
    var self = this;
    ui.cancel.addEventListener("click", function () { self.cancel(); });
  }

  // item: a snapshot or final event ({type, pull}) or a progress event (the numbers themselves).
  Pull.prototype.show = function (item) {
    var ui = this.ui;
    var state = item.pull || item;
    var kind = item.pull ? state.state : "running";
    var value = kind === "completed" ? 100 : pct(state.completed_bytes || 0, state.total_bytes || 0);
    ui.bar.value = value;
    ui.percent.textContent = value + " %";
    ui.box.dataset.state = kind;
    ui.label.textContent = (state.model || this.name) + ": " + kind;
    ui.layers.textContent = "";
    (state.layers || []).forEach(function (layer) {
      var row = document.createElement("li");
      var done = layer.state === "completed" ? 100 : pct(layer.completed_bytes || 0, layer.total_bytes || 0);
      var what = /container\.image|config/.test(layer.media_type || "") ? "config" : (layer.media_type || "").split(".").pop();
      row.textContent = what + " " + (layer.digest || "").slice(7, 19) + ": " + done + " %";
      ui.layers.appendChild(row);
    });
    if (ENDED.indexOf(kind) >= 0) {
      this.close();
      if (state.error) ui.label.textContent += " (" + state.error.message + ")";
      ui.cancel.disabled = true;
      this.onEnd(kind, state);
    }
  };

  Pull.prototype.close = function () {
    if (this.source) { this.source.close(); this.source = null; }
  };

  Pull.prototype.start = async function (name) {
    var ui = this.ui;
    this.close();
    this.name = name;
    ui.box.hidden = false;
    ui.box.dataset.state = "starting";
    ui.bar.value = 0;
    ui.percent.textContent = "0 %";
    ui.layers.textContent = "";
    ui.label.textContent = name + ": starting";
    ui.cancel.disabled = false;
    var response = await post("/pulls", { model: name });
    var body = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      ui.box.dataset.state = "refused";
      ui.label.textContent = (body.error && body.error.message) || "the pull was refused";
      ui.cancel.disabled = true;
      return;
    }
    this.id = body.id;
    ui.box.dataset.pullId = this.id;
    var self = this;
    var source = new EventSource("/pulls/events?id=" + encodeURIComponent(this.id));
    this.source = source;
    ["snapshot", "progress"].concat(ENDED).forEach(function (event) {
      source.addEventListener(event, function (message) { self.show(JSON.parse(message.data)); });
    });
    source.addEventListener("stream_error", function (message) {
      var problem = JSON.parse(message.data);
      ui.label.textContent = name + ": " + (problem.message || "the progress stream broke");
      self.close();
    });
    source.onerror = function () { self.close(); };
  };

  Pull.prototype.cancel = async function () {
    if (!this.id) return;
    this.ui.cancel.disabled = true;
    var response = await post("/pulls/cancel", { id: this.id });
    if (!response.ok) {
      var body = await response.json().catch(function () { return {}; });
      this.ui.label.textContent = (body.error && body.error.message) || "the pull could not be cancelled";
      this.ui.cancel.disabled = false;
    }
  };

  window.ModelhubPull = { Pull: Pull, isPullName: function (text) { return PULL_NAME.test(text); } };

  // The base models page: its form, and the table refreshed until a completed pull's base model is listed
  // (the registry learns of the pull from an event).
  var form = document.getElementById("pull-form");
  if (!form) return;
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
  var pull = new Pull(
    {
      box: document.getElementById("pull-progress"),
      bar: document.getElementById("pull-bar"),
      percent: document.getElementById("pull-percent"),
      label: document.getElementById("pull-label"),
      layers: document.getElementById("pull-layers"),
      cancel: document.getElementById("pull-cancel"),
    },
    function (kind, state) { if (kind === "completed" && state.base_model_id) showNewBaseModel(state.base_model_id, 60); }
  );
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = document.getElementById("pull-name").value.trim();
    if (name) pull.start(name);
  });
})();
