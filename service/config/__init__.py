"""Configuration: the typed settings read once at start-up, their problems in an operator's words, setting files."""
