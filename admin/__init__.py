"""./keysteward: the administrator's command line, talking to storage directly."""
