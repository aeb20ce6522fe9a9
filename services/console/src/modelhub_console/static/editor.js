// The model editor: a preview of the chosen avatar before it is uploaded. No dependencies.
(function () {
  "use strict";
  var input = document.getElementById("avatar");
  var preview = document.getElementById("avatar-preview");
  if (!input || !preview) return;
  input.addEventListener("change", function () {
    var file = input.files && input.files[0];
    if (!file) { preview.hidden = true; return; }
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  });
})();
