/* job-doctor web console.
 *
 * Everything shown here is built with createElement/textContent: messages and log lines may
 * contain markup (<script>, **, backticks) and must appear as text. The markdown renderer
 * (markdown.js) understands only what the bot's reports use and never parses HTML strings.
 */
(function () {
  "use strict";

  var BOT = "job-doctor";
  var MAX_NODES = 400;
  var RECENT_EVERY_MS = 4000;
  var KIND_LABEL = {
    question: "追问",
    progress: "进度",
    report: "诊断报告",
    answer: "回答",
    notice: "通知",
    error: "错误",
    digest: "日报",
  };
  var STATUS_ICON = { ok: "✅", warn: "⚠️", fail: "❌", skipped: "⏭️", missing: "❔" };

  var params = new URLSearchParams(location.search);
  var token = params.get("token") || "";
  var base = location.pathname.replace(/\/+$/, "");

  var $ = function (id) { return document.getElementById(id); };
  var ui = {};

  var state = {
    mode: "group",
    user: "",
    ws: null,
    epoch: null,
    chat: null,
    seen: new Set(),
    pending: new Map(), // client id -> {text, mode, user, node}
    retry: 0,
    reconnectTimer: null,
    recentKey: "",
    openTimelines: new Set(),
  };

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function url(path, extra) {
    var q = new URLSearchParams(extra || {});
    if (token) q.set("token", token);
    var s = q.toString();
    return base + path + (s ? "?" + s : "");
  }

  function clientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    var a = new Uint8Array(16);
    window.crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function hhmmss(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return d.toLocaleTimeString("zh-CN", { hour12: false });
  }

  // the safe markdown renderer lives in markdown.js (loaded first)
  var md = window.jobDoctorMarkdown;
  var renderMarkdown = md.renderMarkdown;
  var appendInline = md.appendInline;
  var link = md.link;

  // ------------------------------------------------------------------ messages

  function atBottom() {
    var s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function messageNode(frame) {
    var fromBot = frame.from === "bot";
    var kind = fromBot ? frame.kind || "answer" : "user";
    var mine = !fromBot && frame.from === state.user;
    var node = el("div", "msg " + (fromBot ? "msg-bot kind-" + kind : "msg-user") + (mine ? " mine" : ""));
    var meta = el("div", "meta");
    meta.appendChild(el("span", "who", fromBot ? BOT : frame.from));
    if (fromBot) meta.appendChild(el("span", "badge badge-" + kind, KIND_LABEL[kind] || kind));
    meta.appendChild(el("span", "time", hhmmss(frame.time)));
    node.appendChild(meta);
    var bubble = el("div", "bubble");
    if (fromBot) bubble.appendChild(renderMarkdown(frame.markdown || frame.text || ""));
    else bubble.appendChild(el("div", "plain", frame.text || ""));
    node.appendChild(bubble);
    return node;
  }

  function insertFrame(frame) {
    if (!frame.id || state.seen.has(frame.id)) return;
    state.seen.add(frame.id);
    var stick = atBottom();
    var node = messageNode(frame);
    node.dataset.seq = String(frame.seq || 0);
    var list = ui.messages;
    var lastNode = list.lastElementChild;
    if (!lastNode || Number(lastNode.dataset.seq) <= frame.seq) {
      list.appendChild(node);
    } else {
      // an echo reserved its place before the bot answered: keep the chat's order
      var before = null;
      for (var c = list.lastElementChild; c; c = c.previousElementSibling) {
        if (Number(c.dataset.seq) > frame.seq) before = c;
        else break;
      }
      list.insertBefore(node, before);
    }
    while (list.childElementCount > MAX_NODES) list.removeChild(list.firstElementChild);
    if (frame.client_id && state.pending.has(frame.client_id)) dropPending(frame.client_id);
    ui.empty.hidden = true;
    if (stick) {
      if (frame.kind === "report") ui.scroller.scrollTop = node.offsetTop - ui.scroller.offsetTop - 8;
      else ui.scroller.scrollTop = ui.scroller.scrollHeight;
    }
  }

  function clearChat() {
    ui.messages.textContent = "";
    state.seen.clear();
    ui.empty.hidden = ui.pending.childElementCount > 0;
  }

  function onHistory(frame) {
    if (frame.epoch !== state.epoch || frame.chat !== state.chat) clearChat();
    state.epoch = frame.epoch;
    state.chat = frame.chat;
    var echoed = new Set();
    (frame.messages || []).forEach(function (m) {
      if (m.client_id) echoed.add(m.client_id);
      insertFrame(m);
    });
    ui.empty.hidden = ui.messages.childElementCount + ui.pending.childElementCount > 0;
    // what was typed while offline (or sent but never confirmed) goes out now, same client id
    state.pending.forEach(function (p, id) {
      if (echoed.has(id)) dropPending(id);
      else if (p.mode === state.mode && p.user === state.user) transmit(id, p);
    });
  }

  function addPending(id, p) {
    var node = messageNode({ from: state.user, text: p.text, time: new Date().toISOString() });
    node.classList.add("pending");
    var status = el("div", "pending-status", "发送中…");
    node.appendChild(status);
    p.node = node;
    p.status = status;
    state.pending.set(id, p);
    ui.pending.appendChild(node);
    ui.empty.hidden = true;
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }

  function dropPending(id) {
    var p = state.pending.get(id);
    if (!p) return;
    state.pending.delete(id);
    if (p.node && p.node.parentNode) p.node.parentNode.removeChild(p.node);
  }

  function onAck(frame) {
    var p = state.pending.get(frame.client_id);
    if (!p) return;
    if (frame.accepted) {
      p.status.textContent = "已送达";
      return;
    }
    if (frame.reason === "unavailable" || frame.reason === "not_ready") {
      p.status.textContent = "暂未送达，稍后自动重试";
      setTimeout(function () { if (state.pending.has(frame.client_id)) transmit(frame.client_id, p); }, 3000);
      return;
    }
    if (frame.reason === "duplicate") { dropPending(frame.client_id); return; }
    p.status.textContent = frame.reason === "too_long" ? "消息太长，未发送" : "未发送";
    p.node.classList.add("failed");
    setTimeout(function () { dropPending(frame.client_id); }, 6000);
  }

  function notice(text) {
    var node = el("div", "sys-notice", text);
    ui.pending.appendChild(node);
    setTimeout(function () { if (node.parentNode) node.parentNode.removeChild(node); }, 6000);
  }

  // ------------------------------------------------------------------ socket

  function setConn(cls, text) {
    ui.conn.className = "conn " + cls;
    ui.connText.textContent = text;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(proto + "//" + location.host + url("/ws", { mode: state.mode, user: state.user }));
    state.ws = ws;
    setConn("conn-connecting", "连接中…");
    ws.onopen = function () {
      state.retry = 0;
      setConn("conn-ok", "已连接");
    };
    ws.onmessage = function (ev) {
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame.type === "history") onHistory(frame);
      else if (frame.type === "message") { if (frame.chat === state.chat) insertFrame(frame); }
      else if (frame.type === "ack") onAck(frame);
      else if (frame.type === "error") notice(frame.text || "出错了");
    };
    ws.onclose = function () {
      if (state.ws !== ws) return;
      state.ws = null;
      var delay = Math.min(15000, 500 * Math.pow(2, state.retry)) * (0.8 + Math.random() * 0.4);
      state.retry = Math.min(state.retry + 1, 10);
      var left = Math.ceil(delay / 1000);
      setConn("conn-down", "已断开，" + left + " 秒后重连");
      state.reconnectTimer = setTimeout(connect, delay);
    };
  }

  function transmit(id, p) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      p.status.textContent = "等待连接…";
      return;
    }
    p.status.textContent = "发送中…";
    state.ws.send(JSON.stringify({ type: "message", id: id, text: p.text, mode: p.mode, user: p.user }));
  }

  function join() {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "join", mode: state.mode, user: state.user }));
    }
  }

  // ------------------------------------------------------------------ composer

  function send() {
    var text = ui.input.value.trim();
    if (!text) return;
    var id = clientId();
    var p = { text: text, mode: state.mode, user: state.user };
    addPending(id, p);
    transmit(id, p);
    ui.input.value = "";
    hideSuggest();
    ui.input.focus();
  }

  function mentionFragment() {
    var before = ui.input.value.slice(0, ui.input.selectionStart);
    var m = /(^|\s)@([\w-]*)$/.exec(before);
    if (!m || BOT.indexOf(m[2].toLowerCase()) !== 0 || m[2].length === BOT.length) return null;
    return { start: before.length - m[2].length - 1, end: before.length };
  }

  function hideSuggest() { ui.suggest.hidden = true; }

  function applySuggest() {
    var f = mentionFragment();
    if (!f) return false;
    var v = ui.input.value;
    var insert = "@" + BOT + " ";
    ui.input.value = v.slice(0, f.start) + insert + v.slice(f.end).replace(/^\s+/, "");
    var pos = f.start + insert.length;
    ui.input.setSelectionRange(pos, pos);
    hideSuggest();
    return true;
  }

  function insertMention() {
    var v = ui.input.value;
    if (!/(^|\s)@job-doctor(\s|$)/i.test(v)) ui.input.value = "@" + BOT + " " + v.replace(/^\s+/, "");
    ui.input.focus();
    var end = ui.input.value.length;
    ui.input.setSelectionRange(end, end);
  }

  function setMode(mode) {
    if (mode === state.mode) return;
    state.mode = mode;
    localStorage.setItem("jd-console-mode", mode);
    Array.prototype.forEach.call(document.querySelectorAll(".mode"), function (b) {
      var on = b.dataset.mode === mode;
      b.classList.toggle("active", on);
      b.setAttribute("aria-checked", on ? "true" : "false");
    });
    join();
  }

  function setUser(name) {
    var clean = name.replace(/\s+/g, " ").trim().slice(0, 32);
    if (!clean || clean === state.user) { ui.user.value = state.user; return; }
    state.user = clean;
    ui.user.value = clean;
    localStorage.setItem("jd-console-user", clean);
    join();
  }

  // ------------------------------------------------------------------ samples and recent analyses

  function loadSamples() {
    fetch(url("/api/samples"), { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        var items = (data && data.samples) || [];
        ui.chips.textContent = "";
        items.forEach(function (s) {
          var chip = el("button", "chip", s.label || s.id);
          chip.type = "button";
          chip.title = "@" + BOT + " " + s.id;
          chip.addEventListener("click", function () {
            ui.input.value = "@" + BOT + " " + s.id;
            ui.input.focus();
          });
          ui.chips.appendChild(chip);
        });
        ui.samples.hidden = items.length === 0;
      })
      .catch(function () { setTimeout(loadSamples, 5000); });
  }

  function fmtSpan(s) {
    if (s === null || s === undefined) return "—";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(1) + " 秒";
    return Math.floor(s / 60) + " 分 " + Math.round(s % 60) + " 秒";
  }

  // a logged time ("2024-05-30 11:09:00.240") without its date when it is the date of `start`
  function sameDayEnd(start, end) {
    return start && end.length > 11 && end.slice(0, 11) === start.slice(0, 11) ? end.slice(11) : end;
  }

  function field(parent, label, value, wide) {
    var row = el("div", wide ? "field wide" : "field");
    row.appendChild(el("span", "label", label));
    row.appendChild(el("span", "value", value));
    parent.appendChild(row);
  }

  function recentCard(it) {
    var card = el("article", "card status-" + it.status);
    var head = el("div", "card-head");
    head.appendChild(el("span", "card-title", it.step_instance_id !== null ? "步骤 " + it.step_instance_id : (it.request_ids[0] || it.request_key)));
    head.appendChild(el("span", "status-badge", it.status_zh));
    card.appendChild(head);
    var grid = el("div", "fields");
    field(grid, "阶段", it.stage_zh);
    field(grid, "归属", it.fault_side_zh);
    field(grid, "来源", (it.source === "llm" ? "模型" : "规则") + " · 置信度 " + Math.round(it.confidence * 100) + "%");
    field(grid, "分析耗时", fmtSpan(it.duration_s));
    field(grid, "日志跨度", it.span ? it.span.start + " → " + sameDayEnd(it.span.start, it.span.end) + "（" + fmtSpan(it.log_span_s) + "）" : fmtSpan(it.log_span_s), !!it.span);
    if (it.window) field(grid, "检索窗口", it.window.start + " → " + it.window.end, true);
    field(grid, "完成于", hhmmss(it.finished_at));
    if (it.signature) field(grid, "规则", it.signature);
    if (it.request_ids.length) field(grid, "request_id", it.request_ids.join(", "), true);
    card.appendChild(grid);
    if (it.summary) card.appendChild(el("p", "summary", it.summary));
    if (it.timeline.length) {
      var det = el("details", "timeline");
      det.open = state.openTimelines.has(it.request_key);
      det.addEventListener("toggle", function () {
        if (det.open) state.openTimelines.add(it.request_key);
        else state.openTimelines.delete(it.request_key);
      });
      det.appendChild(el("summary", null, "时间线（" + it.timeline.length + " 个阶段）"));
      var ol = el("ol");
      it.timeline.forEach(function (t) {
        var li = el("li", "tl tl-" + t.status);
        li.appendChild(el("span", "tl-icon", STATUS_ICON[t.status] || "❔"));
        li.appendChild(el("span", "tl-phase", t.phase_zh));
        if (t.time) li.appendChild(el("span", "tl-time", t.time));
        if (t.note) { var note = el("div", "tl-note"); appendInline(note, t.note); li.appendChild(note); }
        if (t.events && t.events.length) {
          var evs = el("ul", "tl-events");
          t.events.forEach(function (ev) {
            var row = el("li");
            row.appendChild(el("span", "tl-time", sameDayEnd(it.span ? it.span.start : "", ev.time || "?")));
            row.appendChild(document.createTextNode(" " + ev.text));
            evs.appendChild(row);
          });
          li.appendChild(evs);
        }
        ol.appendChild(li);
      });
      det.appendChild(ol);
      card.appendChild(det);
    }
    if (it.links.length) {
      var links = el("div", "links");
      it.links.forEach(function (href, n) {
        link(links, href, it.links.length === 1 ? "在作业平台中查看" : "作业平台链接 " + (n + 1), "");
      });
      card.appendChild(links);
    }
    return card;
  }

  function pollRecent() {
    if (document.hidden) { setTimeout(pollRecent, RECENT_EVERY_MS); return; }
    fetch(url("/api/recent", { limit: "20" }), { cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        var items = data.items || [];
        var key = JSON.stringify(items);
        ui.recentUpdated.textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN", { hour12: false });
        if (key === state.recentKey) return;
        state.recentKey = key;
        var frag = document.createDocumentFragment();
        if (!items.length) frag.appendChild(el("p", "muted", "暂无分析记录"));
        items.forEach(function (it) { frag.appendChild(recentCard(it)); });
        ui.recent.textContent = "";
        ui.recent.appendChild(frag);
      })
      .catch(function () { ui.recentUpdated.textContent = "加载失败，稍后重试"; })
      .then(function () { setTimeout(pollRecent, RECENT_EVERY_MS); });
  }

  // ------------------------------------------------------------------ start

  function start() {
    ui = {
      conn: $("conn"), connText: $("conn-text"), messages: $("messages"), pending: $("pending"),
      scroller: $("scroller"), empty: $("empty"), input: $("input"), suggest: $("suggest"),
      user: $("user"), samples: $("samples"), chips: $("sample-chips"), recent: $("recent-list"),
      recentUpdated: $("recent-updated"),
    };
    state.user = (localStorage.getItem("jd-console-user") || "").trim() ||
      "运维同学" + Math.floor(100 + Math.random() * 900);
    ui.user.value = state.user;
    var savedMode = localStorage.getItem("jd-console-mode");
    state.mode = "group";
    if (savedMode === "private") { state.mode = ""; setMode("private"); }

    Array.prototype.forEach.call(document.querySelectorAll(".mode"), function (b) {
      b.addEventListener("click", function () { setMode(b.dataset.mode); });
    });
    ui.user.addEventListener("change", function () { setUser(ui.user.value); });
    ui.user.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); ui.user.blur(); } });
    $("composer").addEventListener("submit", function (e) { e.preventDefault(); send(); });
    $("mention").addEventListener("click", insertMention);
    ui.input.addEventListener("keydown", function (e) {
      if (e.isComposing || e.keyCode === 229) return; // IME composition: Enter picks a candidate
      if (!ui.suggest.hidden && (e.key === "Tab" || e.key === "Enter")) {
        if (applySuggest()) { e.preventDefault(); return; }
      }
      if (e.key === "Escape") { hideSuggest(); return; }
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
    });
    ui.input.addEventListener("input", function () { ui.suggest.hidden = mentionFragment() === null; });
    ui.input.addEventListener("blur", function () { setTimeout(hideSuggest, 150); });
    ui.suggest.addEventListener("mousedown", function (e) { e.preventDefault(); applySuggest(); });

    connect();
    loadSamples();
    pollRecent();
  }

  // exposed for the page's own tests and for debugging in the browser console
  window.jobDoctorConsole = { renderMarkdown: renderMarkdown };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
