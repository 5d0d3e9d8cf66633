"""The ``faceverify`` subcommands that are not part of a library package: each module parses its
arguments and calls the library (the libraries never import these)."""
