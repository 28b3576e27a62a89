"""HTTP: collection routes, JSON API and (later) the dashboard, over one Workspace."""

from seamline.web.server import create_app, serve

__all__ = ["create_app", "serve"]
