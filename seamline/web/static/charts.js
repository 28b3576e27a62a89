// Draw every figure whose JSON sits in a <script type="application/json" data-chart="ID">.
// The page stays script-free inline, so a strict Content-Security-Policy holds.
(function () {
  "use strict";
  var config = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  document.querySelectorAll("script[data-chart]").forEach(function (node) {
    var target = document.getElementById(node.getAttribute("data-chart"));
    if (!target || typeof Plotly === "undefined") { return; }
    var figure = JSON.parse(node.textContent);
    Plotly.newPlot(target, figure.data, figure.layout, config).then(function () {
      target.setAttribute("data-rendered", "true");
    });
  });
})();
