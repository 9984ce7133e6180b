"""Security: API keys, roles and permissions, the audit log, and the REST API's file boundary.

The modules are imported where they are used (the REST server, the CLI, the facade's
:meth:`~quiver.store.FeatureStore.as_principal`), so ``import quiver`` stays light:

- :mod:`quiver.security.principal`: who is acting (a :class:`Principal`, kept per request or
  per local call in a context variable);
- :mod:`quiver.security.keys`: API keys (``qk_<id>_<secret>``), stored as a SHA-256 hash;
- :mod:`quiver.security.permissions`: built-in roles, permission policies and the one check;
- :mod:`quiver.security.audit`: the append-only audit log;
- :mod:`quiver.security.service`: the three together for one store, with their caches;
- :mod:`quiver.security.scoped`: a store that checks every call for one principal;
- :mod:`quiver.security.paths`: the folders a REST caller may read and the one it may write to.
"""
