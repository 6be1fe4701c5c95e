"""The web-browsing domain: an offline company website generated from a seed, read with a browser."""
