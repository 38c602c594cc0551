// Bastion console: small hand-written script, no build step, no inline script (CSP script-src 'self').
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";

  // The sign-in page: the one-time code arrives in the URL fragment (never sent to a server);
  // move it into the form, drop it from the address bar and history, and submit.
  function signIn() {
    const form = document.getElementById("login-form");
    if (!form) return;
    const match = /(?:^#|&)code=([A-Za-z0-9_-]+)/.exec(window.location.hash);
    if (!match) return;
    history.replaceState(null, "", window.location.pathname + window.location.search);
    form.elements.namedItem("code").value = match[1];
    form.submit();
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A stacked bar per minute (allowed below, denied on top), drawn by hand in SVG.
  function drawChart(svg, stats) {
    const series = stats.series || [];
    const width = 600, height = 160, left = 34, bottom = 18, top = 6;
    const plotW = width - left - 4, plotH = height - top - bottom;
    let max = 1;
    for (const [ok, bad] of series) max = Math.max(max, ok + bad);
    svg.replaceChildren();
    svg.appendChild(el("line", { x1: left, y1: top + plotH, x2: width - 4, y2: top + plotH, class: "axis" }));
    svg.appendChild(el("text", { x: 2, y: top + 8 }, String(max)));
    svg.appendChild(el("text", { x: 2, y: top + plotH }, "0"));
    const slot = plotW / Math.max(series.length, 60);
    series.forEach(([ok, bad], i) => {
      const x = left + i * slot + 1;
      const w = Math.max(slot - 2, 1);
      const okH = (ok / max) * plotH, badH = (bad / max) * plotH;
      if (ok) svg.appendChild(el("rect", { x: x, y: top + plotH - okH, width: w, height: okH, class: "ok" }));
      if (bad) svg.appendChild(el("rect", { x: x, y: top + plotH - okH - badH, width: w, height: badH, class: "bad" }));
    });
    svg.appendChild(el("text", { x: left, y: height - 4 }, "-60 min"));
    svg.appendChild(el("text", { x: width - 30, y: height - 4 }, "now"));
  }

  function setStat(root, name, value) {
    const node = root.querySelector('[data-stat="' + name + '"]');
    if (!node) return;
    const text = String(value);
    if (node.textContent !== text) {
      node.textContent = text;
      node.classList.remove("changed");
      void node.offsetWidth; // restart the highlight
      node.classList.add("changed");
    }
  }

  function drawReasons(list, reasons) {
    list.replaceChildren();
    if (!reasons.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "no denials";
      list.appendChild(li);
      return;
    }
    for (const item of reasons) {
      const li = document.createElement("li");
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = item.reason; // textContent: never markup
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = String(item.count);
      li.append(reason, count);
      list.appendChild(li);
    }
  }

  function checkpointAge(stats) {
    if (!stats.checkpoint) return "signed tree size";
    const age = Math.max(0, Math.round(stats.now - stats.checkpoint.at));
    return "signed " + (age < 120 ? age + " s" : Math.round(age / 60) + " min") + " ago";
  }

  function overview() {
    const root = document.getElementById("overview");
    if (!root) return;
    const chart = document.getElementById("chart");
    const reasons = document.getElementById("reasons");
    const live = document.getElementById("live");
    const show = (stats) => {
      for (const name of ["rps", "allowed", "denied", "findings", "incidents", "locks", "audit_size"]) {
        setStat(root, name, stats[name]);
      }
      setStat(root, "checkpoint", stats.checkpoint ? stats.checkpoint.size : "none");
      setStat(root, "checkpoint_at", checkpointAge(stats));
      drawChart(chart, stats);
      drawReasons(reasons, stats.reasons || []);
    };
    const initial = document.getElementById("initial-stats");
    if (initial) show(JSON.parse(initial.textContent));
    if (!window.EventSource) return;
    const source = new EventSource(root.dataset.stream);
    source.addEventListener("open", () => { live.dataset.state = "live"; live.textContent = "live"; });
    source.addEventListener("stats", (event) => show(JSON.parse(event.data)));
    source.addEventListener("end", () => {
      source.close();
      live.dataset.state = "ended";
      live.textContent = "session ended";
      window.location.assign("/console/login?notice=expired");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        live.dataset.state = "ended";
        live.textContent = "disconnected";
      } else {
        live.dataset.state = "connecting";
        live.textContent = "reconnecting…";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    signIn();
    overview();
  });
  // a link pasted into a tab already on the sign-in page changes only the fragment
  window.addEventListener("hashchange", signIn);
})();

// ---- Access page: grant expiry countdowns -------------------------------------------------------
// Each <span class="countdown" data-seconds="N"> holds the seconds left when the server rendered
// the page; count down from the moment the page loaded (textContent only, never markup).
(function () {
  function remaining(seconds) {
    const left = Math.max(0, Math.floor(seconds));
    if (left === 0) return "expired";
    const days = Math.floor(left / 86400), hours = Math.floor((left % 86400) / 3600);
    const minutes = Math.floor((left % 3600) / 60), secs = left % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (days) return days + " d " + hours + " h";
    if (hours) return hours + " h " + pad(minutes) + " min";
    return minutes + " min " + pad(secs) + " s";
  }

  function countdowns() {
    if (document.body.dataset.page !== "access") return;
    const nodes = Array.from(document.querySelectorAll(".countdown[data-seconds]"));
    if (!nodes.length) return;
    const loaded = performance.now();
    const tick = () => {
      const elapsed = (performance.now() - loaded) / 1000;
      for (const node of nodes) {
        const left = Number(node.dataset.seconds) - elapsed;
        const text = remaining(left);
        if (node.textContent !== text) node.textContent = text;
        node.classList.toggle("soon", left > 0 && left < 600);
        node.classList.toggle("expired", left <= 0);
      }
    };
    tick();
    window.setInterval(tick, 1000);
  }

  document.addEventListener("DOMContentLoaded", countdowns);
})();
