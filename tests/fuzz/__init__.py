"""Property-based tests over every reader of files that other people write (see ``readers``)."""
