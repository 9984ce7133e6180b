"""Quiver's REST API (FastAPI): ``create_app(store)`` builds the app, ``quiver serve`` runs it."""

from quiver.server.app import create_app

__all__ = ["create_app"]
