// Small progressive enhancements; the pages work without them. Loaded as a file (the CSP forbids inline scripts).
"use strict";

// <input data-filter-select="id-of-select">: typing hides the select's options that do not contain the text.
function bindSelectFilters(root) {
  root.querySelectorAll("input[data-filter-select]").forEach(function (input) {
    if (input.dataset.bound) return;
    input.dataset.bound = "1";
    input.addEventListener("input", function () {
      var select = document.getElementById(input.dataset.filterSelect);
      if (!select) return;
      var needle = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(select.options, function (option) {
        option.hidden = needle !== "" && option.textContent.toLowerCase().indexOf(needle) === -1;
      });
    });
  });
}

// <input type="checkbox" data-check-all="name">: ticks or clears every checkbox named `name`.
function bindCheckAll(root) {
  root.querySelectorAll("input[data-check-all]").forEach(function (box) {
    if (box.dataset.bound) return;
    box.dataset.bound = "1";
    box.addEventListener("change", function () {
      document.querySelectorAll('input[type=checkbox][name="' + box.dataset.checkAll + '"]').forEach(function (other) {
        other.checked = box.checked;
      });
    });
  });
}

// <form data-confirm="text">: asks before submitting (typed confirmations are enforced on the server).
function bindConfirms(root) {
  root.querySelectorAll("form[data-confirm]").forEach(function (form) {
    if (form.dataset.bound) return;
    form.dataset.bound = "1";
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

function bindAll(root) {
  bindSelectFilters(root);
  bindCheckAll(root);
  bindConfirms(root);
}

document.addEventListener("DOMContentLoaded", function () { bindAll(document); });
document.addEventListener("htmx:afterSwap", function (event) { bindAll(event.target); });

// When a job on the page ends, every region the job changed is read again, once: portal.views.job_progress fires
// `jobFinished` on its last poll, and each region marked <... id="x" data-refresh-on-job-end> is replaced by the
// element with the same id in a fresh copy of this page (one GET, whatever the number of regions). Regions that
// fetch themselves (hx-trigger="jobFinished from:body") need no mark. Without JavaScript nothing polls; a reload
// shows the same.
// A job that ends while the page is being read again (two jobs on one page) gets a read of its own afterwards.
var jobEndRefresh = null;
var jobEndAgain = false;

function refreshJobRegions() {
  var regions = document.querySelectorAll("[data-refresh-on-job-end][id]");
  if (!regions.length) return;
  if (jobEndRefresh) { jobEndAgain = true; return; }
  jobEndRefresh = fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
    .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
    .then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      regions.forEach(function (region) {
        if (!region.isConnected || region.parentElement.closest("[data-refresh-on-job-end]")) return;
        var replacement = fresh.getElementById(region.id);
        if (!replacement) return;
        if (region.tagName === "DETAILS" && region.open) replacement.setAttribute("open", "");
        var node = document.importNode(replacement, true);
        region.replaceWith(node);
        if (window.htmx) window.htmx.process(node);
        bindAll(node);
      });
    })
    .catch(function (reason) { console.warn("Could not refresh the page after the job ended:", reason); })
    .finally(function () {
      jobEndRefresh = null;
      if (jobEndAgain) { jobEndAgain = false; refreshJobRegions(); }
    });
}

document.addEventListener("jobFinished", refreshJobRegions);
