// The subscribe form's hidden time zone field: the browser's own IANA zone, so "07:00" can mean the reader's
// 07:00 (they can change it on the manage page). A file, not an inline script: the pages' CSP is 'self'.
document.querySelectorAll("input[name=timezone]").forEach(function (field) {
  try {
    field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) { /* an old browser: the newsletter's own zone */ }
});
