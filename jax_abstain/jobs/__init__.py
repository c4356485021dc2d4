"""Jobs: the only code that reads a config and writes a workdir."""
