// Draws every <div class="plot" data-figure="{data, layout}"> with the vendored plotly.min.js.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".plot[data-figure]").forEach(el => {
    const fig = JSON.parse(el.dataset.figure);
    Plotly.newPlot(el, fig.data, fig.layout, {displaylogo: false, responsive: true});
  });
});
