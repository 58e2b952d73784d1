"""Reading one story: its summary, key quotes, related reading, and which items tell the same story.

Works from the article text (fetched through `newsletter.collect`) and the archive; knows nothing of issues.
"""
