"""Configuration: every setting (read once from the environment), the provider catalogue
(``providers.yaml``, providers as data) and the apps file. May import ``foundation`` only."""
