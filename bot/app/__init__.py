"""The composition root: builds every service from settings, the aiohttp application, health, probes and the server."""
