"""newsletter: turn the web's feeds into a weekly email digest, and deliver it reliably."""

__version__ = "0.1.0"
