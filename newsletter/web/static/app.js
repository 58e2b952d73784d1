// Light progressive enhancement: every form works without it.
// Keep the scroll position across the post-redirect-get that follows each edit, so an editor working down
// the list of stories does not jump back to the top each time.
(function () {
  const key = "scroll:" + location.pathname;
  const saved = sessionStorage.getItem(key);
  if (saved !== null && !location.hash) {
    window.scrollTo(0, parseInt(saved, 10));
  }
  sessionStorage.removeItem(key);
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.method.toLowerCase() === "post" && form.action.indexOf(location.pathname) !== -1) {
      sessionStorage.setItem(key, String(window.scrollY));
    }
    // A second click while the first is on its way would post the same change twice.
    const button = form.querySelector("button[type=submit]");
    if (button) { setTimeout(function () { button.disabled = true; }, 0); }
  });
})();
