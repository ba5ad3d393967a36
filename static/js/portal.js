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
