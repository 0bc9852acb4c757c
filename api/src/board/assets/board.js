// The deploy board's only script: confirmations, the live stage page, the environment filter.
// Every page works without it; it never writes anything but the forms people submit.
"use strict";

// A form with data-confirm asks first; the server shows a confirmation page to browsers
// without this script (the hidden "confirmed" field tells it the question was asked).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (!question) return;
  if (!window.confirm(question)) { event.preventDefault(); return; }
  const flag = form.querySelector("input[name=confirmed]");
  if (flag) flag.value = "1";
});

// Filters the rows of a table as one types in its search box.
document.addEventListener("input", (event) => {
  const box = event.target;
  const table = box.getAttribute && document.getElementById(box.getAttribute("data-filter") || "");
  if (!table) return;
  const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of table.tBodies[0].rows) {
    const text = row.textContent.toLowerCase();
    row.hidden = !words.every((w) => text.includes(w));
  }
});

// The live stage page: cells change colour as hosts report, the deploy and the summary are
// redrawn by the server, and a gap in the stream reloads the grid.
function live(section) {
  const grid = document.getElementById("grid");
  const status = document.getElementById("live-status");
  let cells = new Map();
  const index = () => {
    cells = new Map();
    for (const cell of grid.querySelectorAll("[data-h]")) cells.set(cell.getAttribute("data-h"), cell);
  };
  index();
  const say = (state, text) => { if (status) { status.setAttribute("data-state", state); status.textContent = text; } };
  const source = new EventSource(section.getAttribute("data-live"));
  source.onopen = () => say("live", "Live");
  source.onerror = () => say("reconnecting", "Reconnecting…");
  // While the grid is being fetched, changes are kept and applied to the new grid (it may
  // have been drawn before them).
  let reloading = null;
  let held = null;
  const apply = (changes) => {
    let unknown = false;
    for (const [host, cls, label] of changes) {
      const cell = cells.get(host);
      if (!cell) { unknown = true; continue; }
      cell.className = "cell " + cls;
      cell.title = label;
    }
    return unknown;
  };
  const reload = () => {
    if (reloading) return;
    reloading = setTimeout(async () => {
      held = [];
      try {
        const response = await fetch(grid.getAttribute("data-src"), { credentials: "same-origin" });
        if (response.ok) { grid.innerHTML = await response.text(); index(); }
      } catch (_) { /* the next event tries again */ }
      const changes = held;
      held = null;
      reloading = null;
      apply(changes);
    }, 300);
  };
  source.addEventListener("cells", (e) => {
    const changes = JSON.parse(e.data);
    if (held) { held.push(...changes); return; }
    // A host new to the stage: its cell is drawn by the server (a page holds 1000 cells).
    if (apply(changes) && cells.size < 1000) reload();
  });
  source.addEventListener("fragment", (e) => {
    const { id, html } = JSON.parse(e.data);
    const target = document.getElementById(id);
    if (target) target.innerHTML = html;
  });
  source.addEventListener("resync", reload);
}

document.addEventListener("DOMContentLoaded", () => {
  const section = document.querySelector("[data-live]");
  if (section && window.EventSource) live(section);
});
