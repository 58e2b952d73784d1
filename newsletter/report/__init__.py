"""What happened after a send: the events recorded (clicks through /r/, opens of the pixel, the provider's
delivered/bounce/spamreport/... events), the figures an editor reads per issue and across issues, the guard that
holds a newsletter's scheduled sends when complaints or bounces pass their line, and retention of the raw events.

Below the web and the CLI (which show the figures) and the scheduler (which asks the guard); above delivery and
the store (the ledger says who was sent what)."""
