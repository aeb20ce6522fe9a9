// The chat page: one or two models answer side by side, streamed from the console's /chat/stream (server-sent
// events relayed from the gateway). Arrows move between sibling answers of a model and make the shown one the
// answer the conversation continues from. Tool calls a model makes show in its answer as they run; images go to
// vision models; a name that is no model here can be pulled from the picker. No dependencies.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var models = JSON.parse(document.getElementById("models-data").textContent);
  var limits = JSON.parse(document.getElementById("chat-limits").textContent);
  var names = {};
  models.forEach(function (m) { names[m.id] = m.name; });
  var contextMode = document.getElementById("context-mode");
  var attach = document.getElementById("attach");
  var imageInput = document.getElementById("images");
  var imageHelp = document.getElementById("images-help");
  var previews = document.getElementById("image-previews");
  var finder = document.getElementById("model-find");
  var finderList = document.getElementById("model-names");
  var finderStatus = document.getElementById("model-find-status");
  var pullButton = document.getElementById("chat-pull");
  var attached = []; // {file, url}
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
    this.tools = el("ol", "tool-steps");
    this.tools.setAttribute("aria-label", "Tool calls");
    this.tools.hidden = true;
    this.node.appendChild(this.tools);
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
    this.answers.push({ id: messageId, text: "", status: "streaming", note: "", deltas: 0, citations: [], tools: [] });
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
    this.renderTools(answer.tools || []);
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
  // The tools the model ran for this answer: each call (tool, arguments, server) and, once back, its result.
  Column.prototype.renderTools = function (steps) {
    this.tools.textContent = "";
    this.tools.hidden = steps.length === 0;
    var list = this.tools;
    steps.forEach(function (s) {
      var item = el("li", "tool-step");
      item.dataset.tool = s.call.tool;
      item.dataset.state = s.result ? (s.result.ok ? "ok" : "failed") : "running";
      if (s.result && !s.result.ok) item.classList.add("failed");
      var where = s.call.server_id ? " on " + s.call.server_id : "";
      item.appendChild(el("p", "tool-call", "\u2192 " + s.call.tool + "(" + (s.call.arguments || "") + ")" + where));
      var outcome;
      if (!s.result) {
        outcome = "\u2026 running";
      } else {
        var ms = Math.round((s.result.duration_seconds || 0) * 1000);
        outcome = "\u2190 " + s.call.tool + (s.result.ok ? ": " : " failed (" + (s.result.error_code || "error") + "): ") +
          (s.result.content || "") + (s.result.truncated ? " [cut]" : "") + " (" + ms + " ms)";
      }
      item.appendChild(el("p", "tool-result", outcome));
      list.appendChild(item);
    });
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
    } else if (event.type === "tool_call" && column && column.current()) {
      column.current().tools = column.current().tools.concat([{ call: event, result: null }]);
      column.render();
    } else if (event.type === "tool_result" && column && column.current()) {
      column.current().tools = column.current().tools.map(function (s) {
        return s.call.id === event.id && !s.result ? { call: s.call, result: event } : s;
      });
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

  function buildTurn(text, modelIds, imageUrls) {
    var turnNode = el("section", "turn");
    if (text) turnNode.appendChild(el("p", "user-message", text));
    if (imageUrls && imageUrls.length) {
      var shown = el("ul", "user-images");
      shown.setAttribute("aria-label", "Images sent");
      imageUrls.forEach(function (url, n) {
        var item = el("li");
        var img = el("img");
        img.src = url;
        img.alt = "image " + (n + 1) + " sent with the message";
        item.appendChild(img);
        shown.appendChild(item);
      });
      turnNode.appendChild(shown);
    }
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
      var built = buildTurn(turn.text, ids, turn.images || []);
      turn.columns.forEach(function (c) {
        var column = built.columns[c.model_id];
        c.answers.forEach(function (a) {
          column.answers.push({
            id: a.id, text: a.text, status: a.status, note: a.note || "", deltas: 0, citations: a.citations || [],
            tools: a.tool_steps || [],
          });
        });
        column.index = Math.max(0, c.index);
        column.render();
      });
      if (ids[0] && names[ids[0]]) pick1.value = ids[0];
      pick2.value = ids[1] && names[ids[1]] ? ids[1] : "";
      contextMode.value = turn.context_mode || "shared";
    });
    updateAttach();
  }

  function chosenModels() {
    var chosen = [pick1.value];
    if (pick2.value && pick2.value !== pick1.value) chosen.push(pick2.value);
    return chosen;
  }

  function modelOf(id) { return models.find(function (m) { return m.id === id; }); }

  // Images are offered when a chosen model has vision; a chosen model without it gets the gateway's refusal.
  function updateAttach() {
    var chosen = chosenModels();
    var seeing = chosen.filter(function (id) { var m = modelOf(id); return m && m.vision; });
    attach.hidden = seeing.length === 0;
    if (attach.hidden) { clearImages(); return; }
    var blind = chosen.filter(function (id) { return seeing.indexOf(id) < 0; });
    imageHelp.textContent = blind.length
      ? (names[blind[0]] || blind[0]) + " cannot read images; the gateway will say so in its answer."
      : "";
  }

  function clearImages() {
    attached.forEach(function (a) { URL.revokeObjectURL(a.url); });
    attached = [];
    previews.textContent = "";
    imageInput.value = "";
  }

  function showImages() {
    previews.textContent = "";
    attached.forEach(function (a, n) {
      var item = el("li");
      var img = el("img");
      img.src = a.url;
      img.alt = a.file.name;
      item.appendChild(img);
      var remove = el("button", "small", "Remove");
      remove.type = "button";
      remove.setAttribute("aria-label", "Remove " + a.file.name);
      remove.addEventListener("click", function () {
        URL.revokeObjectURL(a.url);
        attached.splice(n, 1);
        showImages();
      });
      item.appendChild(remove);
      previews.appendChild(item);
    });
  }

  function readBase64(file) {
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () { resolve(String(reader.result).split(",", 2)[1] || ""); };
      reader.onerror = function () { reject(reader.error); };
      reader.readAsDataURL(file);
    });
  }

  async function send() {
    var text = input.value.trim();
    var sending = attach.hidden ? [] : attached.slice();
    if ((!text && !sending.length) || busy) return;
    var chosen = chosenModels();
    input.value = "";
    suggestions.textContent = "";
    var turn = buildTurn(text, chosen, sending.map(function (a) { return a.url; }));
    var turnNode = turn.node;
    var columns = turn.columns;
    attached = [];
    previews.textContent = "";
    imageInput.value = "";
    setBusy(true);
    try {
      var images = [];
      for (var i = 0; i < sending.length; i++) {
        images.push({ data: await readBase64(sending[i].file), mime_type: sending[i].file.type });
      }
      var response = await post("/chat/stream", {
        models: chosen, text: text, conversation_id: conversationId, images: images, context_mode: contextMode.value,
      });
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
  pick1.addEventListener("change", function () { showSuggestions(); updateAttach(); });
  pick2.addEventListener("change", updateAttach);
  imageInput.addEventListener("change", function () {
    var problems = [];
    Array.prototype.forEach.call(imageInput.files, function (file) {
      if (!/^image\/(png|jpeg|webp|gif)$/.test(file.type)) { problems.push(file.name + " is not a PNG, JPEG, WebP or GIF image"); return; }
      if (attached.length >= limits.max_images) { problems.push("at most " + limits.max_images + " images"); return; }
      attached.push({ file: file, url: URL.createObjectURL(file) });
    });
    imageInput.value = "";
    showImages();
    if (problems.length) imageHelp.textContent = problems.join("; ") + ".";
  });

  // The picker's search box: a model's id or name chooses it; another name that could be a pull name offers
  // "Pull X", whose progress shows below, and the pulled model is chosen once the picker lists it.
  function fillPicker() {
    [pick1, pick2, finderList].forEach(function (select) {
      var keep = select.value;
      Array.prototype.slice.call(select.options).forEach(function (o) { if (o.value) o.remove(); });
      models.forEach(function (m) {
        var option = el("option", "", m.name);
        option.value = m.id;
        select.appendChild(option);
      });
      if (keep !== undefined && modelOf(keep)) select.value = keep;
    });
  }

  async function refreshModels(wanted, tries) {
    var response = await fetch("/chat/models", { credentials: "same-origin", headers: { "Accept": "application/json" } });
    if (response.ok) {
      models = (await response.json()).models;
      names = {};
      models.forEach(function (m) { names[m.id] = m.name; });
      fillPicker();
    }
    if (wanted && modelOf(wanted)) {
      pick1.value = wanted;
      finder.value = wanted;
      finderStatus.textContent = (names[wanted] || wanted) + " is ready and chosen.";
      if (pullButton) pullButton.hidden = true;
      showSuggestions();
      updateAttach();
    } else if (wanted && tries > 0) {
      setTimeout(function () { refreshModels(wanted, tries - 1); }, 1000);
    } else if (wanted) {
      finderStatus.textContent = wanted + " was pulled, but the picker does not list it yet; reload the page.";
    }
  }

  var pull = null;
  if (pullButton && window.ModelhubPull) {
    pull = new window.ModelhubPull.Pull(
      {
        box: document.getElementById("chat-pull-progress"),
        bar: document.getElementById("chat-pull-bar"),
        percent: document.getElementById("chat-pull-percent"),
        label: document.getElementById("chat-pull-label"),
        layers: document.getElementById("chat-pull-layers"),
        cancel: document.getElementById("chat-pull-cancel"),
      },
      function (kind, state) {
        pullButton.disabled = false;
        if (kind === "completed" && state.base_model_id) refreshModels(state.base_model_id, 60);
      }
    );
    pullButton.addEventListener("click", function () {
      var name = finder.value.trim();
      if (!name) return;
      pullButton.disabled = true;
      finderStatus.textContent = "";
      pull.start(name).then(function () {
        if (document.getElementById("chat-pull-progress").dataset.state === "refused") pullButton.disabled = false;
      });
    });
  }

  finder.addEventListener("input", function () {
    var typed = finder.value.trim();
    var match = models.find(function (m) { return m.id === typed || m.name === typed; });
    if (match) {
      pick1.value = match.id;
      finderStatus.textContent = match.name + " chosen.";
      showSuggestions();
      updateAttach();
    } else {
      finderStatus.textContent = typed ? "No model named " + typed + " here." : "";
    }
    if (pullButton) {
      var offer = !match && typed && window.ModelhubPull && window.ModelhubPull.isPullName(typed);
      pullButton.hidden = !offer;
      pullButton.textContent = offer ? "Pull " + typed : "Pull";
      if (offer) finderStatus.textContent += " Pull it into the model store?";
    }
  });
  finder.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); if (pullButton && !pullButton.hidden) pullButton.click(); }
  });
  document.getElementById("new-chat").addEventListener("click", function () {
    conversationId = "";
    history.replaceState(null, "", "/chat");
    transcript.textContent = "";
    delete transcript.dataset.conversationId;
    clearImages();
    showSuggestions();
  });
  transcript.dataset.busy = "false";
  reopen(JSON.parse(document.getElementById("conversation-data").textContent));
  updateAttach();
  showSuggestions();
})();
