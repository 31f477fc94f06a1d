/* job-doctor web console: the safe markdown renderer.
 *
 * Understands only what the bot's reports use (headings, quotes, lists, fences, code spans, bold,
 * links, mentions) and builds nodes with createElement/textContent: it never parses HTML strings,
 * so markup inside messages and log lines appears as text.
 */
(function () {
  "use strict";

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // code span | **bold** | [label](url) | bare http(s) url | @mention
  var INLINE_SRC =
    "(`+)(.+?)\\1(?!`)" +
    "|\\*\\*(.+?)\\*\\*" +
    "|\\[([^\\]\\n]+)\\]\\(([^)\\s]+)\\)" +
    "|(https?:\\/\\/[^\\s<>()（）\"'，。；、]+)" +
    "|(^|\\s)(@[^\\s@，,:：。；！？、（）()]+)";

  function safeHref(raw) {
    try {
      var u = new URL(raw);
      return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function link(parent, href, label, fallback) {
    var safe = safeHref(href);
    if (!safe) {
      parent.appendChild(document.createTextNode(fallback));
      return;
    }
    var a = el("a", null, label);
    a.href = safe;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    parent.appendChild(a);
  }

  function appendInline(parent, text) {
    var re = new RegExp(INLINE_SRC, "g");
    var last = 0;
    var m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1]) {
        parent.appendChild(el("code", "inline", m[2]));
      } else if (m[3] !== undefined) {
        var strong = el("strong");
        appendInline(strong, m[3]);
        parent.appendChild(strong);
      } else if (m[4] !== undefined) {
        link(parent, m[5], m[4], m[0]);
      } else if (m[6] !== undefined) {
        link(parent, m[6], m[6], m[6]);
      } else if (m[8] !== undefined) {
        if (m[7]) parent.appendChild(document.createTextNode(m[7]));
        parent.appendChild(el("span", "at", m[8]));
      }
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function fenceOpen(line) {
    var m = /^ {0,3}(`{3,}|~{3,})(.*)$/.exec(line);
    if (!m || (m[1].charAt(0) === "`" && m[2].indexOf("`") >= 0)) return null;
    return m[1];
  }

  function fenceCloses(line, marker) {
    var m = /^ {0,3}(`+|~+)\s*$/.exec(line);
    return !!m && m[1].charAt(0) === marker.charAt(0) && m[1].length >= marker.length;
  }

  function renderMarkdown(src) {
    var root = el("div", "md");
    var lines = String(src || "").replace(/\r\n?/g, "\n").split("\n");
    var para = null, list = null, listType = "", quote = null, item = null;
    function reset() { para = null; list = null; listType = ""; quote = null; item = null; }
    var i = 0;
    while (i < lines.length) {
      var line = lines[i];
      var marker = fenceOpen(line);
      if (marker) {
        var buf = [];
        i++;
        while (i < lines.length && !fenceCloses(lines[i], marker)) buf.push(lines[i++]);
        i++;
        var pre = el("pre", "code");
        pre.appendChild(el("code", null, buf.join("\n")));
        // a code block inside a list item stays with the item (evidence under a numbered point)
        (item && list ? item : root).appendChild(pre);
        para = null; quote = null;
        continue;
      }
      i++;
      if (!line.trim()) { reset(); continue; }
      var h = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
      if (h) {
        reset();
        var head = el("h" + Math.max(3, Math.min(6, h[1].length)));
        appendInline(head, h[2]);
        root.appendChild(head);
        continue;
      }
      if (/^ {0,3}([-*_])( ?\1){2,}\s*$/.test(line)) { reset(); root.appendChild(el("hr")); continue; }
      var q = /^ {0,3}>\s?(.*)$/.exec(line);
      if (q) {
        if (!quote) { reset(); quote = el("blockquote"); root.appendChild(quote); }
        else quote.appendChild(el("br"));
        appendInline(quote, q[1]);
        continue;
      }
      // an indented item under a list item (a timeline phase's events) nests under it
      var nested = item && list ? /^ {2,}[-*+]\s+(.*)$/.exec(line) : null;
      if (nested) {
        var sub = item.lastElementChild;
        if (!sub || sub.tagName !== "UL") { sub = el("ul", "sub"); item.appendChild(sub); }
        var subItem = el("li");
        appendInline(subItem, nested[1]);
        sub.appendChild(subItem);
        continue;
      }
      var ul = /^\s*[-*+]\s+(.*)$/.exec(line);
      var ol = ul ? null : /^\s*(\d{1,9})[.)]\s+(.*)$/.exec(line);
      if (ul || ol) {
        var type = ul ? "ul" : "ol";
        if (!list || listType !== type) {
          reset();
          list = el(type);
          if (ol && ol[1] !== "1") list.start = parseInt(ol[1], 10);
          listType = type;
          root.appendChild(list);
        }
        item = el("li");
        appendInline(item, ul ? ul[1] : ol[2]);
        list.appendChild(item);
        continue;
      }
      if (item && list && /^\s{2,}\S/.test(line)) {
        item.appendChild(el("br"));
        appendInline(item, line.trim());
        continue;
      }
      if (!para) {
        reset();
        para = el("p");
        if (root.childNodes.length === 0 && line.indexOf("【job-doctor 诊断报告】") >= 0) para.className = "report-title";
        root.appendChild(para);
      } else {
        para.appendChild(el("br"));
      }
      appendInline(para, line);
    }
    return root;
  }

  window.jobDoctorMarkdown = { renderMarkdown: renderMarkdown, appendInline: appendInline, link: link };
})();
