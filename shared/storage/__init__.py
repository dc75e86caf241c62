"""Storage: the one way into Table and Queue Storage.

Holds the clients, the ``Store`` chokepoint, typed rows (``entities``) and the tables Keysteward
keeps (``tables/``), key encoding, the key ring, and the two helpers every read-modify-write uses:
``retry`` (ETag conflicts) and ``lease``. May import ``foundation`` and ``config``.
"""
