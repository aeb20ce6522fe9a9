// The chat page: one or two models answer side by side, streamed from the console's /chat/stream (server-sent
// events relayed from the gateway). Arrows move between sibling answers of a model and make the shown one the
// answer the conversation continues from. No dependencies.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var models = JSON.parse(document.getElementById("models-data").textContent);
  var names = {};
  models.forEach(function (m) { names[m.id] = m.name; });
  var pick1 = document.getElementById("model-1");
  var pick2 = document.getElementById("model-2");
  var transcript = document.getElementById("transcript");
  var composer = document.getElementById("composer");
  var input = document.getElementById("message");
  var sendButton = document.getElementById("send");
  var suggestions = document.getElementById("suggestions");
  var conversationId = "";
  var busy = false;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showSuggestions() {
    suggestions.textContent = "";
    if (conversationId) return;
    var model = models.find(function (m) { return m.id === pick1.value; });
    ((model && model.suggestions) || []).forEach(function (s) {
      var item = el("li");
      var button = el("button", "suggestion", s.title || s.content);
      button.type = "button";
      if (s.subtitle) button.title = s.subtitle;
      button.addEventListener("click", function () { input.value = s.content; send(); });
      item.appendChild(button);
      suggestions.appendChild(item);
    });
  }

  // Reads a server-sent event stream from a fetch response, calling onEvent with each JSON payload.
  async function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        var block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        var data = block.split("\n").filter(function (l) { return l.indexOf("data:") === 0; })
          .map(function (l) { return l.slice(5).trim(); }).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  }

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "text/event-stream" },
      body: JSON.stringify(body),
    });
  }

  // A column: one model's sibling answers for one turn.
  function Column(turn, modelId, several) {
    this.modelId = modelId;
    this.answers = [];
    this.index = 0;
    this.node = el("article", "answer");
    this.node.dataset.modelId = modelId;
    var head = el("header", "answer-head");
    head.appendChild(el("h3", "answer-model", names[modelId] || modelId));
    var nav = el("span", "siblings");
    this.prev = el("button", "sibling-prev", "\u2039");
    this.prev.type = "button";
    this.prev.setAttribute("aria-label", "previous answer");
    this.count = el("span", "sibling-count", "1/1");
    this.next = el("button", "sibling-next", "\u203a");
    this.next.type = "button";
    this.next.setAttribute("aria-label", "next answer");
    nav.appendChild(this.prev); nav.appendChild(this.count); nav.appendChild(this.next);
    head.appendChild(nav);
    this.regen = el("button", "regenerate small", "Regenerate");
    this.regen.type = "button";
    head.appendChild(this.regen);
    if (several) {
      this.use = el("button", "use-answer small", "Continue from this");
      this.use.type = "button";
      head.appendChild(this.use);
    }
    this.node.appendChild(head);
    this.text = el("div", "answer-text");
    this.node.appendChild(this.text);
    this.note = el("p", "answer-note");
    this.node.appendChild(this.note);
    this.sources = el("details", "answer-citations");
    this.sources.hidden = true;
    this.node.appendChild(this.sources);
    var self = this;
    this.prev.addEventListener("click", function () { self.show(self.index - 1, true); });
    this.next.addEventListener("click", function () { self.show(self.index + 1, true); });
    this.regen.addEventListener("click", function () { regenerate(self); });
    if (this.use) this.use.addEventListener("click", function () { self.select(); });
  }
  Column.prototype.add = function (messageId) {
    this.answers.push({ id: messageId, text: "", status: "streaming", note: "", deltas: 0, citations: [] });
    this.show(this.answers.length - 1, false);
    return this.answers[this.answers.length - 1];
  };
  Column.prototype.current = function () { return this.answers[this.index]; };
  Column.prototype.show = function (index, select) {
    if (index < 0 || index >= this.answers.length) return;
    this.index = index;
    this.render();
    if (select) this.select();
  };
  Column.prototype.render = function () {
    var answer = this.current();
    if (!answer) return;
    this.text.textContent = answer.text;
    this.note.textContent = answer.note;
    this.renderCitations(answer.citations || []);
    this.node.dataset.messageId = answer.id;
    this.node.dataset.status = answer.status;
    this.node.dataset.deltas = String(answer.deltas);
    this.count.textContent = (this.index + 1) + "/" + this.answers.length;
    this.prev.disabled = this.index === 0 || busy;
    this.next.disabled = this.index === this.answers.length - 1 || busy;
    this.regen.disabled = busy || answer.status === "streaming";
  };
  // The knowledge chunks the answer was given: source file, page, score and the snippet, folded by default.
  Column.prototype.renderCitations = function (citations) {
    if (this.shownCitations === citations) return; // render runs on every delta; the list changes far less often
    this.shownCitations = citations;
    this.sources.textContent = "";
    this.sources.hidden = citations.length === 0;
    if (!citations.length) return;
    this.sources.appendChild(el("summary", "", "Sources (" + citations.length + ")"));
    var list = el("ol", "citations");
    citations.forEach(function (c) {
      var item = el("li", "citation");
      var source = el("p", "citation-source");
      source.appendChild(el("span", "citation-file", c.file_name || c.file_id || ""));
      if (c.page) source.appendChild(document.createTextNode(" \u00b7 page " + c.page));
      source.appendChild(document.createTextNode(" \u00b7 "));
      source.appendChild(el("span", "citation-score", "score " + Number(c.score || 0).toFixed(3)));
      item.appendChild(source);
      item.appendChild(el("blockquote", "citation-snippet", c.text || ""));
      list.appendChild(item);
    });
    this.sources.appendChild(list);
  };
  Column.prototype.select = async function () {
    var answer = this.current();
    if (!answer || !conversationId) return;
    var response = await post("/chat/select", { conversation_id: conversationId, message_id: answer.id });
    if (response.ok) {
      transcript.dataset.currentMessageId = (await response.json()).current_message_id;
      document.querySelectorAll(".answer.selected").forEach(function (n) { n.classList.remove("selected"); });
      this.node.classList.add("selected");
    }
  };

  function setBusy(value) {
    busy = value;
    sendButton.disabled = value;
    transcript.dataset.busy = value ? "true" : "false";
    document.querySelectorAll(".answer").forEach(function (n) { if (n._column) n._column.render(); });
  }

  function apply(event, columns, turnNode) {
    var column = columns[event.model_id];
    if (event.type === "turn_started") {
      conversationId = event.conversation_id;
      transcript.dataset.conversationId = conversationId;
    } else if (event.type === "answer_started" && column) {
      column.add(event.message_id);
    } else if (event.type === "delta" && column && column.current()) {
      column.current().text += event.text || "";
      column.current().deltas += 1;
      column.render();
    } else if (event.type === "citations" && column && column.current()) {
      column.current().citations = event.citations || [];
      column.render();
    } else if (event.type === "warning" && column && column.current()) {
      column.current().note += (column.current().note ? " " : "") + event.message;
      column.render();
    } else if (event.type === "answer_done" && column && column.current()) {
      column.current().status = "done";
      column.render();
    } else if (event.type === "answer_error" && column) {
      var answer = column.current() || column.add(event.message_id || "");
      answer.status = "error";
      answer.note = event.message || event.code;
      column.render();
    } else if (event.type === "stream_error") {
      var problem = el("p", "flash flash-error", event.message);
      problem.setAttribute("role", "alert");
      turnNode.appendChild(problem);
    }
  }

  function buildTurn(text, modelIds) {
    var turnNode = el("section", "turn");
    turnNode.appendChild(el("p", "user-message", text));
    var row = el("div", modelIds.length > 1 ? "answers two" : "answers");
    var columns = {};
    modelIds.forEach(function (id) {
      var column = new Column(turnNode, id, modelIds.length > 1);
      column.node._column = column;
      columns[id] = column;
      row.appendChild(column.node);
    });
    turnNode.appendChild(row);
    transcript.appendChild(turnNode);
    return { node: turnNode, columns: columns };
  }

  // A conversation reopened from the list: its turns along the selected branch, with every sibling answer.
  function reopen(stored) {
    if (!stored || !stored.id) return;
    conversationId = stored.id;
    transcript.dataset.conversationId = conversationId;
    stored.turns.forEach(function (turn) {
      var ids = turn.columns.map(function (c) { return c.model_id; });
      var built = buildTurn(turn.text, ids);
      turn.columns.forEach(function (c) {
        var column = built.columns[c.model_id];
        c.answers.forEach(function (a) {
          column.answers.push({
            id: a.id, text: a.text, status: a.status, note: a.note || "", deltas: 0, citations: a.citations || [],
          });
        });
        column.index = Math.max(0, c.index);
        column.render();
      });
      if (ids[0] && names[ids[0]]) pick1.value = ids[0];
      pick2.value = ids[1] && names[ids[1]] ? ids[1] : "";
    });
  }

  async function send() {
    var text = input.value.trim();
    if (!text || busy) return;
    var chosen = [pick1.value];
    if (pick2.value && pick2.value !== pick1.value) chosen.push(pick2.value);
    input.value = "";
    suggestions.textContent = "";
    var turn = buildTurn(text, chosen);
    var turnNode = turn.node;
    var columns = turn.columns;
    setBusy(true);
    try {
      var response = await post("/chat/stream", { models: chosen, text: text, conversation_id: conversationId });
      if (!response.ok) {
        var body = await response.json().catch(function () { return {}; });
        apply({ type: "stream_error", message: (body.error && body.error.message) || response.statusText }, columns, turnNode);
      } else {
        await readEvents(response, function (event) { apply(event, columns, turnNode); });
      }
    } finally {
      setBusy(false);
    }
  }

  async function regenerate(column) {
    var answer = column.current();
    if (!answer || busy) return;
    var columns = {};
    columns[column.modelId] = column;
    setBusy(true);
    try {
      var response = await post("/chat/regenerate", { conversation_id: conversationId, message_id: answer.id });
      if (response.ok) await readEvents(response, function (event) { apply(event, columns, column.node); });
    } finally {
      setBusy(false);
    }
    await column.select();
  }

  composer.addEventListener("submit", function (event) { event.preventDefault(); send(); });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send(); }
  });
  pick1.addEventListener("change", showSuggestions);
  document.getElementById("new-chat").addEventListener("click", function () {
    conversationId = "";
    history.replaceState(null, "", "/chat");
    transcript.textContent = "";
    delete transcript.dataset.conversationId;
    showSuggestions();
  });
  transcript.dataset.busy = "false";
  reopen(JSON.parse(document.getElementById("conversation-data").textContent));
  showSuggestions();
})();
