// Live preview of the campaign form: re-render the preview panel as the marketer types, and
// do test sends in place. No framework: the server renders the HTML fragment.
(function () {
  var form = document.getElementById("campaign");
  var panel = document.getElementById("preview");
  if (!form || !panel) return;
  var timer = null, seq = 0;
  function post(url, extra) {
    var body = new FormData(form);
    if (extra) Object.keys(extra).forEach(function (k) { body.set(k, extra[k]); });
    var mine = ++seq;
    return fetch(url, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) { if (mine === seq) panel.innerHTML = html; });
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(function () { post("/campaigns/preview"); }, 300);
  }
  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  // Whatever was typed before this script ran (a fast typist, autofill, a slow page) still
  // gets its preview: render once for the form as it is now.
  if (form.querySelector("textarea") && form.querySelector("textarea").value) schedule();
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("button.test-send") : null;
    if (!b) return;
    ev.preventDefault();
    b.disabled = true;
    post("/campaigns/test-send", { variant: b.value });
  });
})();
