"""The commented schedule file `newsletter init` writes: a user's first contact with the settings."""

TEMPLATE = '''# {name}: one newsletter, one file. Edit, then: newsletter collect {slug} && newsletter build {slug}
name = "{name}"
# slug = "{slug}"                         # defaults to this file's name
from_address = "{name} <digest@example.com>"   # the sender subscribers see
# reply_to = "editor@example.com"
description = "A weekly digest of the best stories."
language = "en"                            # lang of the email; set direction = "rtl" for Arabic, Hebrew...
postal_address = "Your organisation, 1 Example Street, City"   # shown in the footer (anti-spam laws ask for it)

# The feeds to read: RSS or Atom URLs, or local files.
[[sources]]
name = "Hacker News"
url = "https://hnrss.org/frontpage"

[[sources]]
name = "Ars Technica"
url = "https://feeds.arstechnica.com/arstechnica/index"

[digest]
window_days = 7            # stories from the last N days (and never older than the last sent issue)
max_items = 12
max_per_source = 4
subject = "{{name}} #{{number}}: {{top_title}}"
# intro = "A note from the editor, in Markdown."
summary_sentences = 3
summary_words = 80
fetch_articles_under_words = 150   # read the article page when the feed gives less text than this
quotes = 3                 # key quotes per story, verbatim from the article
related = 3                # "you might also read" links per story, at most
related_total = 10         # and per issue: the closest ones are kept
related_method = "bm25"    # or "semantic": sentence embeddings, pip install 'newsletter[semantic]' (~1.2 GB)

[schedule]
collect = "every 1 hour"
send = "weekly on monday at 08:00"  # or "daily at 07:00", "weekdays at 07:30", "monthly on day 1 at 09:00", "0 8 * * 1"
timezone = "UTC"           # an IANA name such as Europe/Paris
approval = "auto"          # "auto", "required", or "auto after 12 hours"
# build_ahead = "24 hours" # with approval = "required": build the draft this long before the send
when_empty = "skip"        # or "send"

[theme]
accent = "#c2410c"
# logo_url = "https://example.com/logo.png"
# logo_alt = "{name}"

# Optional: what happens after the send (README "Tracking and reports"). Off unless turned on here.
# [tracking]
# clicks = true   # story links go through a signed redirect on `newsletter serve`, counted per story
# opens = true    # a 1x1 image per reader; machine opens (Apple, prefetch, scanners) are counted apart

# Optional: summaries by a model behind any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, hosted).
# [summarizer]
# endpoint = "http://localhost:11434/v1"
# model = "llama3.1"
# api_key_env = "OPENAI_API_KEY"   # the name of the environment variable holding the key, never the key
'''
