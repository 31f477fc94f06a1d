"""The `job-doctor` command line."""
