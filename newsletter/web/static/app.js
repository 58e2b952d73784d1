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
    // (A story's form has two buttons, "Save summary" and "Keep these quotes": both save the same form.)
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      setTimeout(function () { button.disabled = true; }, 0);
    });
  });
})();

// Typed text is never lost to another button. Every button posts its own small form and the page reloads, so
// a summary or intro typed but not saved would vanish when the editor clicks "Keep these quotes" or "Drop".
// Before any post, the unsaved text of the other fields is kept in sessionStorage and put back after the
// reload, marked "not saved yet" (only if the saved text is still what it was typed over: a change made
// meanwhile by someone else wins). Leaving the page with unsaved text asks first.
(function () {
  const key = "drafts:" + location.pathname;
  let submitting = false;
  function fieldKey(t) { return (t.form ? t.form.getAttribute("action") : "") + "#" + t.name; }
  function unsaved() {
    return Array.from(document.querySelectorAll("textarea")).filter(function (t) {
      return !t.disabled && t.value !== t.defaultValue;
    });
  }
  function mark(t) {
    t.classList.add("unsaved");
    if (t.dataset.noteShown) { return; }
    t.dataset.noteShown = "1";
    const note = document.createElement("span");
    note.className = "unsaved-note";
    note.setAttribute("role", "status");
    note.textContent = "Not saved yet: your text is kept here until you save it.";
    (t.closest("label") || t).insertAdjacentElement("afterend", note);
  }
  let drafts = {};
  try { drafts = JSON.parse(sessionStorage.getItem(key) || "{}"); } catch (e) { drafts = {}; }
  sessionStorage.removeItem(key);
  document.querySelectorAll("textarea").forEach(function (t) {
    const d = drafts[fieldKey(t)];
    if (d && !t.disabled && d.base === t.defaultValue && d.value !== t.value) { t.value = d.value; mark(t); }
  });
  document.addEventListener("input", function (event) {
    const t = event.target;
    if (t.tagName === "TEXTAREA" && t.value !== t.defaultValue) { mark(t); }
  });
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const keep = {};
    unsaved().forEach(function (t) {
      if (t.form !== form) { keep[fieldKey(t)] = { value: t.value, base: t.defaultValue }; }
    });
    sessionStorage.setItem(key, JSON.stringify(keep));
    submitting = true;
  });
  window.addEventListener("beforeunload", function (event) {
    if (!submitting && unsaved().length) { event.preventDefault(); event.returnValue = ""; }
  });
})();

// Keyboard: after the reload that follows a button, focus comes back to that button (or, when it is gone or
// disabled, to the first usable control of its story) instead of falling to the top of the page.
(function () {
  const key = "focus:" + location.pathname;
  const saved = sessionStorage.getItem(key);
  sessionStorage.removeItem(key);
  if (saved) {
    try {
      const want = JSON.parse(saved);
      const forms = Array.from(document.querySelectorAll("form")).filter(function (f) {
        return f.getAttribute("action") === want.action;
      });
      let target = null;
      forms.forEach(function (f) {
        const b = f.querySelectorAll("button[type=submit]")[want.button || 0];
        if (!target && b && !b.disabled && (want.index === undefined || forms.indexOf(f) === want.index)) { target = b; }
      });
      if (!target && want.story) {
        const story = document.getElementById(want.story);
        target = story ? story.querySelector("button:not([disabled]), textarea:not([disabled]), a") : null;
      }
      // After the load and the jump to the story's #fragment, which would otherwise leave focus on <body>.
      if (target) {
        // "Keep these quotes" sits in a folded <details>: unfold it, or the button could not take focus.
        const fold = target.closest("details");
        if (fold) { fold.open = true; }
        window.addEventListener("load", function () {
          setTimeout(function () { target.focus({ preventScroll: true }); }, 0);
        });
      }
    } catch (e) { /* a stale entry: nothing to restore */ }
  }
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const action = form.getAttribute("action");
    const same = Array.from(document.querySelectorAll("form")).filter(function (f) {
      return f.getAttribute("action") === action;
    });
    const story = form.closest("[data-story]");
    const button = Array.from(form.querySelectorAll("button[type=submit]")).indexOf(event.submitter);
    sessionStorage.setItem(key, JSON.stringify({ action: action, index: same.indexOf(form), button: Math.max(button, 0),
                                                 story: story ? story.id : null }));
  });
})();
