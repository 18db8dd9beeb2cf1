/* otel-memory flame graph: an icicle of the call tree (the program at the top, each allocating
   line at the bottom of its stack); widths are bytes or blocks alive at the task's end.
   Node: [name, file, line, bytes, blocks, children] with name and file indices into strings. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("flame-data").textContent);
  var S = data.strings, root = data.root;
  var box = document.getElementById("flame"), tip = document.getElementById("flame-tip");
  var kindSelect = document.getElementById("kind"), search = document.getElementById("search");
  var ROW = 18, MIN_WIDTH = 0.5, kind = 0, focus = root, query = "";
  var parents = new Map();
  (function index(node) {
    node[5].forEach(function (child) { parents.set(child, node); index(child); });
  })(root);

  function value(node) { return kind === 0 ? node[3] : node[4]; }
  function file(node) { return S[node[1]]; }
  function label(node) {
    var f = file(node);
    return S[node[0]] + (f ? " (" + f.split("/").pop() + ":" + node[2] + ")" : "");
  }
  function amount(v) {
    return kind === 0 ? (v / 1048576).toFixed(v >= 10485760 ? 0 : 2) + " MB"
                      : v.toLocaleString("en") + " blocks";
  }
  function colour(node) {
    var name = S[node[0]] + file(node), hash = 0;
    for (var i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) | 0;
    var stdlib = /\/lib\/python3[^/]*\/(?!site-packages)/.test(file(node));
    var hue = stdlib ? 190 + (Math.abs(hash) % 30) : Math.abs(hash) % 50;  // warm: your code
    return "hsl(" + hue + ", 75%, " + (62 + (Math.abs(hash >> 8) % 14)) + "%)";
  }
  function matches(node) {
    return query && (S[node[0]].toLowerCase().indexOf(query) >= 0 ||
                     file(node).toLowerCase().indexOf(query) >= 0);
  }

  var placed = [];
  function place(fragment, node, x, width, depth, ancestor) {
    var div = document.createElement("div");
    div.className = "frame" + (ancestor ? " ancestor" : "") +
      (query ? (matches(node) ? " match" : " dim") : "");
    div.style.left = x + "px";
    div.style.top = depth * ROW + "px";
    div.style.width = Math.max(width, 1) + "px";
    div.style.background = node === root ? "#d9d9d9" : colour(node);
    if (width > 40) div.textContent = label(node);
    div.dataset.index = placed.length;
    placed.push({ node: node, ancestor: ancestor });
    fragment.appendChild(div);
  }

  function draw() {
    placed = [];
    box.textContent = "";
    var width = box.clientWidth, total = value(focus) || 1, deepest = 0;
    var fragment = document.createDocumentFragment(), chain = [];
    for (var a = focus; a; a = parents.get(a)) chain.unshift(a);
    chain.forEach(function (node, depth) {
      if (node !== focus) place(fragment, node, 0, width, depth, true);
    });
    (function lay(node, x, depth) {
      var w = value(node) / total * width;
      if (w < MIN_WIDTH) return;
      place(fragment, node, x, w, depth, false);
      deepest = Math.max(deepest, depth);
      var cx = x;
      node[5].forEach(function (child) {
        lay(child, cx, depth + 1);
        cx += value(child) / total * width;
      });
    })(focus, 0, chain.length - 1);
    box.style.height = (deepest + 1) * ROW + "px";
    box.appendChild(fragment);
  }

  function entry(target) {
    var index = target && target.dataset ? target.dataset.index : undefined;
    return index === undefined ? null : placed[+index];
  }
  box.addEventListener("click", function (event) {
    var hit = entry(event.target);
    if (!hit) return;
    focus = hit.node === focus ? (parents.get(focus) || root) : hit.node;
    tip.hidden = true;
    draw();
  });
  box.addEventListener("mousemove", function (event) {
    var hit = entry(event.target);
    if (!hit) { tip.hidden = true; return; }
    var node = hit.node, v = value(node), all = value(root) || 1;
    tip.textContent = "";
    [["", label(node)], ["file", file(node) || "-"],
     ["alive", amount(v) + " (" + (100 * v / all).toFixed(1) + " % of all)"],
     ["blocks", node[4].toLocaleString("en")]].forEach(function (row, i) {
      var line = document.createElement("div");
      if (i === 0) { line.className = "task"; line.textContent = row[1]; }
      else {
        var key = document.createElement("span");
        key.className = "key"; key.textContent = row[0];
        line.appendChild(key); line.appendChild(document.createTextNode(row[1]));
      }
      tip.appendChild(line);
    });
    tip.hidden = false;
    var x = event.pageX + 14, y = event.pageY + 14;
    if (x + tip.offsetWidth > window.scrollX + window.innerWidth - 8) x = event.pageX - tip.offsetWidth - 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  });
  box.addEventListener("mouseleave", function () { tip.hidden = true; });
  document.getElementById("reset").addEventListener("click", function () { focus = root; draw(); });
  kindSelect.addEventListener("change", function () { kind = +kindSelect.value; draw(); });
  search.addEventListener("input", function () { query = search.value.trim().toLowerCase(); draw(); });
  window.addEventListener("resize", draw);
  // For tests and the curious: what is drawn.
  window.flameGraph = {
    focus: function () { return label(focus); },
    frames: function () { return placed.map(function (p) { return label(p.node); }); },
    widest: function (depth) {
      var best = null;
      placed.forEach(function (p) {
        var el = box.children[placed.indexOf(p)];
        if (parseFloat(el.style.top) === depth * ROW && (!best || el.offsetWidth > best.w))
          best = { label: label(p.node), w: el.offsetWidth };
      });
      return best;
    }
  };
  draw();
})();
