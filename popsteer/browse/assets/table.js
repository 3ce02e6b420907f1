// The neuron table: sort by a header click, filter by text, direction and label (plain JS, no framework).
// A cell's sort key is its data-v attribute (numbers for data-type="num" columns), else its text.
(function () {
  function key(row, col, numeric) {
    const td = row.cells[col];
    const v = td.dataset.v !== undefined ? td.dataset.v : td.textContent;
    if (!numeric) return v.toLowerCase();
    const x = parseFloat(v);
    return isNaN(x) ? -Infinity : x;
  }
  function sortBy(table, th) {
    const col = th.cellIndex, numeric = th.dataset.type === "num";
    const down = th.getAttribute("aria-sort") !== "descending";  // first click: largest first
    table.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", down ? "descending" : "ascending");
    const body = table.tBodies[0], rows = Array.from(body.rows);
    rows.sort((a, b) => { const x = key(a, col, numeric), y = key(b, col, numeric);
                          return (x < y ? -1 : x > y ? 1 : 0) * (down ? -1 : 1); });
    rows.forEach(r => body.appendChild(r));
  }
  function filter(table) {
    const q = (document.getElementById("filter-text") || {}).value || "";
    const dir = (document.getElementById("filter-dir") || {}).value || "";
    const onlyLabelled = (document.getElementById("filter-labelled") || {}).checked;
    let shown = 0;
    for (const row of table.tBodies[0].rows) {
      const ok = (!q || row.textContent.toLowerCase().includes(q.toLowerCase())) &&
                 (!dir || row.dataset.dir === dir) && (!onlyLabelled || row.dataset.labelled === "1");
      row.hidden = !ok;
      shown += ok ? 1 : 0;
    }
    const count = document.getElementById("shown-count");
    if (count) count.textContent = shown;
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable").forEach(table => {
      table.querySelectorAll("th[data-type]").forEach(th => {
        th.addEventListener("click", () => sortBy(table, th));
        th.addEventListener("keydown", e => { if (e.key === "Enter") sortBy(table, th); });
      });
      ["filter-text", "filter-dir", "filter-labelled"].forEach(id => {
        const el = document.getElementById(id);
        if (el) ["input", "change"].forEach(ev => el.addEventListener(ev, () => filter(table)));
      });
      filter(table);
    });
  });
})();
