"""Compatibility routes: Feast's feature server and the ``/feast`` platform API."""
