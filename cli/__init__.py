"""The `rdistill` command line (Typer). Thin: parses, builds configs, calls the library, prints."""
