"""The `detkit` command line: modules here parse arguments and call library code."""
