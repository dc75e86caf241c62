"""Access: who may call, and on what. Scoped API keys and the resource globs they grant. May import
``foundation``, ``config``, ``storage`` and ``trail``."""
