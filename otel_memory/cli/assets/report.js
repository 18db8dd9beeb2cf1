/* otel-memory report: the interactive chart, drawn with uPlot from the inline JSON data.
 *
 * Zoom: drag across the plot, or the wheel over it; double-click or "Reset zoom" to see it all.
 * Hover: time, RSS, VMS, available and the task(s) running. Task runs are shaded in the plot
 * (at least a pixel wide) and drawn as bars in a lane under it, at least MIN_BAR_PX wide so
 * that a run of a few seconds in a log of days stays visible; a click on a bar zooms to it.
 */
(function () {
  "use strict";

  var MIN_BAR_PX = 3;
  var LANE_ROW_PX = 16;
  var MAX_LANE_ROWS = 6;
  var LABEL_PX = 12;
  var MAX_TASKS_SHOWN = 4;
  var ENDED_BY = {
    replaced: " (replaced by the next START)",
    gone: " (gone by this line)",
  };
  var HEIGHT_PX = 440;

  var source = document.getElementById("chart-data");
  var root = document.getElementById("chart");
  if (!source || !root) return;
  var data = JSON.parse(source.textContent);
  if (!data.times.length) return;

  var pxr = uPlot.pxRatio;
  var times = data.times;
  var firstT = times[0];
  var lastT = times[times.length - 1];
  var fmtStamp = uPlot.fmtDate("{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}");
  // The log's times are local wall-clock times stored as if they were UTC: show them as UTC so
  // that the chart reads exactly what the log says, whatever the viewer's time zone.
  var tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); };
  var stamp = function (ts) { return fmtStamp(tzDate(ts)); };

  var LABEL_FONT = "600 " + LABEL_PX + "px system-ui, sans-serif";
  data.thresholds.forEach(function (th) {
    th.text = th.label + " " + th.mb.toLocaleString("en-US") + " MB";
  });
  // The gutter right of the plot holds the threshold labels: as wide as the longest one.
  var measure = document.createElement("canvas").getContext("2d");
  measure.font = LABEL_FONT;
  var GUTTER_PX = 24 + Math.ceil(Math.max.apply(null, data.thresholds.map(function (th) {
    return measure.measureText("▲ " + th.text).width;
  }).concat([40])));

  // In the JSON, null is both "no point of this series at this row" and "gap". uPlot draws a
  // line across undefined and breaks it at null: only the gap rows keep null.
  var gapRows = {};
  data.gaps.forEach(function (i) { gapRows[i] = true; });
  var columns = [data.rss, data.vms, data.available].map(function (values) {
    return values.map(function (v, i) { return v === null && !gapRows[i] ? undefined : v; });
  });
  function valueAt(column, idx) { return idx == null ? null : columns[column][idx]; }

  var bands = data.bands.map(function (b) {
    var band = {
      task: data.tasks[b[0]], colour: data.task_colours[b[0]], start: b[1], end: b[2],
      reason: b[3], runs: b[4],
    };
    // A run that never ended was running as long as lines kept coming: draw it up to the last
    // line before the log stops or breaks off (the process was gone).
    if (band.reason === "unfinished") band.end = lastLineAfter(band.start);
    return band;
  });

  function lastLineAfter(t) {
    var i = 0;
    while (i < times.length && times[i] < t) i++;
    while (i + 1 < times.length && !gapRows[i + 1]) i++;
    return Math.max(t, times[Math.min(i, times.length - 1)]);
  }
  var rows = packRows(bands);
  var laneRows = bands.length ? Math.max.apply(null, rows) + 1 : 0;

  function packRows(items) {
    // Greedy interval partitioning: a run goes to the first row free at its start, so that
    // nested or concurrent runs sit on separate rows.
    var rowEnds = [];
    return items.map(function (b) {
      for (var r = 0; r < rowEnds.length; r++) {
        if (rowEnds[r] <= b.start) { rowEnds[r] = b.end; return r; }
      }
      if (rowEnds.length < MAX_LANE_ROWS) { rowEnds.push(b.end); return rowEnds.length - 1; }
      var last = rowEnds.length - 1;
      rowEnds[last] = Math.max(rowEnds[last], b.end);
      return last;
    });
  }

  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function mb(v) {
    return v == null ? "–" : v.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + " MB";
  }

  function duration(seconds) {
    var s = Math.round(seconds);
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
    return h + ":" + (m < 10 ? "0" : "") + m + ":" + (r < 10 ? "0" : "") + r;
  }

  function running(t) {
    return bands.filter(function (b) { return b.start <= t && t <= b.end; });
  }

  /* Pixel span of a run on the canvas, widened to ``minPx`` around its centre. */
  function barSpan(u, b, minPx) {
    var x0 = u.valToPos(b.start, "x", true), x1 = u.valToPos(b.end, "x", true);
    var min = minPx * pxr;
    if (x1 - x0 < min) { var mid = (x0 + x1) / 2; x0 = mid - min / 2; x1 = mid + min / 2; }
    return [x0, x1];
  }

  function yTop(dataMax) {
    // From 0 to a little above the data; a threshold just above the data is brought in, one
    // far above it is marked at the top edge instead of squashing the lines into a sliver.
    var top = (dataMax == null ? 100 : dataMax) * 1.08 || 100;
    data.thresholds.forEach(function (th) {
      if (th.mb > top && th.mb <= top * 1.35) top = th.mb * 1.06;
    });
    return top;
  }

  // ---------------------------------------------------------------- drawing hooks

  function drawBands(u) {
    var ctx = u.ctx, bb = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(bb.left, bb.top, bb.width, bb.height);
    ctx.clip();
    bands.forEach(function (b) {
      // A hairline in the plot (the lane below shows short runs wide enough to see and
      // point at); wider shading would stripe a long chart with every short run.
      var span = barSpan(u, b, 1);
      if (span[1] < bb.left || span[0] > bb.left + bb.width) return;
      ctx.fillStyle = rgba(b.colour, 0.16);
      ctx.fillRect(span[0], bb.top, span[1] - span[0], bb.height);
    });
    ctx.restore();
  }

  var thresholdLabels = [];  // drawn label boxes in CSS pixels, for tests and hit checks

  function drawThresholds(u) {
    // Dashed lines across the plot; labels in the gutter right of it, never over the data,
    // pushed apart so that none covers another, a leader joining each to its line.
    var ctx = u.ctx, bb = u.bbox;
    var top = u.scales.mb.max;
    var h = (LABEL_PX + 6) * pxr;
    var right = bb.left + bb.width;
    var labels = data.thresholds.map(function (th) {
      var inside = th.mb <= top;
      var y = inside ? u.valToPos(th.mb, "mb", true) : bb.top;
      return { th: th, inside: inside, y: y, centre: y, text: (inside ? "" : "▲ ") + th.text };
    });
    ctx.save();
    ctx.lineWidth = 1.5 * pxr;
    ctx.setLineDash([6 * pxr, 4 * pxr]);
    labels.forEach(function (l) {
      if (!l.inside) return;
      ctx.strokeStyle = l.th.colour;
      ctx.beginPath();
      ctx.moveTo(bb.left, Math.round(l.y) + 0.5);
      ctx.lineTo(right, Math.round(l.y) + 0.5);
      ctx.stroke();
    });
    ctx.setLineDash([]);
    labels.sort(function (a, b) { return a.centre - b.centre || a.th.mb - b.th.mb; });
    var i;
    for (i = 0; i < labels.length; i++) {
      labels[i].centre = Math.max(labels[i].centre, bb.top + h / 2);
      if (i > 0) labels[i].centre = Math.max(labels[i].centre, labels[i - 1].centre + h);
    }
    for (i = labels.length - 1; i >= 0; i--) {
      var limit = i === labels.length - 1 ? bb.top + bb.height - h / 2 : labels[i + 1].centre - h;
      labels[i].centre = Math.min(labels[i].centre, limit);
    }
    ctx.font = LABEL_FONT.replace(LABEL_PX + "px", LABEL_PX * pxr + "px");
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    var x = right + 14 * pxr;
    thresholdLabels = labels.map(function (l) {
      if (l.inside) {
        ctx.strokeStyle = l.th.colour;
        ctx.lineWidth = pxr;
        ctx.beginPath();
        ctx.moveTo(right, l.y);
        ctx.lineTo(x - 3 * pxr, l.centre);
        ctx.stroke();
      }
      ctx.fillStyle = l.th.colour;
      ctx.fillText(l.text, x, l.centre);
      var w = ctx.measureText(l.text).width;
      return {
        name: l.th.name, text: l.text,
        left: x / pxr, right: (x + w) / pxr,
        top: (l.centre - h / 2) / pxr, bottom: (l.centre + h / 2) / pxr,
      };
    });
    ctx.restore();
  }

  function drawPeaks(u) {
    var ctx = u.ctx, bb = u.bbox;
    if (!u.series[1].show) return;
    ctx.save();
    ctx.font = "600 " + 11 * pxr + "px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    data.peaks.forEach(function (p) {
      if (p.t < u.scales.x.min || p.t > u.scales.x.max || p.mb > u.scales.mb.max) return;
      var x = u.valToPos(p.t, "x", true), y = u.valToPos(p.mb, "mb", true);
      ctx.beginPath();
      ctx.arc(x, y, 4 * pxr, 0, 2 * Math.PI);
      ctx.fillStyle = "#ffffff";
      ctx.fill();
      ctx.lineWidth = 2 * pxr;
      ctx.strokeStyle = "#c62828";
      ctx.stroke();
      ctx.fillStyle = "#c62828";
      ctx.fillText(String(p.rank), x, Math.max(y - 6 * pxr, bb.top + 12 * pxr));
    });
    ctx.restore();
  }

  // ---------------------------------------------------------------- the task lane

  var lane = document.createElement("div");
  lane.className = "task-lane";
  var laneCanvas = document.createElement("canvas");
  lane.appendChild(laneCanvas);
  var laneBars = [];  // [x0, x1, row, band] in CSS pixels, for hover and click

  function drawLane(u) {
    lane.hidden = laneRows === 0;
    if (!laneRows) return;
    var width = u.bbox.width / pxr, height = laneRows * LANE_ROW_PX;
    lane.style.marginLeft = u.bbox.left / pxr + "px";
    lane.style.width = width + "px";
    laneCanvas.style.width = width + "px";
    laneCanvas.style.height = height + "px";
    laneCanvas.width = Math.round(width * pxr);
    laneCanvas.height = Math.round(height * pxr);
    var ctx = laneCanvas.getContext("2d");
    ctx.clearRect(0, 0, laneCanvas.width, laneCanvas.height);
    ctx.font = 11 * pxr + "px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    laneBars = [];
    bands.forEach(function (b, i) {
      var span = barSpan(u, b, MIN_BAR_PX);
      var x0 = span[0] - u.bbox.left, x1 = span[1] - u.bbox.left;
      if (x1 < 0 || x0 > laneCanvas.width) return;
      var y = rows[i] * LANE_ROW_PX * pxr;
      ctx.fillStyle = b.colour;
      ctx.fillRect(x0, y + pxr, x1 - x0, (LANE_ROW_PX - 2) * pxr);
      laneBars.push([x0 / pxr, x1 / pxr, rows[i], b]);
      var visible0 = Math.max(x0, 0), visible1 = Math.min(x1, laneCanvas.width);
      if (ctx.measureText(b.task).width + 8 * pxr < visible1 - visible0) {
        ctx.save();
        ctx.beginPath();
        ctx.rect(visible0, y, visible1 - visible0, LANE_ROW_PX * pxr);
        ctx.clip();
        ctx.fillStyle = "#111";
        ctx.fillText(b.task, visible0 + 4 * pxr, y + (LANE_ROW_PX / 2) * pxr);
        ctx.restore();
      }
    });
  }

  function barAt(event) {
    var rect = laneCanvas.getBoundingClientRect();
    var x = event.clientX - rect.left, row = Math.floor((event.clientY - rect.top) / LANE_ROW_PX);
    var found = null;
    laneBars.forEach(function (bar) {
      if (bar[2] === row && bar[0] - 1 <= x && x <= bar[1] + 1) found = bar[3];
    });
    return found;
  }

  // ---------------------------------------------------------------- tooltip

  var tooltip = document.createElement("div");
  tooltip.className = "chart-tooltip";
  tooltip.hidden = true;
  root.appendChild(tooltip);

  function showTooltip(lines, clientX, clientY) {
    tooltip.textContent = "";
    lines.forEach(function (line) {
      var row = document.createElement("div");
      if (line[0]) {
        var key = document.createElement("span");
        key.className = "key";
        key.textContent = line[0];
        row.appendChild(key);
      }
      var value = document.createElement("span");
      value.className = line[2] || "";
      value.textContent = line[1];
      row.appendChild(value);
      tooltip.appendChild(row);
    });
    tooltip.hidden = false;
    var box = root.getBoundingClientRect();
    var left = clientX - box.left + 14, top = clientY - box.top + 14;
    if (left + tooltip.offsetWidth > box.width) left = clientX - box.left - tooltip.offsetWidth - 14;
    tooltip.style.left = Math.max(0, left) + "px";
    tooltip.style.top = top + "px";
  }

  function onCursor(u) {
    var idx = u.cursor.idx;
    if (idx == null || u.cursor.left < 0) { tooltip.hidden = true; return; }
    // uPlot picks, per series, the nearest row holding a point of that series (the rows of
    // a downsampled bucket sit at the true times of each series' extremes).
    var at = u.cursor.idxs, rssIdx = at[1] == null ? idx : at[1];
    var t = times[rssIdx];
    var lines = [["", stamp(t), "time"]];
    if (columns[0][rssIdx] == null) {
      lines.push(["", "no line written (process not running)", "none"]);
    } else {
      lines.push(["RSS", mb(columns[0][rssIdx])], ["VMS", mb(valueAt(1, at[2]))],
        ["available", mb(valueAt(2, at[3]))]);
    }
    var tasks = running(t).map(function (b) { return b.task; });
    if (tasks.length > MAX_TASKS_SHOWN) {  // innermost last; say how many outer ones are left out
      tasks = ["(" + (tasks.length - MAX_TASKS_SHOWN + 1) + " more)"]
        .concat(tasks.slice(tasks.length - MAX_TASKS_SHOWN + 1));
    }
    lines.push(["task", tasks.length ? tasks.join(" › ") : "none (idle)", "task"]);
    var over = u.over.getBoundingClientRect();
    showTooltip(lines, over.left + u.cursor.left, over.top + u.cursor.top);
  }

  // ---------------------------------------------------------------- the chart

  function xRange(u, min, max) {
    // Exactly the data (a 16-second log fills the width), a minute either side of a lone
    // line (uPlot would give it a thousand days).
    if (firstT === lastT) return [firstT - 60, lastT + 60];
    if (min == null || max == null) return [firstT, lastT];
    min = Math.max(min, firstT);
    max = Math.min(max, lastT);
    return max - min < 1 ? [min - 30, max + 30] : [min, max];
  }

  function seriesOpts(label, colour, width) {
    return {
      label: label, scale: "mb", stroke: colour, width: width, spanGaps: false,
      value: function (u, v) { return mb(v); },
      points: { size: 5 },
    };
  }

  var opts = {
    width: Math.max(root.clientWidth, 320),
    height: HEIGHT_PX,
    tzDate: tzDate,
    scales: {
      x: { time: true, range: xRange },
      mb: { auto: true, range: function (u, min, max) { return [0, yTop(max)]; } },
    },
    axes: [
      { grid: { stroke: "#eee" } },
      {
        scale: "mb", label: "memory (MB)", size: 64, grid: { stroke: "#eee" },
        values: function (u, ticks) { return ticks.map(function (v) { return v.toLocaleString("en-US"); }); },
      },
      {  // an empty axis on the right: the gutter that holds the threshold labels
        side: 1, scale: "mb", size: GUTTER_PX, grid: { show: false }, ticks: { show: false },
        values: function (u, ticks) { return ticks.map(function () { return ""; }); },
      },
    ],
    series: [
      { label: "time", value: function (u, ts) { return ts == null ? "–" : stamp(ts); } },
      seriesOpts("RSS", data.colours.rss, 2),
      seriesOpts("VMS", data.colours.vms, 1.25),
      seriesOpts("System available", data.colours.available, 1.5),
    ],
    cursor: { drag: { x: true, y: false, setScale: true } },
    hooks: {
      drawClear: [drawBands],
      draw: [drawThresholds, drawPeaks, drawLane],
      setCursor: [onCursor],
    },
  };

  var chart = new uPlot(opts, [times].concat(columns), root);
  var legend = chart.root.querySelector(".u-legend");
  chart.root.insertBefore(lane, legend);
  drawLane(chart);

  chart.over.addEventListener("mouseleave", function () { tooltip.hidden = true; });

  function zoomTo(min, max) {
    var span = max - min;
    if (span < 10) { var mid = (min + max) / 2; min = mid - 5; max = mid + 5; }
    chart.setScale("x", { min: Math.max(min, firstT - 60), max: Math.min(max, lastT + 60) });
  }

  function resetZoom() {
    var r = xRange(chart, firstT, lastT);
    chart.setScale("x", { min: r[0], max: r[1] });
  }

  chart.over.addEventListener("wheel", function (event) {
    event.preventDefault();
    var rect = chart.over.getBoundingClientRect();
    var at = chart.posToVal(event.clientX - rect.left, "x");
    var factor = event.deltaY < 0 ? 0.75 : 1 / 0.75;
    var min = chart.scales.x.min, max = chart.scales.x.max;
    if (factor > 1 && min <= firstT && max >= lastT) return;
    zoomTo(at - (at - min) * factor, at + (max - at) * factor);
  }, { passive: false });

  lane.addEventListener("mousemove", function (event) {
    var b = barAt(event);
    lane.style.cursor = b ? "zoom-in" : "default";
    if (!b) { tooltip.hidden = true; return; }
    var lines = [["task", b.task, "task"], ["start", stamp(b.start)]];
    if (b.reason === "unfinished") {
      lines.push(["end", "never: the log or the process ended first (drawn to " +
        stamp(b.end) + ", the last line before that)", "none"]);
    } else {
      lines.push(["end", stamp(b.end) + (ENDED_BY[b.reason] || "")],
        ["ran", duration(b.end - b.start)]);
    }
    if (b.runs > 1) lines.push(["", b.runs + " runs drawn as one (too many to draw apart)", "none"]);
    showTooltip(lines, event.clientX, event.clientY);
  });
  lane.addEventListener("mouseleave", function () { tooltip.hidden = true; });
  lane.addEventListener("click", function (event) {
    var b = barAt(event);
    if (!b) return;
    var pad = Math.max((b.end - b.start) * 0.2, 30);
    zoomTo(b.start - pad, b.end + pad);
  });

  var reset = document.getElementById("reset-zoom");
  if (reset) reset.addEventListener("click", resetZoom);

  // Every timestamp in the tables becomes a link that zooms the chart around that moment.
  var stampPattern = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/;
  Array.prototype.forEach.call(document.querySelectorAll("table.analysis td"), function (cell) {
    var text = cell.textContent;
    if (!stampPattern.test(text)) return;
    var t = Date.UTC(+text.slice(0, 4), +text.slice(5, 7) - 1, +text.slice(8, 10),
      +text.slice(11, 13), +text.slice(14, 16), +text.slice(17, 19)) / 1e3;
    if (t < firstT || t > lastT) return;
    var link = document.createElement("a");
    link.href = "#chart";
    link.className = "zoom-link";
    link.title = "show this moment on the chart";
    link.textContent = text;
    link.addEventListener("click", function (event) {
      event.preventDefault();
      var half = Math.max(Math.min((lastT - firstT) / 40, 1800), 60);
      zoomTo(t - half, t + half);
      root.scrollIntoView({ behavior: "smooth", block: "center" });
    });
    cell.textContent = "";
    cell.appendChild(link);
  });

  window.addEventListener("resize", function () {
    chart.setSize({ width: Math.max(root.clientWidth, 320), height: HEIGHT_PX });
  });

  // For tests and the curious: the chart, its data and what was drawn where (CSS pixels).
  window.memoryReport = {
    chart: chart, data: data, zoomTo: zoomTo, resetZoom: resetZoom,
    laneBars: function () {
      return laneBars.map(function (bar) {
        return { task: bar[3].task, left: bar[0], right: bar[1], row: bar[2] };
      });
    },
    thresholdLabels: function () { return thresholdLabels.slice(); },
  };
})();
