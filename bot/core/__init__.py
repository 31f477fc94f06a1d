"""The ground floor: core types, settings, the store, task tracking, metrics, redaction, logging, packaged data."""
