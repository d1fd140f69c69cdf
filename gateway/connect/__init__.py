"""The browser side of the OAuth connect flow: pages, redirects, session cookie and CSRF.

The gateway holds no client secret and no token key; mcp_server runs the flow itself
(:mod:`oauth.connect`) behind internal endpoints (:mod:`mcp_server.connect_routes`).
"""

from gateway.connect.routes import ROUTES

__all__ = ["ROUTES"]
