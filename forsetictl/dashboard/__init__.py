"""``forsetictl dashboard``: a web page on the cluster, served by a client like any other
(``server.py`` the HTTP and the event streams, ``state.py`` what the page shows,
``static/`` the page itself: HTML, CSS and vanilla JavaScript, no build step)."""

from .server import ListenError, serve

__all__ = ["ListenError", "serve"]
