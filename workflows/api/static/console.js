// Ferryman console: follow a run's server-sent events and redraw its timeline as it moves.
// The page is complete without this script; it only keeps the run page live.
(function () {
  "use strict";
  var root = document.getElementById("run");
  if (!root || root.dataset.terminal === "1" || !window.EventSource) {
    return;
  }
  var runId = root.dataset.run;
  var shown = root.dataset.status;
  var statusBadge = document.getElementById("run-status");
  var timeline = document.getElementById("timeline");
  var source = new EventSource("/api/v1/runs/" + encodeURIComponent(runId) + "/follow");
  var drawing = false;

  function redraw() {
    if (drawing) {
      return;
    }
    drawing = true;
    fetch("/runs/" + encodeURIComponent(runId) + "/timeline", { credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (fragment) {
        if (fragment !== null) {
          timeline.innerHTML = fragment;
        }
      })
      .finally(function () { drawing = false; });
  }

  source.addEventListener("run", function (event) {
    var data = JSON.parse(event.data);
    var status = data.run.status;
    statusBadge.textContent = status;
    statusBadge.className = "badge " + status;
    redraw();
    // a gate opened or closed: the page's forms change, so load it again
    if ((status === "waiting") !== (shown === "waiting")) {
      source.close();
      window.location.reload();
    }
    shown = status;
  });
  source.addEventListener("end", function () {
    source.close();
    window.location.reload();
  });
})();
