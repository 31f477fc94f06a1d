"""Evidence pipeline: parse, collect, condense, match signatures, build the report."""
