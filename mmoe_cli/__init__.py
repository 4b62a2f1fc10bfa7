"""The `mmoe` command line: parses flags and wires the stages together. Nothing imports it."""
